"""Whether NVDEC decodes a stream exactly like the CPU path: decided once, at
construction, from the stream's parameters and the GPU's decoder caps.

A stream goes to the CPU backend (then uploaded) when:
- framefeed has no NVDEC path for its codec;
- its size is odd (PyNvVideoCodec's packed output then has a wrong chroma layout);
- it is interlaced (NVDEC deinterlaces, FFmpeg does not);
- its samples are not 8/10/12-bit 4:2:0 or 4:4:4 YCbCr (4:2:2, monochrome,
  RGB, alpha), or H.264 other than 8-bit 4:2:0 (High10, 4:2:2, 4:4:4);
- it is AV1 on a GPU without an AV1 decoder (Hopper, A100);
- `GetDecoderCaps` says the GPU does not decode this codec, chroma format and
  bit depth, or not at this size.

`stream_reason` needs no GPU and no PyNvVideoCodec; `hardware_reason` takes
the caps as a plain dict so the rules are testable without either.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from framefeed.engine.backends.gpu_decode.bitstream import NVDEC_CODECS
from framefeed.engine.backends.gpu_decode.colour import ColourSpec, colour_spec_for
from framefeed.engine.packets import CodecParameters

# Field orders FFmpeg reports for interlaced content (AVFieldOrder TT, BB, TB, BT).
_INTERLACED_FIELD_ORDERS = (2, 3, 4, 5)
# GPUs whose NVDEC has no AV1 decoder, by compute capability: A100 (8.0), H100/H200 (9.0).
_NO_AV1_COMPUTE_CAPABILITIES = ((8, 0), (9, 0))


@dataclass(frozen=True)
class StreamTraits:
    """What routing needs to know about a video stream.

    Attributes:
        codec: FFmpeg's canonical codec name ("h264", "hevc", "av1", ...).
        width, height: coded picture size (before rotation).
        pixel_format: FFmpeg pixel format name, or None.
        profile: FFmpeg profile name, or None.
        interlaced: FFmpeg reports an interlaced field order.
        colour: the RGB conversion, or None when the kernel cannot reproduce the CPU output.
        colour_reason: why `colour` is None.
    """

    codec: str
    width: int
    height: int
    pixel_format: str | None
    profile: str | None
    interlaced: bool
    colour: ColourSpec | None
    colour_reason: str = ""

    @property
    def chroma_format(self) -> str:
        """PyNvVideoCodec's `cudaVideoChromaFormat` member name: "420" or "444"."""
        assert self.colour is not None
        return "420" if self.colour.chroma_shift_x else "444"

    @property
    def bit_depth(self) -> int:
        assert self.colour is not None
        return self.colour.bit_depth


def stream_traits(stream: Any) -> StreamTraits:
    """Read `StreamTraits` from a PyAV video stream (no decoding)."""
    return traits_of(CodecParameters.from_stream(stream))


def traits_of(params: CodecParameters) -> StreamTraits:
    """`StreamTraits` from codec parameters (a stream's, or a shipped bundle's)."""
    if params.pixel_format is None:
        colour, colour_reason = None, "the stream declares no pixel format"
    else:
        colour, colour_reason = colour_spec_for(params.pixel_format, params.colorspace, params.color_range)
    return StreamTraits(
        codec=params.codec,
        width=params.width,
        height=params.height,
        pixel_format=params.pixel_format,
        profile=params.profile,
        interlaced=params.field_order in _INTERLACED_FIELD_ORDERS,
        colour=colour,
        colour_reason=colour_reason,
    )


def stream_reason(traits: StreamTraits) -> str:
    """Why NVDEC cannot decode this stream exactly as the CPU would; "" when
    the stream itself is fine (the GPU may still lack a decoder for it)."""
    if traits.codec not in NVDEC_CODECS:
        return f"codec {traits.codec or 'unknown'} has no NVDEC path in framefeed"
    if traits.width <= 0 or traits.height <= 0:
        return "the stream declares no frame size"
    if traits.width % 2 or traits.height % 2:
        return (f"odd frame size {traits.width}x{traits.height}: PyNvVideoCodec's output has a wrong "
                "chroma layout at odd sizes")
    if traits.interlaced:
        return "interlaced stream: NVDEC deinterlaces, so frames would not match the CPU decoder's"
    if traits.colour is None:
        return f"{traits.colour_reason or 'unsupported pixel format'}"
    if traits.codec == "h264" and (traits.bit_depth != 8 or traits.chroma_format != "420"):
        profile = f" ({traits.profile})" if traits.profile else ""
        return (f"H.264{profile} with {traits.bit_depth}-bit {traits.pixel_format}: NVDEC decodes only "
                "8-bit 4:2:0 H.264")
    if traits.codec in ("vp8", "vp9", "av1", "mpeg1video", "mpeg2video") and traits.chroma_format != "420":
        return f"{traits.codec} with {traits.pixel_format}: NVDEC decodes only 4:2:0 {traits.codec}"
    return ""


def hardware_reason(traits: StreamTraits, caps: dict[str, int], compute_capability: tuple[int, int] | None,
                    device_name: str = "this GPU") -> str:
    """Why this GPU's NVDEC cannot decode the stream ("" when it can).

    Args:
        traits: the stream (already accepted by `stream_reason`).
        caps: `GetDecoderCaps` for the stream's codec, chroma format and bit depth.
        compute_capability: the GPU's (major, minor), or None if unknown.
        device_name: for messages.
    """
    what = f"{traits.bit_depth}-bit {traits.chroma_format[0]}:{traits.chroma_format[1]}:{traits.chroma_format[2]} {traits.codec}"
    if traits.codec == "av1" and compute_capability in _NO_AV1_COMPUTE_CAPABILITIES:
        return f"{device_name} (compute capability {compute_capability[0]}.{compute_capability[1]}) has no AV1 decoder"
    # Older PyNvVideoCodec builds may omit "supported": a decoder that exists reports a maximum size.
    supported = caps["supported"] if "supported" in caps else caps.get("width_max", 0) > 0
    if not supported:
        return f"{device_name}'s NVDEC does not decode {what} (GetDecoderCaps)"
    width, height = traits.width, traits.height
    min_w, min_h = int(caps.get("width_min", 0)), int(caps.get("height_min", 0))
    if width < min_w or height < min_h:
        return f"{width}x{height} is below {device_name}'s NVDEC minimum of {min_w}x{min_h} for {what}"
    max_w, max_h = int(caps.get("width_max", 0)), int(caps.get("height_max", 0))
    macroblocks = ((width + 15) // 16) * ((height + 15) // 16)
    max_blocks = int(caps.get("mb_num_max", 0))
    if (max_w and width > max_w) or (max_h and height > max_h) or (max_blocks and macroblocks > max_blocks):
        return f"{width}x{height} exceeds {device_name}'s NVDEC maximum of {max_w}x{max_h} for {what}"
    return ""


CapsQuery = Callable[[int, str, str, int], dict[str, int]]


class DecoderCapsCache:
    """`GetDecoderCaps` answers, asked once per (device, codec, chroma, depth):
    each query creates a CUDA context, which costs far more than a decode."""

    def __init__(self, query: CapsQuery) -> None:
        self._query = query
        self._answers: dict[tuple[int, str, str, int], dict[str, int]] = {}
        self._lock = threading.Lock()

    def get(self, device_index: int, codec: str, chroma_format: str, bit_depth: int) -> dict[str, int]:
        key = (device_index, codec, chroma_format, bit_depth)
        with self._lock:
            answer = self._answers.get(key)
            if answer is None:
                answer = self._answers[key] = dict(self._query(*key))
            return answer


def pynvvideocodec_caps_query(nvc: Any) -> CapsQuery:
    """A `CapsQuery` calling PyNvVideoCodec's `GetDecoderCaps`."""

    def query(device_index: int, codec: str, chroma_format: str, bit_depth: int) -> dict[str, int]:
        answer = nvc.GetDecoderCaps(
            gpuid=device_index,
            codec=getattr(nvc.cudaVideoCodec, NVDEC_CODECS[codec]),
            chromaformat=getattr(nvc.cudaVideoChromaFormat, chroma_format),
            bitdepth=bit_depth,
        )
        return {str(k): int(v) for k, v in dict(answer).items()}

    return query
