"""The fused YUV -> RGB CUDA kernels (CuPy RawKernel).

One launch reads a decoder surface in its native layout (NV12, P016,
YUV444, YUV444_16Bit), converts with `colour.reference_rgb`'s maths and
writes uint8 RGB straight into the output tensor. Two conversions exist, as
in swscale (see `colour`): float32 maths (the same operations in the same
order as the torch reference, no fused multiply-adds) for 8-bit 4:2:0 and
4:4:4 surfaces, and swscale's generic-scaler integer path (vertical bicubic
chroma, 8-bit lookup-table arithmetic) for 10/12-bit 4:2:0 (P016) surfaces.
For `output_dtype=torch.float32` the `*_rgbf_*` kernels write float32 in
[0, 1] instead, from the samples at full precision (nothing is rounded to
8 bits; `colour.reference_rgb_float`).

The destination is addressed through a `DestinationWalk`: the element
offset of the source pixel (0, 0) plus element steps per source row, source
column and channel. That single description covers channels-last and
channels-first output slots and folds the display rotation into the index
arithmetic, so no intermediate image is ever materialised.

Each conversion is a per-pixel functor (`FloatPathPixel`, `SwscalePixel`).
The `*_resampled` kernels run one thread per *output* pixel instead: they
apply decoder transforms (crops and antialiased bilinear resizes, after
rotation) in the same launch, summing converted picture pixels with the
weights of `resampling`'s tap tables (`ResampleTables`) and rounding once;
picture pixels are read through the rotation (`picture_to_source`) and the
walk is the output slot's own.

CuPy is imported lazily (only when a kernel is launched).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from framefeed.engine.backends.gpu_decode.colour import (
    SWSCALE_CHROMA_TAPS,
    ConversionCoefficients,
    TableCoefficients,
)
from framefeed.engine.backends.gpu_decode.resampling import (
    Resampling,
    picture_to_source,
    rotated_size,
)
from framefeed.engine.backends.gpu_decode.surfaces import SurfacePlanes

_ARGS = """
    const unsigned char* __restrict__ luma, long long luma_pitch,
    const unsigned char* __restrict__ cb, const unsigned char* __restrict__ cr,
    long long chroma_pitch, long long chroma_step,
    int chroma_shift_x, int chroma_shift_y, int sample_shift, int width, int height,
    unsigned char* __restrict__ dst, long long origin, long long step_row,
    long long step_col, long long step_channel,
    float y_offset, float y_scale, float c_offset, float c_scale,
    float r_from_cr, float g_from_cb, float g_from_cr, float b_from_cb, float bias"""

_FORWARD = """luma, luma_pitch, cb, cr, chroma_pitch, chroma_step, chroma_shift_x,
    chroma_shift_y, sample_shift, width, height, dst, origin, step_row, step_col, step_channel,
    y_offset, y_scale, c_offset, c_scale, r_from_cr, g_from_cb, g_from_cr, b_from_cb, bias"""

# swscale's generic scaler for 10/12-bit 4:2:0 (P016 surfaces), in the same
# integer steps as `colour._reference_rgb_generic_path`.
_GENERIC_ARGS = """
    const unsigned char* __restrict__ luma, long long luma_pitch,
    const unsigned char* __restrict__ cb, const unsigned char* __restrict__ cr,
    long long chroma_pitch, long long chroma_step, int sample_shift, int to_15_bits,
    int width, int height,
    unsigned char* __restrict__ dst, long long origin, long long step_row,
    long long step_col, long long step_channel,
    int y_origin, int y_scale, int r_from_cr, int g_from_cb, int g_from_cr, int b_from_cb,
    int r_bias, int g_bias, int b_bias"""

_GENERIC_FORWARD = """luma, luma_pitch, cb, cr, chroma_pitch, chroma_step, sample_shift, to_15_bits,
    width, height, dst, origin, step_row, step_col, step_channel,
    y_origin, y_scale, r_from_cr, g_from_cb, g_from_cr, b_from_cb, r_bias, g_bias, b_bias"""


# The arguments a resampled kernel takes after the destination walk (which is
# then the output's own, unrotated): the sampling tables (see `resampling`),
# the output size and where picture pixel (i, j) lies in the source.
_RESAMPLE_ARGS = """
    const int* __restrict__ rows_span, const float* __restrict__ rows_weights, int rows_stride,
    const int* __restrict__ cols_span, const float* __restrict__ cols_weights, int cols_stride,
    int out_width, int out_height,
    int src_r0, int src_r_i, int src_r_j, int src_c0, int src_c_i, int src_c_j"""

_RESAMPLE_FORWARD = """rows_span, rows_weights, rows_stride, cols_span, cols_weights, cols_stride,
    out_width, out_height, src_r0, src_r_i, src_r_j, src_c0, src_c_i, src_c_j"""

_RESAMPLED_ARGS = """
    const unsigned char* __restrict__ luma, long long luma_pitch,
    const unsigned char* __restrict__ cb, const unsigned char* __restrict__ cr,
    long long chroma_pitch, long long chroma_step,
    int chroma_shift_x, int chroma_shift_y, int sample_shift, int width, int height,
    unsigned char* __restrict__ dst, long long origin, long long step_row,
    long long step_col, long long step_channel,""" + _RESAMPLE_ARGS + """,
    float y_offset, float y_scale, float c_offset, float c_scale,
    float r_from_cr, float g_from_cb, float g_from_cr, float b_from_cb, float bias"""

_RESAMPLED_FORWARD = """luma, luma_pitch, cb, cr, chroma_pitch, chroma_step, chroma_shift_x,
    chroma_shift_y, sample_shift, width, height, dst, origin, step_row, step_col, step_channel,
    """ + _RESAMPLE_FORWARD + """,
    y_offset, y_scale, c_offset, c_scale, r_from_cr, g_from_cb, g_from_cr, b_from_cb, bias"""

_GENERIC_RESAMPLED_ARGS = """
    const unsigned char* __restrict__ luma, long long luma_pitch,
    const unsigned char* __restrict__ cb, const unsigned char* __restrict__ cr,
    long long chroma_pitch, long long chroma_step, int sample_shift, int to_15_bits,
    int width, int height,
    unsigned char* __restrict__ dst, long long origin, long long step_row,
    long long step_col, long long step_channel,""" + _RESAMPLE_ARGS + """,
    int y_origin, int y_scale, int r_from_cr, int g_from_cb, int g_from_cr, int b_from_cb,
    int r_bias, int g_bias, int b_bias"""

_GENERIC_RESAMPLED_FORWARD = """luma, luma_pitch, cb, cr, chroma_pitch, chroma_step, sample_shift, to_15_bits,
    width, height, dst, origin, step_row, step_col, step_channel,
    """ + _RESAMPLE_FORWARD + """,
    y_origin, y_scale, r_from_cr, g_from_cb, g_from_cr, b_from_cb, r_bias, g_bias, b_bias"""

# The members of the per-pixel converters, in the order kernels initialise them.
_FLOAT_PIXEL_INIT = """{luma, luma_pitch, cb, cr, chroma_pitch, chroma_step, chroma_shift_x, chroma_shift_y,
        sample_shift, y_offset, y_scale, c_offset, c_scale, r_from_cr, g_from_cb, g_from_cr, b_from_cb, bias}"""

_GENERIC_PIXEL_INIT = """{luma, luma_pitch, cb, cr, chroma_pitch, chroma_step, sample_shift, to_15_bits, height,
        y_origin, y_scale, r_from_cr, g_from_cb, g_from_cr, b_from_cb, r_bias, g_bias, b_bias}"""


def _taps(name: str) -> str:
    return ", ".join(str(v) for v in SWSCALE_CHROMA_TAPS[name])


_GENERIC_PATH_SOURCE = (
    r"""
__device__ __forceinline__ int sample_15(const unsigned char* base, long long offset, int sample_shift,
                                         int to_15_bits) {
    return ((int)(*(const unsigned short*)(base + offset)) >> sample_shift) << to_15_bits;
}

// One entry of swscale's rgb24 lookup table: clip((origin + index * scale) >> 16).
// (>> of a negative int is an arithmetic shift, as swscale relies on.)
__device__ __forceinline__ unsigned char table_entry(int index, int y_origin, int y_scale) {
    const int v = (y_origin + index * y_scale) >> 16;
    return (unsigned char)(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// One pixel of a 10/12-bit 4:2:0 picture as swscale's generic scaler converts it.
struct SwscalePixel {
    const unsigned char* luma; long long luma_pitch;
    const unsigned char* cb; const unsigned char* cr;
    long long chroma_pitch, chroma_step;
    int sample_shift, to_15_bits, height;
    int y_origin, y_scale, r_from_cr, g_from_cb, g_from_cr, b_from_cb, r_bias, g_bias, b_bias;

    __device__ __forceinline__ void operator()(int x, int y, unsigned char* rgb) const {
        const int y8 = (sample_15(luma, (long long)y * luma_pitch + 2LL * x, sample_shift, to_15_bits) + 64) >> 7;

        // Vertical bicubic chroma filter (12-bit weights), rows clamped to the plane.
        const int even_taps[4] = {""" + _taps("even") + r"""};
        const int odd_taps[4] = {""" + _taps("odd") + r"""};
        const int row0_taps[4] = {""" + _taps("row0") + r"""};
        const int row2_taps[4] = {""" + _taps("row2") + r"""};
        const int* taps = (y & 1) ? odd_taps : (y == 0 ? row0_taps : (y == 2 ? row2_taps : even_taps));
        const int first = (y >> 1) - ((y & 1) ? 1 : 2);
        const int last_row = ((height + 1) >> 1) - 1;
        const long long column = (long long)(x >> 1) * chroma_step;
        int u_sum = 1 << 18, v_sum = 1 << 18;
        for (int k = 0; k < 4; ++k) {
            int row = first + k;
            row = row < 0 ? 0 : (row > last_row ? last_row : row);
            const long long c = (long long)row * chroma_pitch + column;
            u_sum += taps[k] * sample_15(cb, c, sample_shift, to_15_bits);
            v_sum += taps[k] * sample_15(cr, c, sample_shift, to_15_bits);
        }
        int u8 = u_sum >> 19, v8 = v_sum >> 19;
        u8 = u8 < 0 ? 0 : (u8 > 255 ? 255 : u8);
        v8 = v8 < 0 ? 0 : (v8 > 255 ? 255 : v8);

        const int r = y8 + ((v8 * r_from_cr) >> 16) + r_bias;
        const int g = y8 + ((u8 * g_from_cb) >> 16) + ((v8 * g_from_cr) >> 16) + g_bias;
        const int b = y8 + ((u8 * b_from_cb) >> 16) + b_bias;
        rgb[0] = table_entry(r, y_origin, y_scale);
        rgb[1] = table_entry(g, y_origin, y_scale);
        rgb[2] = table_entry(b, y_origin, y_scale);
    }
};

extern "C" __global__ void yuv420_16bit_to_rgb_swscale(""" + _GENERIC_ARGS + r""")
{
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= width || y >= height) return;
    const SwscalePixel pixel = """ + _GENERIC_PIXEL_INIT + r""";
    unsigned char rgb[3];
    pixel(x, y, rgb);
    const long long o = origin + (long long)y * step_row + (long long)x * step_col;
    dst[o] = rgb[0];
    dst[o + step_channel] = rgb[1];
    dst[o + 2 * step_channel] = rgb[2];
}

extern "C" __global__ void yuv420_16bit_to_rgb_swscale_resampled(""" + _GENERIC_RESAMPLED_ARGS + r""")
{
    const SwscalePixel pixel = """ + _GENERIC_PIXEL_INIT + r""";
    resample(pixel, dst, origin, step_row, step_col, step_channel, """ + _RESAMPLE_FORWARD + r""");
}
"""
)

_FLOAT_OUT_ARGS = _ARGS.replace("unsigned char* __restrict__ dst", "float* __restrict__ dst")
_FLOAT_OUT_RESAMPLED_ARGS = _RESAMPLED_ARGS.replace("unsigned char* __restrict__ dst", "float* __restrict__ dst")

_FLOAT_OUT_PIXEL_INIT = """{luma, luma_pitch, cb, cr, chroma_pitch, chroma_step, chroma_shift_x, chroma_shift_y,
        sample_shift, height, y_offset, y_scale, c_offset, c_scale, r_from_cr, g_from_cb, g_from_cr, b_from_cb}"""


def _float_taps(name: str) -> str:
    return ", ".join(f"{v}.0f / 4096.0f" for v in SWSCALE_CHROMA_TAPS[name])


# float32 output in [0, 1] (`output_dtype=torch.float32`), `colour.reference_rgb_float`
# operation for operation: samples at full precision, no rounding to 8 bits. These
# kernels take the float path's arguments with a float destination; they add no
# rounding bias (`bias` is unused).
_FLOAT_OUTPUT_SOURCE = (
    r"""
__device__ __forceinline__ float to_unit(float v) {
    return __fmul_rn(fminf(fmaxf(v, 0.0f), 255.0f), """ + f"{np.float32(1 / 255):.9e}f" + r""");
}

// One pixel as float32 RGB in [0, 1]. Filtered: 10/12-bit 4:2:0, chroma through
// swscale's vertical bicubic taps (rows clamped) and shared by horizontal pairs;
// otherwise the chroma sample at (x >> shift_x, y >> shift_y).
template <typename Sample, bool Filtered>
struct FloatOutputPixel {
    const unsigned char* luma; long long luma_pitch;
    const unsigned char* cb; const unsigned char* cr;
    long long chroma_pitch, chroma_step;
    int chroma_shift_x, chroma_shift_y, sample_shift, height;
    float y_offset, y_scale, c_offset, c_scale, r_from_cr, g_from_cb, g_from_cr, b_from_cb;

    __device__ __forceinline__ float chroma(const unsigned char* plane, int x, int y) const {
        const long long column = (long long)(x >> chroma_shift_x) * chroma_step;
        if (!Filtered) {
            return (float)load_sample<Sample>(plane, (long long)(y >> chroma_shift_y) * chroma_pitch + column,
                                              sample_shift);
        }
        const float even_taps[4] = {""" + _float_taps("even") + r"""};
        const float odd_taps[4] = {""" + _float_taps("odd") + r"""};
        const float row0_taps[4] = {""" + _float_taps("row0") + r"""};
        const float row2_taps[4] = {""" + _float_taps("row2") + r"""};
        const float* taps = (y & 1) ? odd_taps : (y == 0 ? row0_taps : (y == 2 ? row2_taps : even_taps));
        const int first = (y >> 1) - ((y & 1) ? 1 : 2);
        const int last_row = ((height + 1) >> 1) - 1;
        float total = 0.0f;
        for (int k = 0; k < 4; ++k) {
            int row = first + k;
            row = row < 0 ? 0 : (row > last_row ? last_row : row);
            const float sample = (float)load_sample<Sample>(plane, (long long)row * chroma_pitch + column, sample_shift);
            total = __fadd_rn(total, __fmul_rn(taps[k], sample));
        }
        return total;
    }

    __device__ __forceinline__ void operator()(int x, int y, float* rgb) const {
        const int ys = load_sample<Sample>(luma, (long long)y * luma_pitch + (long long)x * (long long)sizeof(Sample), sample_shift);
        const float yf = __fmul_rn(__fsub_rn((float)ys, y_offset), y_scale);
        const float uf = __fmul_rn(__fsub_rn(chroma(cb, x, y), c_offset), c_scale);
        const float vf = __fmul_rn(__fsub_rn(chroma(cr, x, y), c_offset), c_scale);
        rgb[0] = to_unit(__fadd_rn(yf, __fmul_rn(r_from_cr, vf)));
        rgb[1] = to_unit(__fadd_rn(__fadd_rn(yf, __fmul_rn(g_from_cb, uf)), __fmul_rn(g_from_cr, vf)));
        rgb[2] = to_unit(__fadd_rn(yf, __fmul_rn(b_from_cb, uf)));
    }
};

template <typename Sample, bool Filtered>
__device__ __forceinline__ void yuv_to_rgbf(""" + _FLOAT_OUT_ARGS + r""")
{
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= width || y >= height) return;
    const FloatOutputPixel<Sample, Filtered> pixel = """ + _FLOAT_OUT_PIXEL_INIT + r""";
    float rgb[3];
    pixel(x, y, rgb);
    const long long o = origin + (long long)y * step_row + (long long)x * step_col;
    dst[o] = rgb[0];
    dst[o + step_channel] = rgb[1];
    dst[o + 2 * step_channel] = rgb[2];
}

// As `resample`, summing float pixels and storing the sums (no rounding: the
// weights are positive, so values stay in [0, 1]).
template <typename Pixel>
__device__ __forceinline__ void resample_float(const Pixel& pixel, float* __restrict__ dst, long long origin,
                                               long long step_row, long long step_col, long long step_channel,""" + _RESAMPLE_ARGS + r""")
{
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    const int i = blockIdx.y * blockDim.y + threadIdx.y;
    if (j >= out_width || i >= out_height) return;
    const int row_first = rows_span[2 * i], row_count = rows_span[2 * i + 1];
    const int col_first = cols_span[2 * j], col_count = cols_span[2 * j + 1];
    const float* row_weights = rows_weights + (long long)i * rows_stride;
    const float* col_weights = cols_weights + (long long)j * cols_stride;
    float red = 0.0f, green = 0.0f, blue = 0.0f;
    for (int ky = 0; ky < row_count; ++ky) {
        const int pi = row_first + ky;
        const int row_base = src_r0 + src_r_i * pi, col_base = src_c0 + src_c_i * pi;
        float row_red = 0.0f, row_green = 0.0f, row_blue = 0.0f;
        for (int kx = 0; kx < col_count; ++kx) {
            const int pj = col_first + kx;
            float rgb[3];
            pixel(col_base + src_c_j * pj, row_base + src_r_j * pj, rgb);
            const float w = col_weights[kx];
            row_red = __fadd_rn(row_red, __fmul_rn(w, rgb[0]));
            row_green = __fadd_rn(row_green, __fmul_rn(w, rgb[1]));
            row_blue = __fadd_rn(row_blue, __fmul_rn(w, rgb[2]));
        }
        const float w = row_weights[ky];
        red = __fadd_rn(red, __fmul_rn(w, row_red));
        green = __fadd_rn(green, __fmul_rn(w, row_green));
        blue = __fadd_rn(blue, __fmul_rn(w, row_blue));
    }
    const long long o = origin + (long long)i * step_row + (long long)j * step_col;
    dst[o] = red;
    dst[o + step_channel] = green;
    dst[o + 2 * step_channel] = blue;
}

template <typename Sample, bool Filtered>
__device__ __forceinline__ void yuv_to_rgbf_resampled(""" + _FLOAT_OUT_RESAMPLED_ARGS + r""")
{
    const FloatOutputPixel<Sample, Filtered> pixel = """ + _FLOAT_OUT_PIXEL_INIT + r""";
    resample_float(pixel, dst, origin, step_row, step_col, step_channel, """ + _RESAMPLE_FORWARD + r""");
}

extern "C" __global__ void yuv_to_rgbf_8bit(""" + _FLOAT_OUT_ARGS + r""") {
    yuv_to_rgbf<unsigned char, false>(""" + _FORWARD + r""");
}

extern "C" __global__ void yuv_to_rgbf_16bit(""" + _FLOAT_OUT_ARGS + r""") {
    yuv_to_rgbf<unsigned short, false>(""" + _FORWARD + r""");
}

extern "C" __global__ void yuv420_16bit_to_rgbf_filtered(""" + _FLOAT_OUT_ARGS + r""") {
    yuv_to_rgbf<unsigned short, true>(""" + _FORWARD + r""");
}

extern "C" __global__ void yuv_to_rgbf_8bit_resampled(""" + _FLOAT_OUT_RESAMPLED_ARGS + r""") {
    yuv_to_rgbf_resampled<unsigned char, false>(""" + _RESAMPLED_FORWARD + r""");
}

extern "C" __global__ void yuv_to_rgbf_16bit_resampled(""" + _FLOAT_OUT_RESAMPLED_ARGS + r""") {
    yuv_to_rgbf_resampled<unsigned short, false>(""" + _RESAMPLED_FORWARD + r""");
}

extern "C" __global__ void yuv420_16bit_to_rgbf_filtered_resampled(""" + _FLOAT_OUT_RESAMPLED_ARGS + r""") {
    yuv_to_rgbf_resampled<unsigned short, true>(""" + _RESAMPLED_FORWARD + r""");
}
"""
)

KERNEL_SOURCE = (
    r"""
// Values are in [0, 255] after the clamp, so the cast truncates like torch's.
__device__ __forceinline__ unsigned char to_u8(float v) {
    return (unsigned char)fminf(fmaxf(v, 0.0f), 255.0f);
}

template <typename Sample>
__device__ __forceinline__ int load_sample(const unsigned char* base, long long offset, int shift) {
    return (int)(*(const Sample*)(base + offset)) >> shift;
}

// One pixel of an 8-bit 4:2:0 or any 4:4:4 picture: float32 maths, nearest chroma.
// __f*_rn intrinsics are never contracted into FMAs: results stay
// bit-identical to the float32 torch reference.
template <typename Sample>
struct FloatPathPixel {
    const unsigned char* luma; long long luma_pitch;
    const unsigned char* cb; const unsigned char* cr;
    long long chroma_pitch, chroma_step;
    int chroma_shift_x, chroma_shift_y, sample_shift;
    float y_offset, y_scale, c_offset, c_scale, r_from_cr, g_from_cb, g_from_cr, b_from_cb, bias;

    __device__ __forceinline__ void operator()(int x, int y, unsigned char* rgb) const {
        const int ys = load_sample<Sample>(luma, (long long)y * luma_pitch + (long long)x * (long long)sizeof(Sample), sample_shift);
        const long long c = (long long)(y >> chroma_shift_y) * chroma_pitch + (long long)(x >> chroma_shift_x) * chroma_step;
        const int us = load_sample<Sample>(cb, c, sample_shift);
        const int vs = load_sample<Sample>(cr, c, sample_shift);
        const float yf = __fmul_rn(__fsub_rn((float)ys, y_offset), y_scale);
        const float uf = __fmul_rn(__fsub_rn((float)us, c_offset), c_scale);
        const float vf = __fmul_rn(__fsub_rn((float)vs, c_offset), c_scale);
        const float r = __fadd_rn(__fadd_rn(yf, __fmul_rn(r_from_cr, vf)), bias);
        const float g = __fadd_rn(__fadd_rn(__fadd_rn(yf, __fmul_rn(g_from_cb, uf)), __fmul_rn(g_from_cr, vf)), bias);
        const float b = __fadd_rn(__fadd_rn(yf, __fmul_rn(b_from_cb, uf)), bias);
        rgb[0] = to_u8(r);
        rgb[1] = to_u8(g);
        rgb[2] = to_u8(b);
    }
};

// Output pixel (i, j) of a resampled picture (`resampling.py`): for each row
// tap, the column taps' weighted sum of converted picture pixels, then the row
// taps' weighted sum of those, in float32 from 0 in tap order, rounded once.
// Picture pixel (pi, pj) (after rotation) is source pixel
// (src_r0 + src_r_i * pi + src_r_j * pj, src_c0 + src_c_i * pi + src_c_j * pj).
template <typename Pixel>
__device__ __forceinline__ void resample(const Pixel& pixel, unsigned char* __restrict__ dst, long long origin,
                                         long long step_row, long long step_col, long long step_channel,""" + _RESAMPLE_ARGS + r""")
{
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    const int i = blockIdx.y * blockDim.y + threadIdx.y;
    if (j >= out_width || i >= out_height) return;
    const int row_first = rows_span[2 * i], row_count = rows_span[2 * i + 1];
    const int col_first = cols_span[2 * j], col_count = cols_span[2 * j + 1];
    const float* row_weights = rows_weights + (long long)i * rows_stride;
    const float* col_weights = cols_weights + (long long)j * cols_stride;
    float red = 0.0f, green = 0.0f, blue = 0.0f;
    for (int ky = 0; ky < row_count; ++ky) {
        const int pi = row_first + ky;
        const int row_base = src_r0 + src_r_i * pi, col_base = src_c0 + src_c_i * pi;
        float row_red = 0.0f, row_green = 0.0f, row_blue = 0.0f;
        for (int kx = 0; kx < col_count; ++kx) {
            const int pj = col_first + kx;
            unsigned char rgb[3];
            pixel(col_base + src_c_j * pj, row_base + src_r_j * pj, rgb);
            const float w = col_weights[kx];
            row_red = __fadd_rn(row_red, __fmul_rn(w, (float)rgb[0]));
            row_green = __fadd_rn(row_green, __fmul_rn(w, (float)rgb[1]));
            row_blue = __fadd_rn(row_blue, __fmul_rn(w, (float)rgb[2]));
        }
        const float w = row_weights[ky];
        red = __fadd_rn(red, __fmul_rn(w, row_red));
        green = __fadd_rn(green, __fmul_rn(w, row_green));
        blue = __fadd_rn(blue, __fmul_rn(w, row_blue));
    }
    const long long o = origin + (long long)i * step_row + (long long)j * step_col;
    dst[o] = to_u8(__fadd_rn(red, 0.5f));
    dst[o + step_channel] = to_u8(__fadd_rn(green, 0.5f));
    dst[o + 2 * step_channel] = to_u8(__fadd_rn(blue, 0.5f));
}

template <typename Sample>
__device__ __forceinline__ void yuv_to_rgb(""" + _ARGS + r""")
{
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= width || y >= height) return;
    const FloatPathPixel<Sample> pixel = """ + _FLOAT_PIXEL_INIT + r""";
    unsigned char rgb[3];
    pixel(x, y, rgb);
    const long long o = origin + (long long)y * step_row + (long long)x * step_col;
    dst[o] = rgb[0];
    dst[o + step_channel] = rgb[1];
    dst[o + 2 * step_channel] = rgb[2];
}

extern "C" __global__ void yuv_to_rgb_8bit(""" + _ARGS + r""") {
    yuv_to_rgb<unsigned char>(""" + _FORWARD + r""");
}

extern "C" __global__ void yuv_to_rgb_16bit(""" + _ARGS + r""") {
    yuv_to_rgb<unsigned short>(""" + _FORWARD + r""");
}

template <typename Sample>
__device__ __forceinline__ void yuv_to_rgb_resampled(""" + _RESAMPLED_ARGS + r""")
{
    const FloatPathPixel<Sample> pixel = """ + _FLOAT_PIXEL_INIT + r""";
    resample(pixel, dst, origin, step_row, step_col, step_channel, """ + _RESAMPLE_FORWARD + r""");
}

extern "C" __global__ void yuv_to_rgb_8bit_resampled(""" + _RESAMPLED_ARGS + r""") {
    yuv_to_rgb_resampled<unsigned char>(""" + _RESAMPLED_FORWARD + r""");
}

extern "C" __global__ void yuv_to_rgb_16bit_resampled(""" + _RESAMPLED_ARGS + r""") {
    yuv_to_rgb_resampled<unsigned short>(""" + _RESAMPLED_FORWARD + r""");
}
"""
    + _GENERIC_PATH_SOURCE
    + _FLOAT_OUTPUT_SOURCE
)

_BLOCK = (32, 8, 1)


@dataclass(frozen=True)
class DestinationWalk:
    """Where source pixel (row, col) channel k lands in the destination, in
    elements from the destination's first element:
    `origin + row * step_row + col * step_col + k * step_channel`."""

    origin: int
    step_row: int
    step_col: int
    step_channel: int


def destination_walk(dst_shape: tuple[int, ...], dst_strides: tuple[int, ...], quarter_turns: int,
                     src_height: int, src_width: int) -> DestinationWalk:
    """The walk that writes an upright `src_height x src_width` picture into
    an `(H, W, 3)` destination with these element strides, rotated by
    `quarter_turns` counter-clockwise (as `torch.rot90(picture, quarter_turns, dims=(0, 1))`).

    Raises:
        ValueError: the destination's shape does not fit the rotated picture.
    """
    turns = quarter_turns % 4
    expected = (src_height, src_width) if turns % 2 == 0 else (src_width, src_height)
    if tuple(dst_shape) != (*expected, 3):
        raise ValueError(
            f"destination of shape {tuple(dst_shape)} does not fit a {src_width}x{src_height} picture "
            f"turned {turns} quarter turns (expected {(*expected, 3)})"
        )
    along_rows, along_cols, along_channels = dst_strides
    last_row, last_col = src_height - 1, src_width - 1
    # Destination (i, j) of source (r, c) for each rotation:
    #   0: (r, c)   1: (W-1-c, r)   2: (H-1-r, W-1-c)   3: (c, H-1-r)
    if turns == 0:
        return DestinationWalk(0, along_rows, along_cols, along_channels)
    if turns == 1:
        return DestinationWalk(last_col * along_rows, along_cols, -along_rows, along_channels)
    if turns == 2:
        return DestinationWalk(last_row * along_rows + last_col * along_cols, -along_rows, -along_cols,
                               along_channels)
    return DestinationWalk(last_row * along_cols, -along_cols, along_rows, along_channels)


_compile_lock = threading.Lock()
_kernels: dict[tuple[int, str], Any] = {}
_KERNEL_NAMES = ("yuv_to_rgb_8bit", "yuv_to_rgb_16bit", "yuv420_16bit_to_rgb_swscale",
                 "yuv_to_rgb_8bit_resampled", "yuv_to_rgb_16bit_resampled",
                 "yuv420_16bit_to_rgb_swscale_resampled",
                 "yuv_to_rgbf_8bit", "yuv_to_rgbf_16bit", "yuv420_16bit_to_rgbf_filtered",
                 "yuv_to_rgbf_8bit_resampled", "yuv_to_rgbf_16bit_resampled",
                 "yuv420_16bit_to_rgbf_filtered_resampled")


def _kernel(device_index: int, name: str) -> Any:
    """The compiled kernel `name` on a device (the source is compiled once per
    device and process, every kernel at once)."""
    kernel = _kernels.get((device_index, name))
    if kernel is None:
        import cupy  # lazy: only CUDA decoding needs it

        with _compile_lock:
            if (device_index, name) not in _kernels:
                with cupy.cuda.Device(device_index):
                    module = cupy.RawModule(code=KERNEL_SOURCE)
                    for each in _KERNEL_NAMES:
                        _kernels[(device_index, each)] = module.get_function(each)
            kernel = _kernels[(device_index, name)]
    return kernel


class _RawStream:
    """What CuPy's kernel launch reads from its `stream=` argument: `ptr`
    (`cupy/cuda/function.pyx`, `_get_stream` returns `stream.ptr`).

    A plain holder of a handle framefeed owns (the decoder's `OwnedStream`).
    Not `cupy.cuda.Stream.from_external`: the object it returns is a
    `cupy.cuda.Stream`, whose `__del__` calls `streamDestroy` on any handle
    but the default streams (`cupy/cuda/stream.pyx`), so collecting the
    wrapper destroyed the stream it wrapped (torch's, in framefeed before
    issue 22). Nor `cupy.cuda.ExternalStream`, deprecated in CuPy 14.
    """

    __slots__ = ("ptr",)

    def __init__(self, handle: int) -> None:
        self.ptr = handle


def kernel_name(sample_bytes: int, coefficients: ConversionCoefficients, resampled: bool = False,
                float_output: bool = False) -> str:
    """Which kernel converts surfaces with these samples and coefficients
    (`resampled`: the one that also crops and resizes; `float_output`: the
    one writing float32 in [0, 1] instead of uint8)."""
    if float_output:
        if coefficients.table is not None:  # 10/12-bit 4:2:0: filtered chroma, as swscale reads it
            name = "yuv420_16bit_to_rgbf_filtered"
        else:
            name = "yuv_to_rgbf_8bit" if sample_bytes == 1 else "yuv_to_rgbf_16bit"
    elif coefficients.table is not None:
        name = "yuv420_16bit_to_rgb_swscale"
    else:
        name = "yuv_to_rgb_8bit" if sample_bytes == 1 else "yuv_to_rgb_16bit"
    return name + "_resampled" if resampled else name


def compile_kernel(device_index: int, sample_bytes: int) -> None:
    """Compile (or fetch) the kernels now, so a CuPy that cannot compile for
    this GPU is found when the decoder is opened rather than mid-decode."""
    _kernel(device_index, "yuv_to_rgb_8bit" if sample_bytes == 1 else "yuv_to_rgb_16bit")


def kernel_arguments(planes: SurfacePlanes, dst_address: int, walk: DestinationWalk,
                     coefficients: ConversionCoefficients, sample_shift: int, chroma_shift_x: int,
                     chroma_shift_y: int) -> tuple[Any, ...]:
    """The kernel's arguments, typed as its parameter list declares them."""
    return (
        np.uint64(planes.luma), np.int64(planes.luma_pitch),
        np.uint64(planes.cb), np.uint64(planes.cr),
        np.int64(planes.chroma_pitch), np.int64(planes.chroma_step),
        np.int32(chroma_shift_x), np.int32(chroma_shift_y), np.int32(sample_shift),
        np.int32(planes.width), np.int32(planes.height),
        np.uint64(dst_address), np.int64(walk.origin), np.int64(walk.step_row),
        np.int64(walk.step_col), np.int64(walk.step_channel),
        *(np.float32(value) for value in coefficients.as_tuple()),
    )


def generic_path_arguments(planes: SurfacePlanes, dst_address: int, walk: DestinationWalk,
                           table: TableCoefficients, sample_shift: int) -> tuple[Any, ...]:
    """Arguments of `yuv420_16bit_to_rgb_swscale`, typed as it declares them."""
    return (
        np.uint64(planes.luma), np.int64(planes.luma_pitch),
        np.uint64(planes.cb), np.uint64(planes.cr),
        np.int64(planes.chroma_pitch), np.int64(planes.chroma_step),
        np.int32(sample_shift), np.int32(table.to_15_bits),
        np.int32(planes.width), np.int32(planes.height),
        np.uint64(dst_address), np.int64(walk.origin), np.int64(walk.step_row),
        np.int64(walk.step_col), np.int64(walk.step_channel),
        *(np.int32(value) for value in table.as_tuple()),
    )


@dataclass(frozen=True)
class ResampleTables:
    """What a `*_resampled` kernel reads besides the surface: the addresses of
    the sampling tables (`resampling.AxisTaps`: `(n, 2)` int32 spans and
    `(n, stride)` float32 weights, both row-contiguous), the output size, and
    `source_map` (`resampling.picture_to_source`), which folds the display
    rotation into where each picture pixel is read. The destination walk is
    then the output's own (no rotation)."""

    rows_span: int
    rows_weights: int
    rows_stride: int
    cols_span: int
    cols_weights: int
    cols_stride: int
    out_height: int
    out_width: int
    source_map: tuple[int, int, int, int, int, int]

    def arguments(self) -> tuple[Any, ...]:
        return (
            np.uint64(self.rows_span), np.uint64(self.rows_weights), np.int32(self.rows_stride),
            np.uint64(self.cols_span), np.uint64(self.cols_weights), np.int32(self.cols_stride),
            np.int32(self.out_width), np.int32(self.out_height),
            *(np.int32(value) for value in self.source_map),
        )


def resample_tables(resampling: Resampling, quarter_turns: int, source_width: int, source_height: int,
                    device: Any) -> tuple[ResampleTables, tuple[Any, ...]]:
    """The tables of `resampling` as tensors on `device` and their
    `ResampleTables`, for pictures of `source_width x source_height` turned
    `quarter_turns` counter-clockwise. The caller keeps the tensors alive
    while kernels may read them.

    Raises:
        ValueError: `resampling` is for pictures of another size.
    """
    import torch

    expected = rotated_size(quarter_turns, source_width, source_height)
    if tuple(resampling.input_size) != expected:
        raise ValueError(f"transforms resolved for {resampling.input_size[0]}x{resampling.input_size[1]} frames "
                         f"applied to {expected[0]}x{expected[1]} frames ({source_width}x{source_height} "
                         f"turned {quarter_turns % 4} quarter turns)")
    rows, cols = resampling.rows, resampling.cols
    tensors = tuple(torch.from_numpy(array).to(device).contiguous()
                    for array in (rows.spans, rows.weights, cols.spans, cols.weights))
    rows_span, rows_weights, cols_span, cols_weights = tensors
    tables = ResampleTables(
        rows_span.data_ptr(), rows_weights.data_ptr(), rows_weights.shape[1],
        cols_span.data_ptr(), cols_weights.data_ptr(), cols_weights.shape[1],
        resampling.output_size[0], resampling.output_size[1],
        picture_to_source(quarter_turns, source_width, source_height),
    )
    return tables, tensors


# Where the resample arguments go: after the planes and the destination walk.
_RESAMPLE_POSITION = {"float": 16, "generic": 15}


def resampled_arguments(plain_arguments: tuple[Any, ...], tables: ResampleTables, generic: bool) -> tuple[Any, ...]:
    """A `*_resampled` kernel's arguments: its plain kernel's (from
    `kernel_arguments` or `generic_path_arguments`, built with the output's
    walk) with the tables' spliced in where its parameter list has them."""
    at = _RESAMPLE_POSITION["generic" if generic else "float"]
    return (*plain_arguments[:at], *tables.arguments(), *plain_arguments[at:])


def launch_grid(width: int, height: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(grid, block): one thread per pixel of a `width x height` picture (the
    source for plain kernels, the output for resampled ones)."""
    return ((width + _BLOCK[0] - 1) // _BLOCK[0], (height + _BLOCK[1] - 1) // _BLOCK[1], 1), _BLOCK


def launch_yuv_to_rgb(planes: SurfacePlanes, dst_address: int, walk: DestinationWalk,
                      coefficients: ConversionCoefficients, sample_shift: int, chroma_shift_x: int,
                      chroma_shift_y: int, device_index: int, stream_handle: int,
                      tables: ResampleTables | None = None, float_output: bool = False) -> None:
    """Enqueue the conversion of one surface on the CUDA stream `stream_handle`
    (the decoder's own): one launch. `dst_address` is the device address of
    the destination's first element: uint8, or float32 with `float_output`
    (values in [0, 1], samples kept at full precision); `walk` counts
    elements of that type. With `tables`, the launch also crops and resizes
    (one thread per output pixel) and `walk` is the output's own."""
    import cupy

    kernel = _kernel(device_index, kernel_name(planes.sample_bytes, coefficients, tables is not None, float_output))
    generic = coefficients.table is not None and not float_output
    if generic:
        args = generic_path_arguments(planes, dst_address, walk, coefficients.table, sample_shift)
    else:
        args = kernel_arguments(planes, dst_address, walk, coefficients, sample_shift, chroma_shift_x,
                                chroma_shift_y)
    if tables is None:
        grid, block = launch_grid(planes.width, planes.height)
    else:
        grid, block = launch_grid(tables.out_width, tables.out_height)
        args = resampled_arguments(args, tables, generic)
    with cupy.cuda.Device(device_index):
        kernel(grid, block, args, stream=_RawStream(stream_handle))


def walk_for(surface: Any, planes: SurfacePlanes, dst: Any) -> DestinationWalk:
    """The destination walk of `dst` for a converter (`backend.CudaSurfaceConverter`),
    cached per destination layout in `surface.walks`."""
    layout = (tuple(dst.shape), tuple(dst.stride()))
    walk = surface.walks.get(layout)
    if walk is None:
        if surface.tables is None:
            walk = destination_walk(layout[0], layout[1], surface.turns, planes.height, planes.width)
        else:  # the output's own walk: the tables read the rotated picture
            walk = destination_walk(layout[0], layout[1], 0, surface.tables.out_height, surface.tables.out_width)
        surface.walks[layout] = walk
    return walk


class CupyKernelLaunch:
    """The `backend.KernelLaunch` of a GPU: the fused kernel through CuPy on
    the decoder's stream."""

    def __call__(self, planes: SurfacePlanes, dst: Any, *, stream: Any, surface: Any) -> None:
        import torch

        launch_yuv_to_rgb(planes, dst.data_ptr(), walk_for(surface, planes, dst), surface.coefficients,
                          surface.sample_shift, surface.spec.chroma_shift_x, surface.spec.chroma_shift_y,
                          stream.device_index, stream.handle, surface.tables,
                          float_output=dst.dtype == torch.float32)
