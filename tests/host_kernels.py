"""The CUDA colour kernels' own source, compiled for the CPU and run thread by
thread, so CI checks the kernels without a GPU.

`compile_host_kernels` builds `framefeed.engine.backends.gpu_decode.kernels.KERNEL_SOURCE`
with g++ (or clang++), no FMA contraction (like the kernels' `__f*_rn`
intrinsics), and a driver per kernel that runs every thread of its launch
grid; `run_on_host` launches one on CPU tensors with the arguments the GPU
launch would get.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

HOST_PRELUDE = r"""
#include <cmath>
#include <cstdint>
struct HostIndex { unsigned x, y, z; };
static HostIndex blockIdx, blockDim, threadIdx;
#define __global__
#define __device__
#define __forceinline__ inline
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
"""

HOST_DRIVER = r"""
#define HOST_LAUNCH(NAME, KERNEL)                                                   \
extern "C" void NAME(unsigned grid_x, unsigned grid_y, unsigned block_x, unsigned block_y, ARGS) { \
    blockDim = {block_x, block_y, 1};                                               \
    for (unsigned by = 0; by < grid_y; ++by)                                        \
        for (unsigned bx = 0; bx < grid_x; ++bx)                                    \
            for (unsigned ty = 0; ty < block_y; ++ty)                               \
                for (unsigned tx = 0; tx < block_x; ++tx) {                         \
                    blockIdx = {bx, by, 0};                                         \
                    threadIdx = {tx, ty, 0};                                        \
                    KERNEL(FORWARD);                                                \
                }                                                                   \
}
#define ARGS FLOAT_ARGS
#define FORWARD FLOAT_FORWARD
HOST_LAUNCH(host_yuv_to_rgb_8bit, yuv_to_rgb_8bit)
HOST_LAUNCH(host_yuv_to_rgb_16bit, yuv_to_rgb_16bit)
#undef ARGS
#undef FORWARD
#define ARGS GENERIC_ARGS
#define FORWARD GENERIC_FORWARD
HOST_LAUNCH(host_yuv420_16bit_to_rgb_swscale, yuv420_16bit_to_rgb_swscale)
#undef ARGS
#undef FORWARD
#define ARGS RESAMPLED_ARGS
#define FORWARD RESAMPLED_FORWARD
HOST_LAUNCH(host_yuv_to_rgb_8bit_resampled, yuv_to_rgb_8bit_resampled)
HOST_LAUNCH(host_yuv_to_rgb_16bit_resampled, yuv_to_rgb_16bit_resampled)
#undef ARGS
#undef FORWARD
#define ARGS GENERIC_RESAMPLED_ARGS
#define FORWARD GENERIC_RESAMPLED_FORWARD
HOST_LAUNCH(host_yuv420_16bit_to_rgb_swscale_resampled, yuv420_16bit_to_rgb_swscale_resampled)
#undef ARGS
#undef FORWARD
#define ARGS FLOAT_OUT_ARGS
#define FORWARD FLOAT_FORWARD
HOST_LAUNCH(host_yuv_to_rgbf_8bit, yuv_to_rgbf_8bit)
HOST_LAUNCH(host_yuv_to_rgbf_16bit, yuv_to_rgbf_16bit)
HOST_LAUNCH(host_yuv420_16bit_to_rgbf_filtered, yuv420_16bit_to_rgbf_filtered)
#undef ARGS
#undef FORWARD
#define ARGS FLOAT_OUT_RESAMPLED_ARGS
#define FORWARD RESAMPLED_FORWARD
HOST_LAUNCH(host_yuv_to_rgbf_8bit_resampled, yuv_to_rgbf_8bit_resampled)
HOST_LAUNCH(host_yuv_to_rgbf_16bit_resampled, yuv_to_rgbf_16bit_resampled)
HOST_LAUNCH(host_yuv420_16bit_to_rgbf_filtered_resampled, yuv420_16bit_to_rgbf_filtered_resampled)
"""


def compile_host_kernels(folder: Path) -> ctypes.CDLL | None:
    """The kernels built into a shared library under `folder`; None without a C++ compiler.

    Raises:
        subprocess.CalledProcessError: the source does not compile (stderr attached).
    """
    from framefeed.engine.backends.gpu_decode import kernels

    compiler = shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        return None
    source = folder / "kernel.cpp"
    macros = "".join(f"\n#define {name} {' '.join(text.split())}" for name, text in [
        ("FLOAT_ARGS", kernels._ARGS), ("FLOAT_FORWARD", kernels._FORWARD),
        ("GENERIC_ARGS", kernels._GENERIC_ARGS), ("GENERIC_FORWARD", kernels._GENERIC_FORWARD),
        ("RESAMPLED_ARGS", kernels._RESAMPLED_ARGS), ("RESAMPLED_FORWARD", kernels._RESAMPLED_FORWARD),
        ("GENERIC_RESAMPLED_ARGS", kernels._GENERIC_RESAMPLED_ARGS),
        ("GENERIC_RESAMPLED_FORWARD", kernels._GENERIC_RESAMPLED_FORWARD),
        ("FLOAT_OUT_ARGS", kernels._FLOAT_OUT_ARGS),
        ("FLOAT_OUT_RESAMPLED_ARGS", kernels._FLOAT_OUT_RESAMPLED_ARGS)])
    source.write_text(HOST_PRELUDE + kernels.KERNEL_SOURCE + macros + "\n" + HOST_DRIVER)
    library = folder / "kernel.so"
    try:
        subprocess.run([compiler, "-std=c++14", "-O1", "-ffp-contract=off", "-fno-fast-math", "-shared", "-fPIC",
                        "-o", str(library), str(source)], check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as error:
        raise AssertionError(f"the kernel source does not compile on the host:\n{error.stderr}") from error
    return ctypes.CDLL(str(library))


_CTYPES = {np.dtype(np.uint64): ctypes.c_void_p, np.dtype(np.int64): ctypes.c_longlong,
           np.dtype(np.int32): ctypes.c_int, np.dtype(np.float32): ctypes.c_float}


def run_on_host(library: ctypes.CDLL, planes: Any, dst: Any, walk: Any, coefficients: Any, sample_shift: int,
                shift_x: int, shift_y: int, tables: Any = None) -> None:
    """Launch the kernel the GPU would run for these planes into `dst` (a CPU
    uint8 tensor view, or float32 for the float-output kernels); with `tables`
    (`kernels.ResampleTables` over CPU tensors), the resampled kernel."""
    import torch

    from framefeed.engine.backends.gpu_decode.kernels import (
        generic_path_arguments,
        kernel_arguments,
        kernel_name,
        launch_grid,
        resampled_arguments,
    )

    float_output = dst.dtype == torch.float32
    generic = coefficients.table is not None and not float_output
    if generic:
        args = generic_path_arguments(planes, dst.data_ptr(), walk, coefficients.table, sample_shift)
    else:
        args = kernel_arguments(planes, dst.data_ptr(), walk, coefficients, sample_shift, shift_x, shift_y)
    if tables is not None:
        args = resampled_arguments(args, tables, generic)
        grid, block = launch_grid(tables.out_width, tables.out_height)
    else:
        grid, block = launch_grid(planes.width, planes.height)
    function = getattr(library, "host_" + kernel_name(planes.sample_bytes, coefficients, tables is not None,
                                                      float_output))
    function.argtypes = [ctypes.c_uint] * 4 + [_CTYPES[a.dtype] for a in args]
    function.restype = None
    function(grid[0], grid[1], block[0], block[1], *[a.item() for a in args])
