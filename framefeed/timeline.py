"""How each seek mode maps indices and times to targets and keyframes.

`ExactTimeline` reads everything off the frame index. `ApproximateTimeline`
knows only the header: an index maps to the middle of its frame's interval on
the nominal frame grid, and the frame displayed at that time is found by
decoding (so the answer is the true frame at that time, never a neighbour).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np

from framefeed._warnings import warn_user
from framefeed.demux.demuxer import Demuxer
from framefeed.demux.frame_index import FrameIndex
from framefeed.demux.metadata import VideoStreamMetadata
from framefeed.plan import Target, exact_targets, time_targets


class ExactTimeline:
    """Timeline of a fully indexed stream."""

    exact = True

    def __init__(self, index: FrameIndex) -> None:
        self.index = index
        self._pts = index.pts.tolist()
        self._pts_seconds = index.pts_seconds.tolist()
        # Display position of the keyframe each frame decodes from.
        first_frame_at_seek_point = np.searchsorted(index.pts, index.seek_points, side="left")
        where = index.seek_point_of_frame
        self._keyframe_position = np.where(where >= 0, first_frame_at_seek_point[np.maximum(where, 0)], -1)

    def __len__(self) -> int:
        return len(self.index)

    def targets_for_indices(self, indices: list[int]) -> list[Target]:
        return exact_targets(indices, self._pts, self._pts_seconds)

    def targets_for_times(self, seconds: list[float]) -> list[Target]:
        """Frames displayed at the given times (already range-checked)."""
        positions = np.searchsorted(self.index.pts_seconds, np.asarray(seconds, dtype=np.float64), side="right") - 1
        return exact_targets(np.maximum(positions, 0).tolist(), self._pts, self._pts_seconds)

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
    """

    exact = False

    def __init__(self, metadata: VideoStreamMetadata, demuxer: Demuxer) -> None:
        self.metadata = metadata
        self.demuxer = demuxer
        stream = demuxer.stream
        base, average = stream.base_rate, stream.average_rate
        # FFmpeg reports the time base's tick as the rate when timestamps fit
        # no frame grid (Matroska's 1 ms ticks on a variable-rate stream): a
        # "1000 fps" stream is a sign the rate is unknown, not a constant.
        tick_rate = 1 / demuxer.time_base if demuxer.time_base else None
        ticking = bool(base and base == tick_rate and base > _PLAUSIBLE_MAX_FPS)
        self.variable_rate = bool(base and average and base != average) or ticking
        rate = average if self.variable_rate else (base or average)
        # Index times are computed in exact rationals and rounded once (see index_to_seconds).
        self._rate = Fraction(rate) if rate else (Fraction(metadata.average_fps) if metadata.average_fps else None)
        self.fps = float(self._rate) if self._rate else 0.0
        self.begin = metadata.begin_stream_seconds or 0.0
        start = stream.start_time
        self._begin = start * Fraction(demuxer.time_base) if start is not None and demuxer.time_base else (
            Fraction(self.begin))
        self.promised_end_seconds = metadata.end_stream_seconds
        self._warned = False

    def __len__(self) -> int:
        return self.metadata.num_frames or 0

    def index_to_seconds(self, index: int) -> float:
        if not self._rate or self._rate <= 0:
            raise ValueError("the header gives no frame rate: index access needs seek_mode='exact'")
        return float(self._begin + (index + Fraction(1, 2)) / self._rate)

    def targets_for_indices(self, indices: list[int]) -> list[Target]:
        if self.variable_rate and not self._warned:
            self._warned = True
            stream = self.demuxer.stream
            warn_user(
                f"The stream's header does not give a constant frame rate (average "
                f"{float(stream.average_rate or 0):.4g} fps, base {float(stream.base_rate or 0):.4g} fps, "
                f"time base {stream.time_base}): in seek_mode='approximate' frame indices are estimates. "
                "Use seek_mode='exact' for exact indices; time-based methods stay exact."
            )
        return time_targets(self.index_to_seconds(i) for i in indices)

    def targets_for_times(self, seconds: list[float]) -> list[Target]:
        return time_targets(seconds)

    def position(self, seconds: float) -> float:
        return (seconds - self.begin) * self.fps if self.fps else 0.0

    def keyframe_position(self, target: Target) -> float:
        # The container's own index (MP4 sample tables, Matroska cues) is read
        # at open anyway; for MP4 its times are decode times, a slight
        # underestimate that only steers the seek-or-continue choice.
        entries: Any = self.demuxer.stream.index_entries
        if not len(entries):
            return self.position(target.seconds)  # unknown: assume a seek is needed
        at = entries.search_timestamp(self.seek_pts(target), backward=True)
        if at < 0:
            return -math.inf
        return self.position(self.demuxer.seconds(entries[at].timestamp))

    def seek_pts(self, target: Target) -> int:
        time_base = self.demuxer.time_base
        return math.floor(target.seconds * time_base.denominator / time_base.numerator)
