"""Read one track's sample tables from an ISO-BMFF (MP4/MOV) header.

FFmpeg parses these tables at `av.open`, but PyAV exposes only part of the
result (`stream.index_entries`: decode timestamps, keyframe flags, positions).
The presentation-time offsets (`ctts`) and the display matrix (`tkhd`) are not
exposed, so we read those few boxes ourselves. Everything here is a pure
function of the file's bytes; callers cross-check the result against packets
demuxed by FFmpeg before trusting it.

Every count read from the file is checked against the bytes that hold it
before anything is allocated: a table that promises more entries than its box
holds, or runs that add up to more samples than the track has, raises
`SampleTableError` (a ValueError naming the box and the value) instead of
expanding into gigabytes.
"""

from __future__ import annotations

import io
import math
import struct
from typing import BinaryIO

import numpy as np

_CONTAINER_BOXES = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts"}
# Bytes per entry of the tables FFmpeg allocates by their claimed count.
_ENTRY_BYTES = {b"stts": 8, b"ctts": 8, b"stss": 4}
# Box types an MP4/MOV file starts with.
_TOP_LEVEL_KINDS = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"styp", b"sidx"}
# A moov larger than this is not a header we want to hold in memory.
_MAX_MOOV_BYTES = 512 * 1024 * 1024
# Top-level boxes walked looking for moov (it precedes fragments, and a plain
# file has a handful of top-level boxes): bounds the work on garbage input.
_MAX_TOP_LEVEL_BOXES = 1024
# moov/trak/mdia/minf/stbl is four deep; deeper nesting is not a real header.
_MAX_DEPTH = 6


class SampleTableError(ValueError):
    """A sample table whose sizes are impossible for the file (names the box and
    the value). `impossible` is False for tables that merely disagree in a way
    sloppy muxers produce (runs covering fewer samples than the track has)."""

    def __init__(self, message: str, *, impossible: bool = True) -> None:
        super().__init__(message)
        self.impossible = impossible


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
        """Raises SampleTableError when `stts` is impossible or disagrees with `stsz`."""
        if self._deltas is None:
            self._deltas = self._expand_runs(b"stts", signed=False)
        return self._deltas

    @property
    def composition_offsets(self) -> np.ndarray:
        """Raises SampleTableError when `ctts` is impossible or disagrees with `stsz`."""
        if self._offsets is None:
            # FFmpeg reads composition offsets as signed whatever the box version.
            self._offsets = self._expand_runs(b"ctts", signed=True)
        return self._offsets

    def _expand_runs(self, kind: bytes, signed: bool) -> np.ndarray:
        """One value per sample from a run-length table (`stts`, `ctts`).

        The run counts are summed before anything is expanded, so a corrupted
        count costs a comparison, not an allocation of billions of entries."""
        samples = self._checked_sample_count()
        box = self._boxes.get(kind)
        if box is None:
            if kind == b"ctts":
                return np.zeros(samples, dtype=np.int64)  # no reordering: pts == dts
            raise SampleTableError(f"track {self.track_id} has no '{kind.decode()}' box")
        pairs = _u32_pairs(self._data, *box, signed_second=signed, kind=kind)
        counts = pairs["count"].astype(np.int64)
        total = int(counts.sum())
        if total != samples:
            largest = int(counts.max()) if len(counts) else 0
            raise SampleTableError(
                f"'{kind.decode()}' box of track {self.track_id} covers {total} samples (largest run "
                f"{largest}) but the track has {samples} ('stsz')",
                impossible=total > samples,
            )
        return np.repeat(pairs["value"].astype(np.int64), counts)

    def _checked_sample_count(self) -> int:
        """`sample_count`, after checking that the `stsz`/`stz2` box can hold it."""
        box = self._boxes.get(b"stsz") or self._boxes.get(b"stz2")
        if box is None:
            raise SampleTableError(f"track {self.track_id} has no 'stsz' box")
        _check_sample_size_box(self._data, *box, kind=b"stsz" if b"stsz" in self._boxes else b"stz2")
        return self.sample_count


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
    """(kind, payload start, box end) of each whole box in `data[start:end]`."""
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
    """The payload of the top-level `moov` box; None when there is none, or it
    is cut short by the end of the file."""
    if file_size is None:
        file_size = reader.seek(0, io.SEEK_END)
    pos = 0
    for _ in range(_MAX_TOP_LEVEL_BOXES):
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
            # Checked before reading: a corrupted size must not become a huge read buffer.
            if size > _MAX_MOOV_BYTES or (file_size is not None and pos + size > file_size):
                return None
            reader.seek(pos + header_len)
            payload = reader.read(size - header_len)
            return payload if len(payload) == size - header_len else None
        pos += size
        if file_size is not None and pos >= file_size:
            return None
    return None


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


def _u32_pairs(data: memoryview, start: int, end: int, signed_second: bool, kind: bytes) -> np.ndarray:
    """The (count, value) entries of a run-length table, a view of `data`."""
    if start + 8 > end:
        raise SampleTableError(f"'{kind.decode()}' box is {end - start} bytes, too short for its header")
    count = struct.unpack_from(">I", data, start + 4)[0]
    first = start + 8
    if 8 * count > end - first:
        raise SampleTableError(
            f"'{kind.decode()}' box claims {count} entries but holds room for {(end - first) // 8}"
        )
    dtype = np.dtype([("count", ">u4"), ("value", ">i4" if signed_second else ">u4")])
    return np.frombuffer(data, dtype=dtype, count=count, offset=first)


def _check_sample_size_box(data: memoryview, start: int, end: int, kind: bytes) -> None:
    """A `stsz` (or compact `stz2`) box whose sample count fits its entries."""
    if start + 12 > end:
        raise SampleTableError(f"'{kind.decode()}' box is {end - start} bytes, too short for its header")
    if kind == b"stsz":
        constant_size, count = struct.unpack_from(">II", data, start + 4)
        bits = 0 if constant_size else 32
    else:
        bits, count = data[start + 7], struct.unpack_from(">I", data, start + 8)[0]
        if bits not in (4, 8, 16):
            raise SampleTableError(f"'stz2' box has field size {bits}; valid sizes are 4, 8 and 16 bits")
    if bits and count * bits > 8 * (end - start - 12):
        raise SampleTableError(
            f"'{kind.decode()}' box claims {count} samples but holds room for "
            f"{8 * (end - start - 12) // bits}"
        )


def looks_like_isobmff(head: bytes) -> bool:
    """Whether the file's first bytes are an ISO-BMFF (MP4/MOV) box header."""
    return len(head) >= 8 and head[4:8] in _TOP_LEVEL_KINDS


def read_moov(reader: BinaryIO, file_size: int | None = None) -> bytes | None:
    """The payload of the top-level `moov` box; None when there is none, or it
    is cut short by the end of the file."""
    try:
        return _find_moov(reader, file_size)
    except struct.error:
        return None


def check_entry_counts(moov: bytes) -> None:
    """Refuse run-length tables that claim more entries than their box holds.

    FFmpeg reserves memory for every entry an `stts`, `ctts` or `stss` box
    claims before reading them (4-8 bytes each: up to 32 GiB for a corrupted
    count), so this runs on the raw header before FFmpeg parses it. The other
    tables FFmpeg bounds by itself, and ours are checked when first used.

    Raises:
        SampleTableError: naming the box, the track and the claimed count.
    """
    data = memoryview(moov)

    def walk(start: int, end: int, depth: int, track: int) -> None:
        for kind, cs, ce in _iter_boxes(data, start, end):
            if kind == b"trak":
                track += 1
            if kind in _CONTAINER_BOXES and depth < _MAX_DEPTH:
                walk(cs, ce, depth + 1, track)
            elif kind in _ENTRY_BYTES and ce - cs >= 8:
                count, entry = struct.unpack_from(">I", data, cs + 4)[0], _ENTRY_BYTES[kind]
                if entry * count > ce - cs - 8:
                    raise SampleTableError(
                        f"'{kind.decode()}' box of track {track} claims {count} entries but holds room "
                        f"for {(ce - cs - 8) // entry}"
                    )

    walk(0, len(data), 0, 0)


def read_track_tables(reader: BinaryIO, track_id: int, file_size: int | None = None) -> TrackTables | None:
    """Parse the `trak` whose `tkhd` track_ID is `track_id`.

    Returns None when the file has no readable `moov` or no such track.
    Raises ValueError on headers too damaged to read (sample tables are
    checked only when first used).
    """
    moov = read_moov(reader, file_size)
    return None if moov is None else track_tables_from_moov(moov, track_id)


def track_tables_from_moov(moov: bytes, track_id: int) -> TrackTables | None:
    """`read_track_tables` on a `moov` payload already read."""
    try:
        return _tables_from_moov(moov, track_id)
    except struct.error as error:  # a field that runs past the end of its box
        raise ValueError(f"damaged MP4 header: {error}") from error


def _tables_from_moov(moov: bytes, track_id: int) -> TrackTables | None:
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

    def walk(s: int, e: int, depth: int) -> None:
        for kind, cs, ce in _iter_boxes(data, s, e):
            if kind in _CONTAINER_BOXES and depth < _MAX_DEPTH:
                walk(cs, ce, depth + 1)
            elif kind in (b"tkhd", b"mdhd", b"stts", b"ctts", b"stsz", b"stz2") and kind not in found:
                found[kind] = (cs, ce)

    walk(start, end, 0)
    if b"tkhd" not in found:
        return None
    ts, te = found[b"tkhd"]
    if te - ts < 4:
        return None
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
        ms, me = found[b"mdhd"]
        at = ms + (4 + 8 + 8 if me > ms and data[ms] == 1 else 4 + 4 + 4)
        timescale = struct.unpack_from(">I", data, at)[0] if at + 4 <= me else None
    sample_count = 0
    if b"stsz" in found or b"stz2" in found:
        ss, se = found.get(b"stsz") or found[b"stz2"]
        if ss + 12 <= se:
            sample_count = struct.unpack_from(">I", data, ss + 8)[0]
    return TrackTables(track_id, timescale, sample_count, _multiply(matrix, movie_matrix), found, data)
