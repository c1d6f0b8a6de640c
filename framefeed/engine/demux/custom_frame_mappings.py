"""`custom_frame_mappings`: a frame table supplied by the user instead of the exact-mode scan.

The table is torchcodec's JSON format, which is what `ffprobe -show_frames
-of json` prints (in the stream's time base):

    {"frames": [{"pts": 0, "duration": 1001, "key_frame": 1}, ...]}

`pkt_pts` / `pkt_duration` (older ffprobe) are accepted in place of `pts` /
`duration`; which names are used is read from the first frame, as torchcodec
does. Frames are taken in display order (sorted by pts); frame i's duration is
the gap to the next pts, the last frame keeps its table duration, as in the
scanned index.

The table is checked against the file without scanning it: pts must be
distinct, the packets at the start of the stream and after the table's last
keyframe must all be in the table, and on MP4/MOV (whose sample table gives
the frame count for free) the count must match. A table from another file,
another stream or another time base fails these checks with a ValueError
that says what disagrees.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from framefeed.engine.demux.demuxer import STREAM_START, Demuxer
from framefeed.engine.demux.frame_index import FrameIndex

SEEK_MODES = ("exact", "approximate")
_AVINDEX_DISCARD = 0x2
# Packets demuxed at the start of the stream to check the table against.
_HEAD_PACKETS = 24


class CustomFrameMappingsError(ValueError):
    """A frame table that is malformed or contradicts the file."""


@dataclass(frozen=True)
class FrameMappings:
    """The parsed table, in the order given (stream time-base units)."""

    pts: np.ndarray
    durations: np.ndarray
    key_frames: np.ndarray


def resolve_seek_mode(seek_mode: Any, custom_frame_mappings: Any) -> tuple[str, FrameMappings | None]:
    """The decoder's seek mode and parsed mappings, checked in torchcodec's order.

    Returns ("exact" | "approximate", None) without mappings and
    ("custom_frame_mappings", mappings) with them.

    Raises:
        ValueError: an unknown seek mode; `"approximate"` with mappings;
            `"custom_frame_mappings"` without; a malformed table.
        TypeError: mappings that are not str, bytes or a file-like object.
    """
    if seek_mode not in (*SEEK_MODES, "custom_frame_mappings"):
        raise ValueError(f"Invalid seek mode ({seek_mode}). Supported values are {', '.join(SEEK_MODES)}.")
    if custom_frame_mappings is not None and seek_mode == "approximate":
        raise ValueError(
            "custom_frame_mappings is incompatible with seek_mode='approximate'. Use "
            "seek_mode='custom_frame_mappings' or leave it unspecified to automatically use custom frame mappings."
        )
    if custom_frame_mappings is None:
        if seek_mode == "custom_frame_mappings":
            raise ValueError(
                f"Invalid seek mode ({seek_mode}). Supported values are {', '.join(SEEK_MODES)}; "
                "'custom_frame_mappings' needs custom_frame_mappings=... (the frame table)."
            )
        return seek_mode, None
    return "custom_frame_mappings", read_custom_frame_mappings(custom_frame_mappings)


def read_custom_frame_mappings(source: Any) -> FrameMappings:
    """Parse a frame table from a JSON str or bytes, or a file-like object.

    Raises:
        ValueError: invalid JSON, no "frames", an empty frame list, a frame
            without the needed keys or with non-integer values.
        TypeError: a source of another type.
    """
    try:
        data = json.load(source) if hasattr(source, "read") else json.loads(source)
    except json.JSONDecodeError as error:
        raise CustomFrameMappingsError(
            f"Invalid custom frame mappings: {error}. It should be a valid JSON string or a file-like object."
        ) from error
    except TypeError as error:
        raise TypeError(
            f"{error}: custom_frame_mappings must be a JSON str or bytes, or a file-like object, "
            f"got {type(source).__name__}"
        ) from None
    if not data or not isinstance(data, dict) or "frames" not in data:
        raise CustomFrameMappingsError(
            "Invalid custom frame mappings. The input is empty or missing the required 'frames' key."
        )
    frames = data["frames"]
    if not isinstance(frames, list) or not frames:
        raise CustomFrameMappingsError(
            f"Invalid custom frame mappings. 'frames' must be a non-empty list of frames, got {frames!r:.80}."
        )
    first = frames[0]
    pts_key = next((key for key in ("pts", "pkt_pts") if key in first), None)
    duration_key = next((key for key in ("duration", "pkt_duration") if key in first), None)
    if not pts_key or not duration_key or "key_frame" not in first:
        raise CustomFrameMappingsError(
            "Invalid custom frame mappings. The 'pts'/'pkt_pts', 'duration'/'pkt_duration', and 'key_frame' "
            f"keys are required in the frame metadata; frame 0 has {sorted(first)}."
        )
    rows = np.empty((len(frames), 3), dtype=np.int64)
    for i, frame in enumerate(frames):
        try:
            rows[i] = (int(frame[pts_key]), int(frame[duration_key]), int(frame["key_frame"]))
        except (KeyError, TypeError, ValueError) as error:
            raise CustomFrameMappingsError(
                f"Invalid custom frame mappings: frame {i} ({frame!r:.120}) needs integer '{pts_key}', "
                f"'{duration_key}' and 'key_frame' values ({type(error).__name__}: {error})."
            ) from None
    return FrameMappings(rows[:, 0], rows[:, 1], rows[:, 2] != 0)


def index_from_mappings(demuxer: Demuxer, mappings: FrameMappings) -> FrameIndex:
    """The exact-mode frame index from `mappings`, checked against the file;
    leaves the demuxer rewound.

    Raises:
        CustomFrameMappingsError: the table contradicts the file.
    """
    description = demuxer.source.description
    pts = mappings.pts
    order = np.argsort(pts, kind="stable")
    pts, durations, keyframe = pts[order], mappings.durations[order], mappings.key_frames[order]
    if len(pts) > 1 and np.any(np.diff(pts) == 0):
        duplicate = int(pts[1:][np.diff(pts) == 0][0])
        raise CustomFrameMappingsError(f"Invalid custom frame mappings: pts {duplicate} appears more than once.")
    if not keyframe.any():
        raise CustomFrameMappingsError("Invalid custom frame mappings: no frame has key_frame=1.")
    _check_count(demuxer, len(pts), description)
    _check_packets(demuxer, pts, keyframe, description)
    gaps = np.diff(pts)
    last = int(durations[-1]) if durations[-1] > 0 else (int(np.median(gaps)) if len(gaps) else 1)
    frame_durations = np.append(gaps, last).astype(np.int64)
    return FrameIndex(pts.astype(np.int64), frame_durations, keyframe.astype(bool), np.unique(pts[keyframe]),
                      demuxer.time_base, "custom-frame-mappings")


def _check_count(demuxer: Demuxer, count: int, description: str) -> None:
    """MP4/MOV: the sample table (read at open) counts the frames for free."""
    if not demuxer.is_isobmff:
        return
    entries = demuxer.stream.index_entries
    if not len(entries):
        return
    shown = sum(1 for entry in entries[:] if not entry.flags & _AVINDEX_DISCARD)
    if shown != count:
        raise CustomFrameMappingsError(
            f"custom_frame_mappings lists {count} frames but the video stream of {description} has {shown}: "
            "the table does not describe this stream."
        )


def _check_packets(demuxer: Demuxer, pts: np.ndarray, keyframe: np.ndarray, description: str) -> None:
    """Packets demuxed at the start and after the table's last keyframe must be
    frames of the table, and the table's first and last frames must be among them."""
    known = set(pts.tolist())

    def check(packet_pts: int | None, where: str) -> None:
        if packet_pts is not None and packet_pts not in known:
            seconds = demuxer.seconds(packet_pts)
            raise CustomFrameMappingsError(
                f"custom_frame_mappings does not match {description}: the stream has a frame with pts "
                f"{packet_pts} ({seconds:.6f} s, {where}) that the table lacks; the table's pts run from "
                f"{int(pts[0])} to {int(pts[-1])} (time base {demuxer.time_base}). Was it made for this "
                "file and stream, in the stream's time base?"
            )

    try:
        seen: list[int] = []
        demuxer.seek(STREAM_START)
        for count, packet in enumerate(demuxer.packets()):
            if count >= _HEAD_PACKETS:
                break
            if packet.is_discard or packet.is_corrupt:
                continue
            check(packet.pts, "near the start")
            seen.append(packet.pts)
        if seen and int(pts[0]) < min(p for p in seen if p is not None):
            raise CustomFrameMappingsError(
                f"custom_frame_mappings does not match {description}: its first frame has pts {int(pts[0])}, "
                f"before the stream's first frame (pts {min(p for p in seen if p is not None)})."
            )
        last_key = int(pts[keyframe][-1])
        demuxer.seek(last_key)
        tail = [p.pts for p in demuxer.packets() if not p.is_discard and not p.is_corrupt]
        for packet_pts in tail:
            check(packet_pts, "near the end")
        if tail and int(pts[-1]) not in set(tail) and int(pts[-1]) > max(p for p in tail if p is not None):
            raise CustomFrameMappingsError(
                f"custom_frame_mappings does not match {description}: its last frame has pts {int(pts[-1])}, "
                f"after the stream's last frame (pts {max(p for p in tail if p is not None)})."
            )
    finally:
        demuxer.seek(STREAM_START)
