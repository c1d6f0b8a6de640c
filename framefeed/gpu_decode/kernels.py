"""The fused YUV -> RGB CUDA kernels (CuPy RawKernel).

One launch reads a decoder surface in its native layout (NV12, P016,
YUV444, YUV444_16Bit), converts with `colour.reference_rgb`'s maths and
writes uint8 RGB straight into the output tensor. Two conversions exist, as
in swscale (see `colour`): float32 maths (the same operations in the same
order as the torch reference, no fused multiply-adds) for 8-bit 4:2:0 and
4:4:4 surfaces, and swscale's generic-scaler integer path (vertical bicubic
chroma, 8-bit lookup-table arithmetic) for 10/12-bit 4:2:0 (P016) surfaces.

The destination is addressed through a `DestinationWalk`: the element
offset of the source pixel (0, 0) plus element steps per source row, source
column and channel. That single description covers channels-last and
channels-first output slots and folds the display rotation into the index
arithmetic, so no intermediate image is ever materialised.

CuPy is imported lazily (only when a kernel is launched).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from framefeed.gpu_decode.colour import (
    SWSCALE_CHROMA_TAPS,
    ConversionCoefficients,
    TableCoefficients,
)
from framefeed.gpu_decode.surfaces import SurfacePlanes

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

extern "C" __global__ void yuv420_16bit_to_rgb_swscale(""" + _GENERIC_ARGS + r""")
{
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= width || y >= height) return;
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
    const long long o = origin + (long long)y * step_row + (long long)x * step_col;
    dst[o] = table_entry(r, y_origin, y_scale);
    dst[o + step_channel] = table_entry(g, y_origin, y_scale);
    dst[o + 2 * step_channel] = table_entry(b, y_origin, y_scale);
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

// __f*_rn intrinsics are never contracted into FMAs: results stay
// bit-identical to the float32 torch reference.
template <typename Sample>
__device__ __forceinline__ void yuv_to_rgb(""" + _ARGS + r""")
{
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= width || y >= height) return;
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
    const long long o = origin + (long long)y * step_row + (long long)x * step_col;
    dst[o] = to_u8(r);
    dst[o + step_channel] = to_u8(g);
    dst[o + 2 * step_channel] = to_u8(b);
}

extern "C" __global__ void yuv_to_rgb_8bit(""" + _ARGS + r""") {
    yuv_to_rgb<unsigned char>(""" + _FORWARD + r""");
}

extern "C" __global__ void yuv_to_rgb_16bit(""" + _ARGS + r""") {
    yuv_to_rgb<unsigned short>(""" + _FORWARD + r""");
}
"""
    + _GENERIC_PATH_SOURCE
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
_KERNEL_NAMES = ("yuv_to_rgb_8bit", "yuv_to_rgb_16bit", "yuv420_16bit_to_rgb_swscale")


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


class _StreamHandle:
    """A raw CUDA stream handle behind the CUDA stream protocol (`__cuda_stream__`)."""

    def __init__(self, handle: int) -> None:
        self._handle = handle

    def __cuda_stream__(self) -> tuple[int, int]:
        return (0, self._handle)


def cupy_stream_for(cupy: Any, stream_handle: int, device_index: int) -> Any:
    """A CuPy stream for a CUDA stream that torch owns (the decoder's).

    CuPy >= 14 wraps foreign streams with `cupy.cuda.Stream.from_external`
    (its `ExternalStream` is deprecated there and warns on every use); older
    CuPy only has `ExternalStream`. The caller keeps the torch stream alive.
    """
    with cupy.cuda.Device(device_index):  # from_external takes the device from the current one
        from_external = getattr(cupy.cuda.Stream, "from_external", None)
        if from_external is not None:
            return from_external(_StreamHandle(stream_handle))
        return cupy.cuda.ExternalStream(stream_handle, device_index)


def kernel_name(sample_bytes: int, coefficients: ConversionCoefficients) -> str:
    """Which kernel converts surfaces with these samples and coefficients."""
    if coefficients.table is not None:
        return "yuv420_16bit_to_rgb_swscale"
    return "yuv_to_rgb_8bit" if sample_bytes == 1 else "yuv_to_rgb_16bit"


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


def launch_grid(width: int, height: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(grid, block): one thread per source pixel."""
    return ((width + _BLOCK[0] - 1) // _BLOCK[0], (height + _BLOCK[1] - 1) // _BLOCK[1], 1), _BLOCK


def launch_yuv_to_rgb(planes: SurfacePlanes, dst_address: int, walk: DestinationWalk,
                      coefficients: ConversionCoefficients, sample_shift: int, chroma_shift_x: int,
                      chroma_shift_y: int, device_index: int, cupy_stream: Any) -> None:
    """Enqueue the conversion of one surface on `cupy_stream` (a CuPy stream
    wrapping the decoder's CUDA stream). `dst_address` is the device address
    of the destination's first element (uint8)."""
    import cupy

    kernel = _kernel(device_index, kernel_name(planes.sample_bytes, coefficients))
    grid, block = launch_grid(planes.width, planes.height)
    if coefficients.table is not None:
        args = generic_path_arguments(planes, dst_address, walk, coefficients.table, sample_shift)
    else:
        args = kernel_arguments(planes, dst_address, walk, coefficients, sample_shift, chroma_shift_x,
                                chroma_shift_y)
    with cupy.cuda.Device(device_index), cupy_stream:
        kernel(grid, block, args)
