"""float32 RGB in [0, 1] on the CPU, as torchcodec 0.17 computes it.

torchcodec 0.17's `output_dtype=torch.float32` converts every frame, whatever
its bit depth, with swscale to 16-bit RGB (`AV_PIX_FMT_RGB48`, bicubic, the
frame's colour matrix and range) and divides by 65535 in float32. That keeps
10- and 12-bit sources' precision; on 8-bit sources it is not `uint8 / 255`:
swscale's 16-bit output comes from its generic scaler (vertical bicubic chroma,
16-bit rounding) rather than the truncating 8-bit converter, so the two differ
by up to about 3/255. We do the same, so frames equal torchcodec 0.17's
bit for bit (`tests/test_output_dtype.py` checks against an independent
rgb48le conversion, `benchmarks/torchcodec017_compare.py` against torchcodec).

This is an addition to the uint8 path (`rgb.py`), called by `CpuBackend.write_rgb`
for float32 destinations. It uses the libswscale that PyAV loaded (`rgb._libs`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from framefeed.engine.backends.colour_range import is_full_range
from framefeed.engine.backends.cpu_fallback.rgb import _I4, _P4, _SWS_BICUBIC, _libs

RGB48_MAX = 65535.0
"""What a 16-bit sample is divided by (in float32) to give [0, 1]."""

# FFmpeg's destination contract (see `RgbConverter`): lines aligned to 64 bytes
# with room for whole 16-pixel SIMD blocks past the width, and a spare line.
# TODO(#20): take the destination from rgb.py's padded-buffer helper once it lands on
# main, so the contract is stated in one place.
_LINE_ALIGN = 64
_SIMD_PIXELS = 16


class FloatRgbWriter:
    """Converts decoded `av.VideoFrame`s to float32 RGB in [0, 1] into `(H, W, 3)` views.

    `rotation_quarter_turns` (0-3, counter-clockwise) is applied after conversion,
    as in `RgbConverter`. One writer per decoder: its swscale context and scratch
    are reused from frame to frame and are not thread-safe.

    Raises (from `write`):
        ValueError: swscale cannot convert the frame's pixel format to rgb48.
        RuntimeError: PyAV's libswscale cannot be located (an unusual PyAV build).
    """

    def __init__(self, rotation_quarter_turns: int = 0) -> None:
        self.turns = rotation_quarter_turns % 4
        self._libs = _libs()
        self._ctx: int | None = None
        self._ctx_key: tuple | None = None
        self._pix_fmts: dict[str, int] = {}
        self._scratch: np.ndarray | None = None  # uint8 rows of `_stride` bytes
        self._stride = 0
        self._arrays = (_P4(), _I4(), _P4(), _I4())

    def __del__(self) -> None:
        if self._libs is not None and self._ctx:
            self._libs.sws.sws_freeContext(self._ctx)
            self._ctx = None

    def write(self, frame: Any, dst: torch.Tensor) -> None:
        """Convert `frame` into `dst`, a float32 CPU tensor `(H, W, 3)` (after rotation)."""
        if dst.dtype != torch.float32 or dst.device.type != "cpu":
            raise ValueError(f"destination must be a float32 CPU tensor, got {dst.dtype} on {dst.device}")
        rgb48 = self._scale_to_rgb48(frame)
        if self.turns:
            rgb48 = np.rot90(rgb48, self.turns, axes=(0, 1))
        # float32(sample) / float32(65535), correctly rounded: torchcodec's division.
        np.divide(rgb48, np.float32(RGB48_MAX), out=dst.numpy(), dtype=np.float32)

    def _scale_to_rgb48(self, frame: Any) -> np.ndarray:
        """The frame as `(H, W, 3)` native-endian uint16 RGB, a view of the scratch."""
        libs = self._libs
        if libs is None:
            raise RuntimeError("float32 output needs PyAV's libswscale, which could not be located")
        width, height = frame.width, frame.height
        name = frame.format.name
        pix_fmt = self._pix_fmts.get(name)
        if pix_fmt is None:
            pix_fmt = self._pix_fmts[name] = libs.avutil.av_get_pix_fmt(name.encode())
        full_range = is_full_range(name, frame.color_range)
        key = (width, height, pix_fmt, frame.colorspace, full_range)
        if key != self._ctx_key:
            rgb48 = libs.avutil.av_get_pix_fmt(b"rgb48")
            ctx = libs.sws.sws_getCachedContext(
                self._ctx, width, height, pix_fmt, width, height, rgb48, _SWS_BICUBIC, None, None, None)
            if not ctx:
                raise ValueError(f"swscale cannot convert {name} {width}x{height} to rgb48")
            self._ctx = ctx
            coefficients = libs.sws.sws_getCoefficients(frame.colorspace)
            libs.sws.sws_setColorspaceDetails(
                ctx, coefficients, int(full_range), coefficients, 1, 0, 1 << 16, 1 << 16)
            self._ctx_key = key
        row_bytes = width * 6
        stride = -(-(row_bytes + _SIMD_PIXELS * 6) // _LINE_ALIGN) * _LINE_ALIGN
        if self._scratch is None or self._stride != stride or self._scratch.shape[0] < height + 1:
            self._scratch = np.empty((height + 1, stride), dtype=np.uint8)  # + a spare line
            self._stride = stride
        sources, strides, targets, target_strides = self._arrays
        for i, plane in enumerate(frame.planes):
            sources[i] = plane.buffer_ptr
            strides[i] = plane.line_size
        targets[0] = self._scratch.ctypes.data
        target_strides[0] = stride
        written = libs.sws.sws_scale(self._ctx, sources, strides, 0, height, targets, target_strides)
        if written != height:
            raise ValueError(f"swscale wrote {written} of {height} rows converting {name} to rgb48")
        return self._scratch[:height, :row_bytes].view(np.uint16).reshape(height, width, 3)
