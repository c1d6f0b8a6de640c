"""Packets as NVDEC wants them: Annex-B bitstreams with parameter sets.

MP4, MOV and MKV store H.264 and HEVC with length-prefixed NAL units and the
parameter sets (SPS/PPS, HEVC also VPS) out of band in the `avcC`/`hvcC`
record. NVDEC's parser reads start-code (Annex-B) streams, so every packet
goes through FFmpeg's `h264_mp4toannexb`/`hevc_mp4toannexb` filter (a no-op
on Annex-B input such as MPEG-TS).

That filter inserts the parameter sets only in front of IDR pictures. A seek
that lands on a recovery-point I-frame (open-GOP H.264) would then give the
decoder slices it cannot parse, so the parameter sets, converted from the
extradata to start-code form, are put in front of the first packet after
every reset. VP8, VP9 and AV1 carry everything in band and need nothing.

Nothing here imports PyNvVideoCodec: the prepared packets describe memory
(address, size) plus the timestamps and flags read from the demuxed packet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from framefeed.engine.demux.demuxer import codec_name
from framefeed.engine.packets import CodecParameters, packet_is_discard

# FFmpeg codec name (`stream.codec.canonical_name`) -> PyNvVideoCodec's
# `cudaVideoCodec` member. Codecs missing here are decoded on the CPU.
NVDEC_CODECS: dict[str, str] = {
    "h264": "H264",
    "hevc": "HEVC",
    "vp8": "VP8",
    "vp9": "VP9",
    "av1": "AV1",
    "mpeg1video": "MPEG1",
    "mpeg2video": "MPEG2",
}

# Codecs stored length-prefixed in MP4/MKV, with the filter that converts them.
ANNEXB_FILTERS: dict[str, str] = {"h264": "h264_mp4toannexb", "hevc": "hevc_mp4toannexb"}

START_CODE = b"\x00\x00\x00\x01"

# HEVC NAL unit types FFmpeg's filter accepts in an hvcC record: VPS, SPS,
# PPS, prefix and suffix SEI.
_HVCC_NAL_TYPES = (32, 33, 34, 39, 40)


def is_annexb(data: bytes) -> bool:
    """Whether `data` starts with an Annex-B start code (3 or 4 bytes)."""
    return data[:3] == b"\x00\x00\x01" or data[:4] == START_CODE


def avcc_parameter_sets(extradata: bytes) -> bytes:
    """SPS and PPS NAL units of an `avcC` record, each behind a 4-byte start code.

    Raises:
        ValueError: `extradata` is not a well-formed avcC record.
    """
    data = bytes(extradata)
    if len(data) < 7 or data[0] != 1:
        raise ValueError(f"not an avcC record ({len(data)} bytes, version byte {data[:1].hex() or 'none'})")
    out = bytearray()
    pos = 5
    for count_mask in (0x1F, 0xFF):  # SPS count sits in 5 bits, PPS count in a full byte
        if pos >= len(data):
            raise ValueError("avcC record truncated before a parameter-set count")
        count = data[pos] & count_mask
        pos += 1
        for _ in range(count):
            pos = _copy_sized_unit(data, pos, out)
    return bytes(out)


def hvcc_parameter_sets(extradata: bytes) -> bytes:
    """VPS, SPS, PPS (and SEI) NAL units of an `hvcC` record, each behind a
    4-byte start code, in record order (as `hevc_mp4toannexb` emits them).

    Raises:
        ValueError: `extradata` is not a well-formed hvcC record.
    """
    data = bytes(extradata)
    if len(data) < 23 or data[0] != 1:
        raise ValueError(f"not an hvcC record ({len(data)} bytes, version byte {data[:1].hex() or 'none'})")
    out = bytearray()
    arrays = data[22]
    pos = 23
    for _ in range(arrays):
        if pos + 3 > len(data):
            raise ValueError("hvcC record truncated inside its NAL unit arrays")
        nal_type = data[pos] & 0x3F
        if nal_type not in _HVCC_NAL_TYPES:
            raise ValueError(f"hvcC record holds NAL unit type {nal_type}, not a parameter set or SEI")
        count = int.from_bytes(data[pos + 1 : pos + 3], "big")
        pos += 3
        for _ in range(count):
            pos = _copy_sized_unit(data, pos, out)
    return bytes(out)


def _copy_sized_unit(data: bytes, pos: int, out: bytearray) -> int:
    """Append the 16-bit-size-prefixed unit at `pos` to `out` behind a start
    code; returns the position after it."""
    if pos + 2 > len(data):
        raise ValueError("parameter-set record truncated inside a unit size")
    size = int.from_bytes(data[pos : pos + 2], "big")
    start = pos + 2
    if size == 0 or start + size > len(data):
        raise ValueError(f"parameter-set unit of {size} bytes at offset {pos} does not fit the record")
    out += START_CODE
    out += data[start : start + size]
    return start + size


def parameter_sets(codec_name: str, extradata: bytes | None) -> bytes:
    """What to send in front of the first packet after a flush, for a stream
    of `codec_name` with this extradata: start-code parameter sets (H.264,
    HEVC), the raw sequence header (MPEG-1/2), or nothing.

    Raises:
        ValueError: H.264/HEVC extradata that is neither Annex-B nor a valid record.
    """
    data = bytes(extradata or b"")
    if not data:
        return b""
    if is_annexb(data):
        return data  # already start-code form (MPEG-TS, raw streams, MPEG-1/2 sequence headers)
    if codec_name == "h264":
        return avcc_parameter_sets(data)
    if codec_name == "hevc":
        return hvcc_parameter_sets(data)
    return b""  # VP8/VP9/AV1: configuration records carry nothing the decoder needs


@dataclass
class PreparedPacket:
    """One packet ready for `PacketData`: `size` bytes at `address`, valid
    while `payload` (the object owning that memory) is alive."""

    payload: Any
    address: int
    size: int
    pts: int | None
    dts: int | None
    duration: int | None
    is_keyframe: bool
    is_discard: bool

    def to_bytes(self) -> bytes:
        """A copy of the payload bytes (tests and debugging)."""
        return bytes(memoryview(self.payload).cast("B")[: self.size])


def nal_length_size(codec: str, extradata: bytes) -> int:
    """Bytes of each NAL unit's length prefix for H.264/HEVC stored with an
    avcC/hvcC record; 0 for start-code (Annex-B) streams and other codecs."""
    data = bytes(extradata or b"")
    if codec not in ANNEXB_FILTERS or not data or is_annexb(data):
        return 0
    at = 4 if codec == "h264" else 21
    return (data[at] & 0x3) + 1 if len(data) > at else 0


def length_prefixed_to_annexb(data: bytes, length_size: int) -> bytes:
    """Replace each NAL unit's length prefix with a 4-byte start code (what
    `h264_mp4toannexb` does besides inserting parameter sets, which
    `PacketPreparer` sends itself after every reset).

    Raises:
        ValueError: a length that runs past the packet.
    """
    out = bytearray()
    pos, end = 0, len(data)
    while pos + length_size <= end:
        size = int.from_bytes(data[pos:pos + length_size], "big")
        start = pos + length_size
        if start + size > end:
            raise ValueError(f"NAL unit of {size} bytes at offset {pos} runs past the {end}-byte packet")
        out += START_CODE
        out += data[start:start + size]
        pos = start + size
    return bytes(out)


class PacketPreparer:
    """Turns one stream's packets into `PreparedPacket`s.

    Built from a PyAV stream (packets from its demuxer: FFmpeg's Annex-B
    filter converts them) or from `CodecParameters` (packets shipped without
    a container: length prefixes are rewritten here). After construction and
    after every `reset()` (a seek or an end-of-stream flush), the first packet
    produced is prefixed with the stream's parameter sets. Timestamps and
    flags are read before filtering, because the filter takes the packet over.
    """

    def __init__(self, stream: Any) -> None:
        self._length_size = 0
        if isinstance(stream, CodecParameters):
            self.codec_name = stream.codec
            self.parameter_sets = parameter_sets(self.codec_name, stream.extradata)
            self._filter = None
            self._length_size = nal_length_size(self.codec_name, stream.extradata)
        else:
            self.codec_name = codec_name(stream)
            self.parameter_sets = parameter_sets(self.codec_name, stream.codec_context.extradata)
            filter_name = ANNEXB_FILTERS.get(self.codec_name)
            self._filter = (av.bitstream.BitStreamFilterContext(filter_name, in_stream=stream)
                            if filter_name else None)
        self._needs_parameter_sets = bool(self.parameter_sets)

    def reset(self) -> None:
        """Forget filter state; the next packet gets the parameter sets again."""
        if self._filter is not None:
            self._filter.flush()
        self._needs_parameter_sets = bool(self.parameter_sets)

    def prepare(self, packet: Any) -> list[PreparedPacket]:
        """The packet(s) to decode for one demuxed packet (usually exactly one)."""
        pts, dts, duration = packet.pts, packet.dts, packet.duration or None
        key, discard = bool(packet.is_keyframe), packet_is_discard(packet)
        if self._length_size:
            data = np.frombuffer(length_prefixed_to_annexb(bytes(packet), self._length_size), dtype=np.uint8)
            return [self._prepared_array(data, pts, dts, duration, key, discard)]
        if self._filter is None:
            return [self._prepared(packet, pts, dts, duration, key, discard)]
        outputs = self._filter.filter(packet)
        prepared = []
        for index, output in enumerate(outputs):
            if index == 0:
                prepared.append(self._prepared(output, pts, dts, duration, key, discard))
            else:  # a filter that splits packets: the extra ones keep their own stamps
                prepared.append(self._prepared(output, output.pts, output.dts, output.duration or None,
                                               bool(output.is_keyframe), bool(output.is_discard)))
        return prepared

    def finish(self) -> list[PreparedPacket]:
        """End of stream: packets still held by the filter. Call `reset()`
        before preparing packets again."""
        if self._filter is None:
            return []
        return [self._prepared(output, output.pts, output.dts, output.duration or None,
                               bool(output.is_keyframe), bool(output.is_discard))
                for output in self._filter.filter(None)]

    def _prepared(self, packet: Any, pts: int | None, dts: int | None, duration: int | None,
                  key: bool, discard: bool) -> PreparedPacket:
        if self._needs_parameter_sets:
            self._needs_parameter_sets = False
            merged = np.frombuffer(self.parameter_sets + bytes(packet), dtype=np.uint8)
            return PreparedPacket(merged, merged.ctypes.data, merged.size, pts, dts, duration, key, discard)
        return PreparedPacket(packet, packet.buffer_ptr, packet.buffer_size, pts, dts, duration, key, discard)

    def _prepared_array(self, data: np.ndarray, pts: int | None, dts: int | None, duration: int | None,
                        key: bool, discard: bool) -> PreparedPacket:
        if self._needs_parameter_sets:
            self._needs_parameter_sets = False
            data = np.frombuffer(self.parameter_sets + data.tobytes(), dtype=np.uint8)
        return PreparedPacket(data, data.ctypes.data, data.size, pts, dts, duration, key, discard)
