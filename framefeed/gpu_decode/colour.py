"""YUV -> RGB for NVDEC surfaces: which conversion, and its reference maths.

The conversion is chosen from the stream, as FFmpeg's swscale chooses it for
the CPU path (`cpu_fallback.rgb`): the colour matrix from `colorspace`
(unspecified -> BT.601) and the range from `color_range` (unspecified ->
limited; `yuvj*` formats are full range).

`reference_rgb` is the pure-torch statement of the maths the fused CUDA
kernel (`kernels.py`) performs, operation for operation in float32, so the
two agree exactly; CI checks it against swscale's `rgb24` output. Chroma is
upsampled nearest-neighbour (the sample at `x >> 1, y >> 1`), which is what
swscale's unscaled 4:2:0 path does at even sizes; results are truncated to
uint8 for 8-bit 4:2:0 (swscale's table-driven converter truncates; max
|diff| 2) and rounded otherwise (swscale's generic path rounds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import av
import numpy as np
import torch

from framefeed._colour import is_full_range

# FFmpeg AVColorSpace value -> (name, Kr, Kb), mirroring swscale's
# `sws_getCoefficients`, which the CPU path calls: values it does not list
# (unspecified, reserved, YCgCo, anything newer) fall back to BT.601.
_BT601 = ("bt601", 0.299, 0.114)
_MATRICES: dict[int, tuple[str, float, float]] = {
    1: ("bt709", 0.2126, 0.0722),
    4: ("fcc", 0.30, 0.11),
    5: _BT601,  # bt470bg
    6: _BT601,  # smpte170m
    7: ("smpte240m", 0.212, 0.087),
    9: ("bt2020", 0.2627, 0.0593),  # non-constant luminance
    10: ("bt2020", 0.2627, 0.0593),  # swscale uses the NCL matrix for CL too
}
_AVCOL_SPC_RGB = 0

# Surface formats of NVDEC's native output that the kernel reads.
SURFACE_FORMATS = ("NV12", "P016", "YUV444", "YUV444_16Bit")


@dataclass(frozen=True)
class ColourSpec:
    """How one stream's pictures become RGB.

    Attributes:
        matrix: name of the YCbCr matrix ("bt601", "bt709", ...).
        kr, kb: the matrix's luma weights of red and blue.
        full_range: samples use the full range (else limited: Y 16-235, C 16-240 at 8 bits).
        bit_depth: significant bits per sample (8, 10 or 12).
        chroma_shift_x, chroma_shift_y: log2 of the chroma subsampling (1, 1 for 4:2:0).
    """

    matrix: str
    kr: float
    kb: float
    full_range: bool
    bit_depth: int
    chroma_shift_x: int
    chroma_shift_y: int

    @property
    def rounding_bias(self) -> float:
        """Added before truncating to uint8: 0 (truncate) for 8-bit 4:2:0, 0.5 (round) otherwise."""
        return 0.0 if self.bit_depth == 8 and self.chroma_shift_x and self.chroma_shift_y else 0.5

    def coefficients(self) -> ConversionCoefficients:
        """The float32 constants both the kernel and the reference use."""
        kr, kb = self.kr, self.kb
        kg = 1.0 - kr - kb
        step = 1 << (self.bit_depth - 8)
        if self.full_range:
            top = float((1 << self.bit_depth) - 1)
            y_offset, y_scale = 0.0, 255.0 / top
            c_offset, c_scale = float(1 << (self.bit_depth - 1)), 255.0 / top
        else:
            y_offset, y_scale = 16.0 * step, 255.0 / (219.0 * step)
            c_offset, c_scale = 128.0 * step, 255.0 / (224.0 * step)
        values = (y_offset, y_scale, c_offset, c_scale,
                  2.0 * (1.0 - kr),               # R from Cr
                  -2.0 * kb * (1.0 - kb) / kg,    # G from Cb
                  -2.0 * kr * (1.0 - kr) / kg,    # G from Cr
                  2.0 * (1.0 - kb),               # B from Cb
                  self.rounding_bias)
        return ConversionCoefficients(*(float(np.float32(v)) for v in values))


@dataclass(frozen=True)
class ConversionCoefficients:
    """float32-exact constants of the conversion (see `reference_rgb`)."""

    y_offset: float
    y_scale: float
    c_offset: float
    c_scale: float
    r_from_cr: float
    g_from_cb: float
    g_from_cr: float
    b_from_cb: float
    bias: float

    def as_tuple(self) -> tuple[float, ...]:
        return (self.y_offset, self.y_scale, self.c_offset, self.c_scale, self.r_from_cr,
                self.g_from_cb, self.g_from_cr, self.b_from_cb, self.bias)


def colour_spec_for_stream(stream: Any) -> tuple[ColourSpec | None, str]:
    """The conversion for a PyAV video stream, or (None, reason) when the
    kernel cannot reproduce what the CPU path outputs."""
    ctx = stream.codec_context
    fmt = ctx.format
    if fmt is None:
        return None, "the stream declares no pixel format"
    colorspace = 2 if ctx.colorspace is None else int(ctx.colorspace)  # 0 is RGB: no `or` here
    return colour_spec_for(fmt.name, colorspace, int(ctx.color_range or 0))


def colour_spec_for(pixel_format: str, colorspace: int, color_range: int) -> tuple[ColourSpec | None, str]:
    """The conversion for a pixel format name and FFmpeg's colour-space and
    colour-range numbers, or (None, reason)."""
    try:
        fmt = av.VideoFormat(pixel_format)
    except (ValueError, av.error.FFmpegError):
        return None, f"unknown pixel format {pixel_format!r}"
    components = fmt.components
    if fmt.is_rgb or colorspace == _AVCOL_SPC_RGB:
        return None, f"pixel format {pixel_format} codes RGB, not YCbCr"
    if len(components) < 3 or any(c.is_alpha for c in components):
        return None, f"pixel format {pixel_format} is not 3-component YCbCr"
    bit_depth = components[0].bits
    if bit_depth not in (8, 10, 12):
        return None, f"{bit_depth}-bit samples ({pixel_format})"
    shift_x = (1024 // fmt.chroma_width(1024)).bit_length() - 1  # log2 of the subsampling
    shift_y = (1024 // fmt.chroma_height(1024)).bit_length() - 1
    if (shift_x, shift_y) not in ((1, 1), (0, 0)):
        return None, f"chroma subsampling of {pixel_format} (only 4:2:0 and 4:4:4 surfaces are converted)"
    name, kr, kb = _MATRICES.get(colorspace, _BT601)
    full = is_full_range(pixel_format, color_range)
    return ColourSpec(name, kr, kb, full, bit_depth, shift_x, shift_y), ""


def surface_format_for(spec: ColourSpec) -> str:
    """NVDEC's native surface format for pictures of this spec."""
    wide = spec.bit_depth > 8
    if spec.chroma_shift_x:
        return "P016" if wide else "NV12"
    return "YUV444_16Bit" if wide else "YUV444"


def native_planes(surface: torch.Tensor, surface_format: str, height: int, width: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Y, Cb, Cr views of a native NVDEC surface held as one tensor.

    NV12/P016: `(height * 3 // 2, width)`, Y rows then rows of interleaved
    Cb, Cr pairs. YUV444/YUV444_16Bit: `(3 * height, width)`, the Y, Cb and
    Cr planes one after another. 16-bit formats hold their samples in the
    most significant bits (10-bit: `v << 6`).
    """
    if surface_format in ("NV12", "P016"):
        luma = surface[:height, :width]
        pairs = surface[height : height + (height + 1) // 2, : 2 * ((width + 1) // 2)]
        pairs = pairs.reshape(pairs.shape[0], -1, 2)
        return luma, pairs[..., 0], pairs[..., 1]
    if surface_format in ("YUV444", "YUV444_16Bit"):
        return surface[:height, :width], surface[height : 2 * height, :width], surface[2 * height : 3 * height, :width]
    raise ValueError(f"unsupported surface format {surface_format!r}; expected one of {SURFACE_FORMATS}")


def reference_rgb(luma: torch.Tensor, cb: torch.Tensor, cr: torch.Tensor, spec: ColourSpec,
                  *, sample_shift: int = 0) -> torch.Tensor:
    """RGB uint8 `(H, W, 3)` of one picture, the way the fused kernel computes it.

    Args:
        luma: `(H, W)` integer samples.
        cb, cr: chroma samples, `(ceil(H / 2), ceil(W / 2))` for 4:2:0, `(H, W)` for 4:4:4.
        spec: the conversion.
        sample_shift: right shift that brings stored samples to `spec.bit_depth`
            bits (6 for 10-bit samples stored in 16 bits, as in P016).
    """
    height, width = luma.shape
    rows = torch.arange(height) >> spec.chroma_shift_y
    cols = torch.arange(width) >> spec.chroma_shift_x
    c = spec.coefficients()

    def samples(plane: torch.Tensor) -> torch.Tensor:
        return (plane.to(torch.int32) >> sample_shift).to(torch.float32)

    def f32(value: float) -> torch.Tensor:
        return torch.tensor(value, dtype=torch.float32)

    y = (samples(luma) - f32(c.y_offset)) * f32(c.y_scale)
    u = (samples(cb)[rows][:, cols] - f32(c.c_offset)) * f32(c.c_scale)
    v = (samples(cr)[rows][:, cols] - f32(c.c_offset)) * f32(c.c_scale)
    red = y + f32(c.r_from_cr) * v
    green = y + f32(c.g_from_cb) * u + f32(c.g_from_cr) * v
    blue = y + f32(c.b_from_cb) * u
    rgb = torch.stack((red, green, blue), dim=-1) + f32(c.bias)
    return rgb.clamp_(0.0, 255.0).to(torch.uint8)  # in range, so the cast truncates
