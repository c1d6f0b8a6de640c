"""The fused YUV -> RGB CUDA kernel (CuPy RawKernel).

One launch reads a decoder surface in its native layout (NV12, P016,
YUV444, YUV444_16Bit), converts with `colour.reference_rgb`'s maths
(float32, the same operations in the same order, no fused multiply-adds)
and writes uint8 RGB straight into the output tensor.

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

from framefeed.gpu_decode.colour import ConversionCoefficients
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
_kernels: dict[tuple[int, int], Any] = {}


def _kernel(device_index: int, sample_bytes: int) -> Any:
    """The compiled kernel for a device and sample size (compiled once per process)."""
    key = (device_index, sample_bytes)
    kernel = _kernels.get(key)
    if kernel is None:
        import cupy  # lazy: only CUDA decoding needs it

        with _compile_lock:
            kernel = _kernels.get(key)
            if kernel is None:
                name = "yuv_to_rgb_8bit" if sample_bytes == 1 else "yuv_to_rgb_16bit"
                with cupy.cuda.Device(device_index):
                    module = cupy.RawModule(code=KERNEL_SOURCE)
                    kernel = module.get_function(name)
                _kernels[key] = kernel
    return kernel


def compile_kernel(device_index: int, sample_bytes: int) -> None:
    """Compile (or fetch) the kernel now, so a CuPy that cannot compile for
    this GPU is found when the decoder is opened rather than mid-decode."""
    _kernel(device_index, sample_bytes)


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

    kernel = _kernel(device_index, planes.sample_bytes)
    grid, block = launch_grid(planes.width, planes.height)
    args = kernel_arguments(planes, dst_address, walk, coefficients, sample_shift, chroma_shift_x,
                            chroma_shift_y)
    with cupy.cuda.Device(device_index), cupy_stream:
        kernel(grid, block, args)
