"""YUV -> RGB for NVDEC surfaces: which conversion, and its reference maths.

The conversion is chosen from the stream, as FFmpeg's swscale chooses it for
the CPU path (`cpu_fallback.rgb`): the colour matrix from `colorspace`
(unspecified -> BT.601) and the range from `color_range` (unspecified ->
limited; `yuvj*` formats are full range).

`reference_rgb` is the pure-torch statement of the maths the fused CUDA
kernel (`kernels.py`) performs, operation for operation, so the two agree
exactly; CI checks it against swscale's `rgb24` output. swscale takes one of
two paths, and so do we:

- 8-bit 4:2:0 and every 4:4:4 input: float32 maths, chroma upsampled
  nearest-neighbour (the sample at `x >> 1, y >> 1`), which is what swscale's
  unscaled (SIMD) 4:2:0 converter does at even sizes; results are truncated to
  uint8 for 8-bit 4:2:0 (that converter truncates; max |diff| 2) and rounded
  otherwise.
- 10- and 12-bit 4:2:0 (`ColourSpec.swscale_generic_path`): swscale has no
  unscaled converter for these and runs its generic scaler, which (a) filters
  chroma vertically with its bicubic filter (B=0, C=0.6) at centred chroma
  siting while keeping horizontal chroma pairs, (b) rounds Y, Cb and Cr to
  8 bits and (c) converts them with its integer lookup tables. We do the same
  integer operations (`TableCoefficients`, `SWSCALE_CHROMA_TAPS`), which is
  bit-exact with swscale for every even picture size whose chroma has at
  least 7 rows. The earlier float path with nearest chroma differed by up to
  45-69 on real 10-bit pictures (chroma edges) and by a mean of ~1.6 (the
  tables' luma offset).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
import torch

from framefeed.engine.backends.colour_range import is_full_range

# FFmpeg AVColorSpace value -> (name, Kr, Kb), mirroring swscale's
# `sws_getCoefficients`, which the CPU path calls: values it does not list
# (unspecified, reserved, YCgCo, anything newer) fall back to BT.601.
# (`SWSCALE_INVERSE_TABLES` holds the integers that function returns.)
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

# What swscale's `sws_getCoefficients` returns for each matrix: Cr->R, Cb->B,
# Cb->G and Cr->G as 16.16 fixed point scaled by 255/224 ("inverse table 6.9").
# Only the generic-scaler path uses them (its lookup tables are built from them).
SWSCALE_INVERSE_TABLES: dict[str, tuple[int, int, int, int]] = {
    "bt601": (104597, 132201, 25675, 53279),
    "bt709": (117489, 138438, 13975, 34925),
    "fcc": (104448, 132798, 24759, 53109),
    "smpte240m": (117579, 136230, 16907, 35559),
    "bt2020": (110013, 140363, 12277, 42626),
}

# swscale's vertical chroma filter for 4:2:0 -> full-height output (bicubic,
# B=0, C=0.6; chroma sited between luma rows; 12-bit coefficients summing to
# 4096). Output row y = 2k weighs chroma rows k-2 .. k+1, row y = 2k+1 rows
# k-1 .. k+2; rows outside the picture are clamped to its edge rows. Rows 0
# and 2 differ: swscale rounds their filter start toward zero, so one tap is
# lost and the rest renormalised; these are the coefficients it ends up with.
SWSCALE_CHROMA_TAPS: dict[str, tuple[int, int, int, int]] = {
    "even": (-115, 985, 3572, -346),
    "odd": (-346, 3572, 985, -115),
    "row0": (0, 0, 4432, -336),
    "row2": (0, 959, 3473, -336),
}
# The taps above are swscale's only while its filter keeps 5 taps, i.e. for
# chroma planes of at least 7 rows (NVDEC's smallest 10-bit picture has 64).
SWSCALE_MIN_CHROMA_ROWS = 7

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
    def swscale_generic_path(self) -> bool:
        """swscale converts this input with its generic scaler (vertical
        bicubic chroma, 8-bit lookup tables) rather than an unscaled converter:
        10- and 12-bit 4:2:0. The kernel then uses `table_coefficients`."""
        return self.bit_depth > 8 and self.chroma_shift_x == 1 and self.chroma_shift_y == 1

    def table_coefficients(self) -> TableCoefficients:
        """The integer constants of swscale's lookup-table converter for this
        matrix and range (what `ff_yuv2rgb_c_init_tables` builds for rgb24)."""
        cr_to_r, cb_to_b, cb_to_g, cr_to_g = SWSCALE_INVERSE_TABLES.get(self.matrix,
                                                                        SWSCALE_INVERSE_TABLES["bt601"])
        r_v, b_u, g_u, g_v = cr_to_r, cb_to_b, -cb_to_g, -cr_to_g
        if self.full_range:
            y_scale, y_offset, table_offset = 1 << 16, 0, 384
            r_v, b_u, g_u, g_v = (_c_div(v * 224, 255) for v in (r_v, b_u, g_u, g_v))
        else:
            y_scale, y_offset, table_offset = _c_div(255 << 16, 219), 16 << 16, 326
        # Chroma steps in units of the luma table's entries (contrast and
        # saturation are 1.0, brightness 0: what the CPU path asks for).
        r_v, b_u, g_u, g_v = (_c_div(v * (1 << 16) + 0x8000, y_scale) for v in (r_v, b_u, g_u, g_v))
        # Table entry i holds clip((-(384 << 16) - y_offset + i * y_scale + 0x8000) >> 16);
        # a pixel reads entry table_offset + Y + chroma terms.
        y_origin = -(384 << 16) - y_offset + table_offset * y_scale + 0x8000
        return TableCoefficients(
            y_origin=y_origin, y_scale=y_scale, r_from_cr=r_v, g_from_cb=g_u, g_from_cr=g_v, b_from_cb=b_u,
            r_bias=-(r_v >> 9), g_bias=-(g_u >> 9) - (g_v >> 9), b_bias=-(b_u >> 9),
            to_15_bits=15 - self.bit_depth,
        )

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
        table = self.table_coefficients() if self.swscale_generic_path else None
        return ConversionCoefficients(*(float(np.float32(v)) for v in values), table=table)


def _c_div(numerator: int, denominator: int) -> int:
    """C's integer division (truncates toward zero), as swscale computes."""
    quotient = abs(numerator) // abs(denominator)
    return quotient if (numerator >= 0) == (denominator > 0) else -quotient


@dataclass(frozen=True)
class TableCoefficients:
    """swscale's lookup-table converter as integer arithmetic.

    With Y, Cb, Cr already rounded to 8 bits,
    `R = clip((y_origin + (Y + ((Cr * r_from_cr) >> 16) + r_bias) * y_scale) >> 16, 0, 255)`,
    G likewise with both chroma terms, B with Cb (`>>` floors, as on int64).
    `to_15_bits` lifts the stored samples to the scaler's 15-bit intermediate.
    """

    y_origin: int
    y_scale: int
    r_from_cr: int
    g_from_cb: int
    g_from_cr: int
    b_from_cb: int
    r_bias: int
    g_bias: int
    b_bias: int
    to_15_bits: int

    def as_tuple(self) -> tuple[int, ...]:
        return (self.y_origin, self.y_scale, self.r_from_cr, self.g_from_cb, self.g_from_cr, self.b_from_cb,
                self.r_bias, self.g_bias, self.b_bias)


@dataclass(frozen=True)
class ConversionCoefficients:
    """float32-exact constants of the conversion (see `reference_rgb`).

    `table` is set for inputs on swscale's generic-scaler path
    (`ColourSpec.swscale_generic_path`): the kernel then uses those integer
    constants instead of the float ones."""

    y_offset: float
    y_scale: float
    c_offset: float
    c_scale: float
    r_from_cr: float
    g_from_cb: float
    g_from_cr: float
    b_from_cb: float
    bias: float
    table: TableCoefficients | None = None

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
    """RGB uint8 `(H, W, 3)` of one picture, the way the fused kernel computes it
    (a view of three channel planes: `.contiguous()` gives the packed layout).

    Args:
        luma: `(H, W)` integer samples.
        cb, cr: chroma samples, `(ceil(H / 2), ceil(W / 2))` for 4:2:0, `(H, W)` for 4:4:4.
        spec: the conversion.
        sample_shift: right shift that brings stored samples to `spec.bit_depth`
            bits (6 for 10-bit samples stored in 16 bits, as in P016).

    Raises:
        ValueError: a 10/12-bit 4:2:0 picture whose chroma has fewer than
            `SWSCALE_MIN_CHROMA_ROWS` rows (swscale's filter differs there).
    """
    if spec.swscale_generic_path:
        return _reference_rgb_generic_path(luma, cb, cr, spec, sample_shift)
    height, width = luma.shape
    k = _float32_constants(spec)
    y = (_samples(luma, sample_shift) - k.y_offset) * k.y_scale
    # Each chroma sample's steps are the same float32 operations whichever
    # luma sample they meet, so they run once per chroma sample, then spread.
    u = _at_luma_size((_samples(cb, sample_shift) - k.c_offset) * k.c_scale, spec, height, width)
    v = _at_luma_size((_samples(cr, sample_shift) - k.c_offset) * k.c_scale, spec, height, width)
    rgb = torch.empty((3, height, width), dtype=torch.float32)
    torch.add(y, k.r_from_cr * v, out=rgb[0])
    torch.add(y + k.g_from_cb * u, k.g_from_cr * v, out=rgb[1])
    torch.add(y, k.b_from_cb * u, out=rgb[2])
    rgb.add_(k.bias).clamp_(0.0, 255.0)
    # In range, so the cast truncates. Channel planes viewed as (H, W, 3).
    return rgb.to(torch.uint8).permute(1, 2, 0)


def _at_luma_size(plane: torch.Tensor, spec: ColourSpec, height: int, width: int) -> torch.Tensor:
    """`(height, width)`: at each luma sample, the chroma sample at
    `(y >> chroma_shift_y, x >> chroma_shift_x)`."""
    sy, sx = 1 << spec.chroma_shift_y, 1 << spec.chroma_shift_x
    if sy == sx == 1:
        return plane[:height, :width]
    # Nearest-neighbour by an integer factor reads source `x * factor // factor`,
    # i.e. `x >> shift`: a copy, no arithmetic.
    spread = torch.nn.functional.interpolate(plane[None, None], scale_factor=(sy, sx), mode="nearest")
    return spread[0, 0, :height, :width]


@functools.lru_cache(maxsize=64)
def _float32_constants(spec: ColourSpec) -> ConversionCoefficients:
    """`spec.coefficients()` with each constant a 0-dim float32 tensor (the
    operands of the reference maths: every step a float32 operation)."""
    c = spec.coefficients()
    return ConversionCoefficients(*(torch.tensor(value, dtype=torch.float32) for value in c.as_tuple()),
                                  table=c.table)


def _samples(plane: torch.Tensor, sample_shift: int) -> torch.Tensor:
    """Stored samples as float32 at the spec's bit depth."""
    if sample_shift:
        plane = plane.to(torch.int32) >> sample_shift
    return plane.to(torch.float32)  # exact: integers below 2**24


INV_255 = float(np.float32(1.0 / 255.0))
"""float32(1 / 255): float output is the 0-255 value, clamped, times this."""


def reference_rgb_float(luma: torch.Tensor, cb: torch.Tensor, cr: torch.Tensor, spec: ColourSpec,
                        *, sample_shift: int = 0) -> torch.Tensor:
    """float32 RGB in [0, 1], `(H, W, 3)`, of one picture, the way the fused
    kernel's float output (`output_dtype=torch.float32`) computes it.

    Nothing is rounded to 8 bits: samples keep their precision (10 and 12
    bits), and the float32 matrix of `coefficients()` (without its rounding
    bias) gives the 0-255 value, clamped and scaled by `INV_255`, so the
    nominal white of either range is 1.0 (as in torchcodec 0.17's CUDA
    output). Chroma is sampled as swscale samples it for these inputs:
    10/12-bit 4:2:0 (`swscale_generic_path`) filtered vertically with its
    bicubic taps (`SWSCALE_CHROMA_TAPS`, rows clamped to the plane) and shared
    by horizontal pairs; 8-bit 4:2:0 nearest (`x >> 1, y >> 1`); 4:4:4 as is.
    Each step is one float32 operation in the kernel's order, so the two
    agree exactly.

    The CPU path's float32 (swscale's 16-bit RGB / 65535, torchcodec 0.17's
    CPU values) scales slightly differently: limited-range white is
    65283/65535 there, 8-bit 4:2:0 goes through 8 bits. The two stay within
    about 3/255 (`tests/test_output_dtype.py`).

    Arguments as `reference_rgb`.
    """
    height, width = luma.shape
    k = _float32_constants(spec)

    def samples(plane: torch.Tensor) -> torch.Tensor:
        return _samples(plane, sample_shift)

    if spec.swscale_generic_path:
        cols = torch.arange(width) >> spec.chroma_shift_x
        rows, weights = swscale_chroma_rows(height, cb.shape[0])
        weights = (weights.to(torch.float32) / 4096.0)[:, :, None]  # exact: integers over a power of two

        def chroma(plane: torch.Tensor) -> torch.Tensor:
            values = samples(plane)[:, cols]
            total = torch.zeros((height, width), dtype=torch.float32)
            for tap in range(4):
                total = total + weights[:, tap] * values[rows[:, tap]]
            return total
    else:
        def chroma(plane: torch.Tensor) -> torch.Tensor:
            return _at_luma_size(samples(plane), spec, height, width)

    y = (samples(luma) - k.y_offset) * k.y_scale
    u = (chroma(cb) - k.c_offset) * k.c_scale
    v = (chroma(cr) - k.c_offset) * k.c_scale
    red = y + k.r_from_cr * v
    green = y + k.g_from_cb * u + k.g_from_cr * v
    blue = y + k.b_from_cb * u
    rgb = torch.stack((red, green, blue), dim=-1).clamp_(0.0, 255.0)
    return rgb * torch.tensor(INV_255, dtype=torch.float32)


def swscale_chroma_rows(height: int, chroma_height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For each of `height` output rows, the 4 chroma rows swscale's vertical
    filter reads (clamped to the plane) and their 12-bit weights: `(height, 4)`
    int64 tensors (see `SWSCALE_CHROMA_TAPS`)."""
    y = torch.arange(height)
    odd = (y & 1) == 1
    first = (y >> 1) - torch.where(odd, 1, 2)
    rows = (first[:, None] + torch.arange(4)).clamp_(0, chroma_height - 1)
    weights = torch.tensor(SWSCALE_CHROMA_TAPS["even"]).repeat(height, 1)
    weights[odd] = torch.tensor(SWSCALE_CHROMA_TAPS["odd"])
    weights[0] = torch.tensor(SWSCALE_CHROMA_TAPS["row0"])
    if height > 2:
        weights[2] = torch.tensor(SWSCALE_CHROMA_TAPS["row2"])
    return rows, weights


def _reference_rgb_generic_path(luma: torch.Tensor, cb: torch.Tensor, cr: torch.Tensor, spec: ColourSpec,
                                sample_shift: int) -> torch.Tensor:
    """swscale's generic scaler for 10/12-bit 4:2:0 -> rgb24, in integers."""
    height, width = luma.shape
    chroma_height = cb.shape[0]
    if chroma_height < SWSCALE_MIN_CHROMA_ROWS:
        raise ValueError(f"a {width}x{height} 4:2:0 picture has {chroma_height} chroma rows; the "
                         f"swscale-exact conversion needs at least {SWSCALE_MIN_CHROMA_ROWS}")
    t = spec.table_coefficients()

    def to_15_bits(plane: torch.Tensor) -> torch.Tensor:
        return (plane.to(torch.int64) >> sample_shift) << t.to_15_bits

    # Luma passes the scaler unfiltered: (Y15 * 4096 + 2^18) >> 19, not clipped
    # (the tables have headroom for 256).
    y8 = (to_15_bits(luma) + 64) >> 7
    rows, weights = swscale_chroma_rows(height, chroma_height)
    cols = torch.arange(width) >> 1  # horizontal chroma pairs, unfiltered

    def chroma(plane: torch.Tensor) -> torch.Tensor:
        filtered = (to_15_bits(plane)[rows] * weights[:, :, None]).sum(dim=1) + (1 << 18)
        return (filtered >> 19).clamp_(0, 255)[:, cols]

    u8, v8 = chroma(cb), chroma(cr)

    def table(index: torch.Tensor) -> torch.Tensor:
        return ((t.y_origin + index * t.y_scale) >> 16).clamp_(0, 255)

    red = table(y8 + ((v8 * t.r_from_cr) >> 16) + t.r_bias)
    green = table(y8 + ((u8 * t.g_from_cb) >> 16) + ((v8 * t.g_from_cr) >> 16) + t.g_bias)
    blue = table(y8 + ((u8 * t.b_from_cb) >> 16) + t.b_bias)
    return torch.stack((red, green, blue), dim=-1).to(torch.uint8)
