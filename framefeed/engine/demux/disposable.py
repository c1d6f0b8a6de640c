"""Which packets hold pictures no other picture references.

When the decode plan knows exactly which frames it needs, a disposable packet
whose frame is not needed can be left out: no later picture predicts from it,
so every other frame decodes to the same pixels. On H.264 with B-frames this
skips a third to a half of the work between a keyframe and a target.

H.264: the first slice NAL's `nal_ref_idc` is 0. HEVC: the first slice is a
sub-layer non-reference picture (even NAL type below 16) in a stream with a
single temporal sub-layer (then nothing references it). Other codecs: never.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from framefeed.engine.demux.demuxer import codec_name

DisposableTest = Callable[[Any], bool]


def disposable_packet_test(stream: Any) -> DisposableTest | None:
    """A function telling whether a packet of `stream` is disposable, or None
    when the codec or its extradata gives no safe answer."""
    return disposable_test_for(codec_name(stream), bytes(stream.codec_context.extradata or b""))


def disposable_test_for(codec: str, extradata: bytes) -> DisposableTest | None:
    """`disposable_packet_test` from the codec name and extradata alone (a
    `framefeed.engine.packets.CodecParameters` holds both)."""
    if codec == "h264":
        framing = _nal_framing(extradata, length_size_at=4, config_version_byte=1)
        if framing is None:
            return None
        return lambda packet: _first_slice(packet, framing, _h264_slice_disposable)
    if codec == "hevc":
        framing = _nal_framing(extradata, length_size_at=21, config_version_byte=1)
        # Only an hvcC record tells how many temporal sub-layers there are.
        if not framing or (extradata[21] >> 3) & 0x7 > 1:
            return None
        return lambda packet: _first_slice(packet, framing, _hevc_slice_disposable)
    return None


def _nal_framing(extradata: bytes, length_size_at: int, config_version_byte: int) -> int | None:
    """NAL length-prefix size from an avcC/hvcC record, 0 for Annex-B start
    codes, None if unrecognised."""
    if not extradata:
        return 0  # no record: the packets carry start codes (Annex B)
    if extradata[:3] == b"\x00\x00\x01" or extradata[:4] == b"\x00\x00\x00\x01":
        return 0
    if extradata[0] == config_version_byte and len(extradata) > length_size_at:
        return (extradata[length_size_at] & 0x3) + 1
    return None


def _h264_slice_disposable(header: memoryview) -> bool | None:
    nal_type = header[0] & 0x1F
    if nal_type in (1, 5):
        return (header[0] >> 5) & 0x3 == 0
    return None  # not a slice: keep looking


def _hevc_slice_disposable(header: memoryview) -> bool | None:
    if len(header) < 2:
        return False
    nal_type = (header[0] >> 1) & 0x3F
    if nal_type < 32:
        return nal_type < 16 and nal_type % 2 == 0
    return None


def _first_slice(packet: Any, length_size: int, classify: Callable[[memoryview], bool | None]) -> bool:
    data = memoryview(packet)
    end = len(data)
    pos = 0
    if length_size:
        while pos + length_size < end:
            size = int.from_bytes(data[pos : pos + length_size], "big")
            start = pos + length_size
            if size <= 0 or start + size > end:
                return False
            verdict = classify(data[start : start + 2])
            if verdict is not None:
                return verdict
            pos = start + size
        return False
    # Annex B: find each start code.
    raw = data.tobytes() if end < 4096 else data[:4096].tobytes()
    while True:
        at = raw.find(b"\x00\x00\x01", pos)
        if at < 0 or at + 5 > len(raw):
            return False
        verdict = classify(memoryview(raw)[at + 3 : at + 5])
        if verdict is not None:
            return verdict
        pos = at + 3
