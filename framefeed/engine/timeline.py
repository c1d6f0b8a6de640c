"""How each seek mode maps indices and times to targets and keyframes.

`ExactTimeline` reads everything off the frame index. `ApproximateTimeline`
knows only the header: an index maps to the middle of its frame's interval on
the nominal frame grid, and the frame displayed at that time is found by
decoding (so the answer is the true frame at that time, never a neighbour).

Both are plain values once built (numpy arrays, numbers): neither holds the
demuxer, so a timeline and the plans it makes can cross a process boundary.
"""

from __future__ import annotations

import copy
import math
from fractions import Fraction
from typing import Any

import numpy as np

from framefeed._warnings import warn_user
from framefeed.engine.demux.frame_index import FrameIndex
from framefeed.engine.demux.metadata import VideoStreamMetadata
from framefeed.engine.plan import StreamFacts, Target, exact_targets, time_targets


class ExactTimeline:
    """Timeline of a fully indexed stream."""

    exact = True

    def __init__(self, index: FrameIndex, fps_hint: float = 0.0) -> None:
        self.index = index
        self.facts = StreamFacts(index.time_base, fps_hint, None)
        self._pts = index.pts.tolist()
        self._pts_seconds = index.pts_seconds.tolist()
        self._durations = index.duration_seconds.tolist()
        # Display position of the keyframe each frame decodes from.
        first_frame_at_seek_point = np.searchsorted(index.pts, index.seek_points, side="left")
        where = index.seek_point_of_frame
        self._keyframe_position = np.where(where >= 0, first_frame_at_seek_point[np.maximum(where, 0)], -1)

    def __len__(self) -> int:
        return len(self.index)

    def targets_for_indices(self, indices: list[int]) -> list[Target]:
        return exact_targets(indices, self._pts, self._pts_seconds, self._durations)

    def targets_for_times(self, seconds: list[float]) -> list[Target]:
        """Frames displayed at the given times (already range-checked)."""
        positions = np.searchsorted(self.index.pts_seconds, np.asarray(seconds, dtype=np.float64), side="right") - 1
        return exact_targets(np.maximum(positions, 0).tolist(), self._pts, self._pts_seconds, self._durations)

    def position(self, seconds: float) -> float:
        return float(self.index.index_played_at(seconds))

    def keyframe_position(self, target: Target) -> float:
        return float(self._keyframe_position[target.frame_index])

    def seek_pts(self, target: Target) -> int:
        return self.index.seek_pts(target.frame_index)

    def frame_times(self, frame_index: int) -> tuple[float, float]:
        return self._pts_seconds[frame_index], float(self.index.duration_seconds[frame_index])


# Above this, a header frame rate equal to the time base's tick is not believed.
_PLAUSIBLE_MAX_FPS = 240


class ApproximateTimeline:
    """Timeline from the header alone.

    Index `i` maps to the middle of frame i's interval on the nominal grid,
    `begin + (i + 0.5) / fps`. On a constant-frame-rate stream that lands
    inside frame i's display interval, so index access is exact. When the
    header's average and base rates differ (variable frame rate), the average
    rate is used and a warning says indices are estimates.

    Args:
        metadata: the header metadata.
        time_base: seconds per pts unit.
        base_rate, average_rate: the stream's rates as FFmpeg reports them (None: unknown).
        keyframe_timestamps: sorted timestamps of the container index's keyframe
            entries (MP4 sample tables, Matroska cues; empty when none).
        start_pts: the stream's start time in pts units (None: unknown; the
            header's begin seconds are used).
        variable_rate: whether indices are estimates (None: decided from the rates).
    """

    exact = False

    def __init__(self, metadata: VideoStreamMetadata, time_base: Fraction, base_rate: Fraction | None,
                 average_rate: Fraction | None, keyframe_timestamps: np.ndarray,
                 start_pts: int | None = None, variable_rate: bool | None = None) -> None:
        self.metadata = metadata
        self.time_base = time_base
        self._base_rate, self._average_rate = base_rate, average_rate
        self._keyframe_timestamps = keyframe_timestamps
        base, average = base_rate, average_rate
        # FFmpeg reports the time base's tick as the rate when timestamps fit
        # no frame grid (Matroska's 1 ms ticks on a variable-rate stream): a
        # "1000 fps" stream is a sign the rate is unknown, not a constant.
        tick_rate = 1 / time_base if time_base else None
        ticking = bool(base and base == tick_rate and base > _PLAUSIBLE_MAX_FPS)
        self.variable_rate = bool(base and average and base != average) or ticking
        if variable_rate is not None:
            self.variable_rate = variable_rate
        rate = average if self.variable_rate else (base or average)
        # Index times are computed in exact rationals and rounded once (see index_to_seconds).
        self._rate = Fraction(rate) if rate else (Fraction(metadata.average_fps) if metadata.average_fps else None)
        self.fps = float(self._rate) if self._rate else 0.0
        self.begin = metadata.begin_stream_seconds or 0.0
        self._begin = start_pts * time_base if start_pts is not None and time_base else Fraction(self.begin)
        self.promised_end_seconds = metadata.end_stream_seconds
        self.facts = StreamFacts(time_base, metadata.average_fps or 0.0, self.promised_end_seconds)
        self._tb_num, self._tb_den = time_base.numerator, time_base.denominator
        self._warned = False

    @property
    def rate(self) -> Fraction | None:
        """The frame rate of the grid (frames per second), None when unknown."""
        return self._rate

    def with_rate(self, metadata: VideoStreamMetadata, rate: Fraction, start_pts: int,
                  constant_rate: bool) -> ApproximateTimeline:
        """This timeline on another grid: `rate` frames per second from `start_pts`,
        as `metadata` (updated to match) describes; indices are estimates
        unless `constant_rate`."""
        return ApproximateTimeline(metadata, self.time_base, rate, rate, self._keyframe_timestamps, start_pts,
                                   variable_rate=not constant_rate)

    def with_metadata(self, metadata: VideoStreamMetadata) -> ApproximateTimeline:
        """This timeline for `metadata` (the same grid, another frame count)."""
        other = copy.copy(self)
        other.metadata = metadata
        return other

    @classmethod
    def from_stream(cls, metadata: VideoStreamMetadata, stream: Any) -> ApproximateTimeline:
        """Read what the timeline needs from an open PyAV stream into plain values."""
        return cls(metadata, stream.time_base or Fraction(1, 1), stream.base_rate, stream.average_rate,
                   _keyframe_timestamps(stream.index_entries), stream.start_time)

    def __len__(self) -> int:
        return self.metadata.num_frames or 0

    def index_to_seconds(self, index: int) -> float:
        if not self._rate or self._rate <= 0:
            raise ValueError("the header gives no frame rate: index access needs seek_mode='exact'")
        return float(self._begin + (index + Fraction(1, 2)) / self._rate)

    def targets_for_indices(self, indices: list[int]) -> list[Target]:
        if self.variable_rate and not self._warned:
            self._warned = True
            warn_user(
                f"The stream's header does not give a constant frame rate (average "
                f"{float(self._average_rate or 0):.4g} fps, base {float(self._base_rate or 0):.4g} fps, "
                f"time base {self.time_base}): in seek_mode='approximate' frame indices are estimates. "
                "Use seek_mode='exact' for exact indices; time-based methods stay exact."
            )
        times = [self.index_to_seconds(i) for i in indices]
        # On a constant-rate stream index i is exact, so the stream must reach its time.
        return time_targets(times, None if self.variable_rate else indices)

    def targets_for_times(self, seconds: list[float]) -> list[Target]:
        return time_targets(seconds)

    def position(self, seconds: float) -> float:
        return (seconds - self.begin) * self.fps if self.fps else 0.0

    def keyframe_position(self, target: Target) -> float:
        # The container's own index (MP4 sample tables, Matroska cues) is read
        # at open anyway; for MP4 its times are decode times, a slight
        # underestimate that only steers the seek-or-continue choice.
        stamps = self._keyframe_timestamps
        if not len(stamps):
            return self.position(target.seconds)  # unknown: assume a seek is needed
        at = int(np.searchsorted(stamps, self.seek_pts(target), side="right")) - 1
        if at < 0:
            return -math.inf
        return self.position(int(stamps[at]) * self._tb_num / self._tb_den)

    def seek_pts(self, target: Target) -> int:
        return math.floor(target.seconds * self._tb_den / self._tb_num)


def _keyframe_timestamps(entries: Any) -> np.ndarray:
    """Sorted timestamps of the container index's keyframe entries. Hops from
    keyframe to keyframe with FFmpeg's own search (keyframes only, forward)
    rather than reading every entry: a long file has tens of thousands of
    entries but only hundreds of keyframes, and this runs at open."""
    stamps: list[int] = []
    if len(entries):
        stamp = entries[0].timestamp
        while True:
            at = entries.search_timestamp(stamp, backward=False)
            if at < 0 or at >= len(entries):
                break
            found = entries[at].timestamp
            if stamps and found <= stamps[-1]:
                break
            stamps.append(found)
            stamp = found + 1
    return np.array(stamps, dtype=np.int64)
