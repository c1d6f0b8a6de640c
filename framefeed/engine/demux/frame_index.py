"""The exact-mode frame index, built from packets without decoding.

Frame `i` is the i-th frame in display order. Its duration is the gap to the
next frame's pts; the last frame keeps its packet's duration (or, when the
container stores none, the typical gap), so it stays reachable by time.
Packets flagged discard (edit lists, encoder priming) produce no frame and are
left out of the frames, but their keyframes remain valid seek points.

Two builders, same result:
- `_from_sample_table`: MP4/MOV. FFmpeg's own index (`stream.index_entries`:
  decode timestamps, flags, positions) plus the track's composition offsets,
  verified against packets demuxed at both ends of the stream. No payload is
  read, which makes it several times faster than a scan on long files.
- `_from_packet_scan`: every other container (and any MP4 whose tables fail a
  check): demux every packet of the stream and read its timestamps and flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from framefeed._warnings import warn_user
from framefeed.engine.demux.demuxer import STREAM_START, Demuxer
from framefeed.errors import DecodingError, VideoOpenError

_AVINDEX_KEYFRAME = 0x1
_AVINDEX_DISCARD = 0x2
# Packets compared against the sample table at the start and end of the stream.
_VERIFY_PACKETS = 24
# In a stream with reordered frames, packets without a presentation timestamp
# are taken for damage (and left out) while at most 1 in this many lack one.
_MAX_UNTIMED_FRACTION = 20


@dataclass
class FrameIndex:
    """Frames in display order plus the stream's seek points.

    Attributes:
        pts: int64 pts of each frame (stream time base), strictly increasing.
        durations: int64 duration of each frame (same unit).
        is_keyframe: bool per frame.
        seek_points: sorted int64 pts of every keyframe packet (discarded ones included);
            `STREAM_START` alone when no packet is flagged a keyframe (damaged flags):
            then every frame is decoded from the start of the stream.
        time_base: seconds per pts unit.
        built_from: "sample-table" or "packet-scan".
    """

    pts: np.ndarray
    durations: np.ndarray
    is_keyframe: np.ndarray
    seek_points: np.ndarray
    time_base: Fraction
    built_from: str

    def __post_init__(self) -> None:
        # pts * num / den rounds once, as `Demuxer.seconds` does.
        num, den = self.time_base.numerator, self.time_base.denominator
        self.pts_seconds = self.pts * num / den
        self.duration_seconds = self.durations * num / den
        # The keyframe each frame is decoded from: last seek point at or before its pts.
        where = np.searchsorted(self.seek_points, self.pts, side="right") - 1
        self.seek_point_of_frame = where  # -1: before the first keyframe (seek to start)

    def __len__(self) -> int:
        return len(self.pts)

    @property
    def begin_seconds(self) -> float:
        return float(self.pts_seconds[0])

    @property
    def end_seconds(self) -> float:
        return float(np.max(self.pts_seconds + self.duration_seconds))

    def seek_pts(self, frame_index: int) -> int:
        """pts to seek to before decoding forward to frame `frame_index`."""
        where = self.seek_point_of_frame[frame_index]
        return int(self.seek_points[where]) if where >= 0 else STREAM_START

    def index_played_at(self, seconds: float) -> int:
        """Index of the frame displayed at `seconds` (pts <= seconds < next pts);
        -1 when `seconds` is before the first frame."""
        return int(np.searchsorted(self.pts_seconds, seconds, side="right")) - 1


def build_frame_index(demuxer: Demuxer, *, allow_sample_table: bool = True) -> FrameIndex:
    """Index every frame of the demuxer's stream; leaves the demuxer rewound.

    Raises:
        VideoOpenError: the stream holds no frames, or its packets carry no timestamps.
    """
    index = None
    if allow_sample_table and demuxer.is_isobmff:
        index = _from_sample_table(demuxer)
    if index is None:
        index = _from_packet_scan(demuxer)
    demuxer.seek(STREAM_START)
    return index


def _finish(
    demuxer: Demuxer,
    pts: np.ndarray,
    durations: np.ndarray,
    keyframe: np.ndarray,
    discard: np.ndarray,
    built_from: str,
) -> FrameIndex:
    seek_points = np.unique(pts[keyframe])
    if len(seek_points) == 0:
        seek_points = np.array([STREAM_START], dtype=np.int64)
    keep = ~discard
    pts, durations, keyframe = pts[keep], durations[keep], keyframe[keep]
    if len(pts) == 0:
        raise VideoOpenError(f"The video stream of {demuxer.source.description} holds no frames")
    order = np.argsort(pts, kind="stable")
    pts, durations, keyframe = pts[order], durations[order], keyframe[order]
    unique = np.concatenate(([True], np.diff(pts) > 0))
    pts, durations, keyframe = pts[unique], durations[unique], keyframe[unique]
    gaps = np.diff(pts)
    last = int(durations[-1])
    if last <= 0:
        last = int(np.median(gaps)) if len(gaps) else _nominal_frame_duration(demuxer)
    durations = np.append(gaps, last).astype(np.int64)
    return FrameIndex(pts.astype(np.int64), durations, keyframe, seek_points.astype(np.int64),
                      demuxer.time_base, built_from)


def _nominal_frame_duration(demuxer: Demuxer) -> int:
    rate = demuxer.stream.average_rate or demuxer.stream.base_rate
    if rate:
        return max(int(round(1 / (rate * demuxer.time_base))), 1)
    return 1


def _from_packet_scan(demuxer: Demuxer) -> FrameIndex:
    demuxer.seek(STREAM_START)
    rows = []
    append = rows.append
    without_pts: list[int] = []  # rows whose time is only a decode timestamp
    corrupt = 0
    for packet in demuxer.packets():
        if packet.is_corrupt:
            corrupt += 1  # e.g. cut short by the end of a truncated file: no frame to promise
            continue
        pts = packet.pts
        if pts is None:
            pts = packet.dts
            if pts is None:
                corrupt += 1  # no time at all: no frame anyone could ask for
                continue
            without_pts.append(len(rows))
        append((pts, packet.duration or 0, packet.is_keyframe, packet.is_discard))
    if without_pts and demuxer.stream.codec_context.has_b_frames:
        # With reordered frames a decode timestamp is not a display time.
        if len(without_pts) * _MAX_UNTIMED_FRACTION > len(rows):
            raise VideoOpenError(
                f"The video stream of {demuxer.source.description} has {len(without_pts)} packets without "
                "presentation timestamps and reordered frames; exact frame indexing is impossible"
            )
        # A few damaged packets among timed ones: their frames cannot be asked
        # for by time, so they are left out like corrupt packets.
        dropped = set(without_pts)
        rows = [row for i, row in enumerate(rows) if i not in dropped]
        corrupt += len(dropped)
    if not rows:
        raise VideoOpenError(f"The video stream of {demuxer.source.description} holds no packets")
    if corrupt:
        warn_user(
            f"{demuxer.source.description}: {corrupt} packet(s) of the video stream are corrupt, cut "
            f"short or without timestamps (damaged or truncated file?); indexed the {len(rows)} intact ones"
        )
    table = np.array(rows, dtype=np.int64)
    return _finish(demuxer, table[:, 0], table[:, 1], table[:, 2].astype(bool),
                   table[:, 3].astype(bool), "packet-scan")


def _from_sample_table(demuxer: Demuxer) -> FrameIndex | None:
    tables = demuxer.track_tables()
    if tables is None:
        return None
    entries = demuxer.stream.index_entries
    count = len(entries)
    if count == 0 or count != tables.sample_count:
        return None  # edit lists or fragments reshaped FFmpeg's index: scan instead
    if tables.timescale and demuxer.time_base != Fraction(1, tables.timescale):
        return None
    rows = np.array([(e.timestamp, e.flags, e.pos, e.size) for e in entries[:]], dtype=np.int64)
    dts, flags, positions, sizes = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
    size = demuxer.source.size
    if size is not None and int(np.max(positions + sizes)) > size:
        return None  # truncated file: only a scan knows which packets exist
    try:
        offsets, deltas = tables.composition_offsets, tables.sample_deltas
    except ValueError as error:
        # Tables that are impossible or disagree with each other: FFmpeg's
        # packets are the authority on what the file holds, so index those.
        if getattr(error, "impossible", True):
            warn_user(f"{demuxer.source.description}: {error}; indexing the video from its packets instead")
        return None
    pts = dts + offsets
    shift = _verify_against_packets(demuxer, pts, positions, flags)
    if shift is None:
        return None
    pts = pts + shift
    durations = np.zeros(count, dtype=np.int64)
    last_shown = int(np.argmax(pts))
    durations[last_shown] = int(deltas[last_shown])
    return _finish(demuxer, pts, durations, (flags & _AVINDEX_KEYFRAME) != 0,
                   (flags & _AVINDEX_DISCARD) != 0, "sample-table")


def _verify_against_packets(
    demuxer: Demuxer, pts: np.ndarray, positions: np.ndarray, flags: np.ndarray
) -> int | None:
    """Compare the computed table with packets FFmpeg demuxes at the start and
    the end of the stream. Returns the constant pts shift FFmpeg applied (edit
    list offsets), or None on any disagreement."""
    order = np.argsort(positions, kind="stable")
    sorted_positions = positions[order]
    if len(sorted_positions) > 1 and np.any(np.diff(sorted_positions) == 0):
        return None

    def entry_of(packet_pos: int) -> int | None:
        at = int(np.searchsorted(sorted_positions, packet_pos))
        if at < len(sorted_positions) and sorted_positions[at] == packet_pos:
            return int(order[at])
        return None

    shift = None

    def check(packet) -> bool:
        nonlocal shift
        i = entry_of(packet.pos) if packet.pos is not None and packet.pos >= 0 else None
        if i is None or packet.pts is None:
            return False
        if shift is None:
            shift = packet.pts - int(pts[i])
        return (
            packet.pts == int(pts[i]) + shift
            and packet.is_keyframe == bool(flags[i] & _AVINDEX_KEYFRAME)
            and packet.is_discard == bool(flags[i] & _AVINDEX_DISCARD)
        )

    try:
        demuxer.seek(STREAM_START)
        checked = 0
        for packet in demuxer.packets():
            if not check(packet):
                return None
            checked += 1
            if checked >= _VERIFY_PACKETS:
                break
        # The tail: from the last keyframe that leaves at least a few packets.
        keyframes = np.flatnonzero(flags & _AVINDEX_KEYFRAME)
        if len(keyframes) == 0:
            return None
        tail_key = int(keyframes[-1])
        demuxer.seek(int(pts[tail_key]) + (shift or 0))
        tail = 0
        for packet in demuxer.packets():
            if not check(packet):
                return None
            tail += 1
        if tail == 0:
            return None
    except (DecodingError, OSError, ValueError):
        return None
    except Exception as error:  # an FFmpeg error while verifying: fall back to a scan
        if type(error).__module__.startswith("av"):
            return None
        raise
    return shift if shift is not None else 0
