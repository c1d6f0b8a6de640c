"""Read one track's sample tables from an ISO-BMFF (MP4/MOV) header.

FFmpeg parses these tables at `av.open`, but PyAV exposes only part of the
result (`stream.index_entries`: decode timestamps, keyframe flags, positions).
The presentation-time offsets (`ctts`) and the display matrix (`tkhd`) are not
exposed, so we read those few boxes ourselves. Everything here is a pure
function of the file's bytes; callers cross-check the result against packets
demuxed by FFmpeg before trusting it.
"""

from __future__ import annotations

import math
import struct
from typing import BinaryIO

import numpy as np

_CONTAINER_BOXES = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts"}
# A moov larger than this is not a header we want to hold in memory.
_MAX_MOOV_BYTES = 512 * 1024 * 1024


class TrackTables:
    """What we need from one `trak` box.

    The track header fields are read at once; the sample tables only when
    first used (approximate mode needs just the display matrix). Arrays are
    in decode (sample) order: `composition_offsets` (ctts) and
    `sample_deltas` (stts durations), in the track's timescale.
    """

    def __init__(self, track_id: int, timescale: int | None, sample_count: int,
                 display_matrix: tuple[int, ...], boxes: dict[bytes, tuple[int, int]], data: memoryview) -> None:
        self.track_id = track_id
        self.timescale = timescale
        self.sample_count = sample_count
        self.display_matrix = display_matrix  # 9 values, FFmpeg's layout (16.16 / 2.30 fixed point)
        self._boxes = boxes
        self._data = data
        self._deltas: np.ndarray | None = None
        self._offsets: np.ndarray | None = None

    @property
    def rotation_degrees(self) -> float | None:
        """Counter-clockwise rotation the display matrix asks for, as FFmpeg's
        `av_display_rotation_get` computes it; None for an identity matrix."""
        return display_matrix_rotation(self.display_matrix)

    @property
    def sample_deltas(self) -> np.ndarray:
        if self._deltas is None:
            box = self._boxes.get(b"stts")
            self._deltas = _expand(_u32_pairs(self._data, *box, signed_second=False)) if box else np.zeros(0, np.int64)
            self._check(len(self._deltas), "durations")
        return self._deltas

    @property
    def composition_offsets(self) -> np.ndarray:
        """Raises ValueError when the tables disagree on the sample count."""
        if self._offsets is None:
            box = self._boxes.get(b"ctts")
            # FFmpeg reads composition offsets as signed whatever the box version.
            self._offsets = (_expand(_u32_pairs(self._data, *box, signed_second=True)) if box
                             else np.zeros(self.sample_count, dtype=np.int64))
            self._check(len(self._offsets), "composition offsets")
        return self._offsets

    def _check(self, count: int, what: str) -> None:
        if count != self.sample_count:
            raise ValueError(
                f"inconsistent sample tables in track {self.track_id}: {self.sample_count} samples, "
                f"{count} {what}"
            )


def display_matrix_rotation(matrix: tuple[int, ...]) -> float | None:
    """Counter-clockwise rotation in degrees of a 3x3 display matrix (row-major,
    16.16 fixed point for the 2x2 part); None when it holds no rotation."""
    a, b, c, d = (matrix[0] / 65536.0, matrix[1] / 65536.0, matrix[3] / 65536.0, matrix[4] / 65536.0)
    scale0 = math.hypot(a, c)
    scale1 = math.hypot(b, d)
    if scale0 == 0.0 or scale1 == 0.0:
        return None
    degrees = -math.degrees(math.atan2(b / scale1, a / scale0))
    if degrees == 0.0:
        return None
    return degrees + 0.0  # normalise -0.0


def _iter_boxes(data: memoryview, start: int, end: int):
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if pos + 16 > end:
                return
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            return
        yield kind, pos + header, pos + size
        pos += size


def _find_moov(reader: BinaryIO, file_size: int | None) -> bytes | None:
    pos = 0
    reader.seek(0)
    while True:
        reader.seek(pos)
        header = reader.read(16)
        if len(header) < 8:
            return None
        size, kind = struct.unpack_from(">I4s", header, 0)
        header_len = 8
        if size == 1:
            if len(header) < 16:
                return None
            size = struct.unpack_from(">Q", header, 8)[0]
            header_len = 16
        elif size == 0:
            if kind != b"moov" or file_size is None:
                return None
            size = file_size - pos
        if size < header_len:
            return None
        if kind == b"moov":
            if size > _MAX_MOOV_BYTES:
                return None
            reader.seek(pos + header_len)
            payload = reader.read(size - header_len)
            return payload if len(payload) == size - header_len else None
        pos += size


def _matrix(data: memoryview, offset: int) -> tuple[int, ...]:
    return struct.unpack_from(">9i", data, offset)


def _multiply(track: tuple[int, ...], movie: tuple[int, ...]) -> tuple[int, ...]:
    # FFmpeg's mov demuxer applies the movie (mvhd) matrix after the track's;
    # column j of each row mixes with shifts 16, 16, 30 for the three entries.
    shifts = (16, 16, 30)
    out = []
    for i in range(3):
        for j in range(3):
            out.append(sum((track[i * 3 + e] * movie[e * 3 + j]) >> shifts[e] for e in range(3)))
    return tuple(out)


def _u32_pairs(data: memoryview, start: int, end: int, signed_second: bool) -> np.ndarray:
    count = struct.unpack_from(">I", data, start + 4)[0]
    first = start + 8
    if first + 8 * count > end:
        raise ValueError("truncated sample table")
    dtype = np.dtype([("count", ">u4"), ("value", ">i4" if signed_second else ">u4")])
    return np.frombuffer(data, dtype=dtype, count=count, offset=first)


def _expand(pairs: np.ndarray) -> np.ndarray:
    if len(pairs) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.repeat(pairs["value"].astype(np.int64), pairs["count"].astype(np.int64))


def read_track_tables(reader: BinaryIO, track_id: int, file_size: int | None = None) -> TrackTables | None:
    """Parse the `trak` whose `tkhd` track_ID is `track_id`.

    Returns None when the file has no readable `moov` or no such track.
    Raises ValueError on sample tables that are internally inconsistent.
    """
    moov = _find_moov(reader, file_size)
    if moov is None:
        return None
    data = memoryview(moov)
    movie_matrix = (65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30)
    traks = []
    for kind, start, end in _iter_boxes(data, 0, len(data)):
        if kind == b"mvhd":
            version = data[start]
            offset = start + (4 + 8 + 8 + 4 + 8 if version == 1 else 4 + 4 + 4 + 4 + 4) + 4 + 2 + 2 + 8
            if offset + 36 <= end:
                movie_matrix = _matrix(data, offset)
        elif kind == b"trak":
            traks.append((start, end))
    for start, end in traks:
        tables = _read_trak(data, start, end, movie_matrix)
        if tables is not None and tables.track_id == track_id:
            return tables
    return None


def _read_trak(data: memoryview, start: int, end: int, movie_matrix: tuple[int, ...]) -> TrackTables | None:
    found: dict[bytes, tuple[int, int]] = {}

    def walk(s: int, e: int) -> None:
        for kind, cs, ce in _iter_boxes(data, s, e):
            if kind in _CONTAINER_BOXES:
                walk(cs, ce)
            elif kind in (b"tkhd", b"mdhd", b"stts", b"ctts", b"stsz", b"stz2") and kind not in found:
                found[kind] = (cs, ce)

    walk(start, end)
    if b"tkhd" not in found:
        return None
    ts, te = found[b"tkhd"]
    version = data[ts]
    if version == 1:
        track_id = struct.unpack_from(">I", data, ts + 4 + 8 + 8)[0]
        matrix_at = ts + 4 + 8 + 8 + 4 + 4 + 8 + 8 + 2 + 2 + 2 + 2
    else:
        track_id = struct.unpack_from(">I", data, ts + 4 + 4 + 4)[0]
        matrix_at = ts + 4 + 4 + 4 + 4 + 4 + 4 + 8 + 2 + 2 + 2 + 2
    matrix = _matrix(data, matrix_at) if matrix_at + 36 <= te else (65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30)
    timescale = None
    if b"mdhd" in found:
        ms, _ = found[b"mdhd"]
        timescale = struct.unpack_from(">I", data, ms + (4 + 8 + 8 if data[ms] == 1 else 4 + 4 + 4))[0]
    if b"stsz" in found or b"stz2" in found:
        ss, _ = found.get(b"stsz") or found[b"stz2"]
        sample_count = struct.unpack_from(">I", data, ss + 8)[0]
    else:
        sample_count = 0
    return TrackTables(track_id, timescale, sample_count, _multiply(matrix, movie_matrix), found, data)
