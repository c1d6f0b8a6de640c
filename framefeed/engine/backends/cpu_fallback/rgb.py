"""YUV -> RGB24 on the CPU with FFmpeg's swscale, written into our tensors.

Pixels equal `ffmpeg -pix_fmt rgb24` (swscale, bicubic flags), using the
frame's colour matrix (unspecified -> BT.601) and range. We call the libswscale
that PyAV itself loaded, through ctypes, so swscale writes straight into the
destination tensor where it can: PyAV's `reformat` would allocate a new frame
per call and cost one more copy of every output frame. If that library cannot
be located (an unusual PyAV build), we fall back to `VideoFrame.to_ndarray`
plus a copy.

swscale's destination contract, honoured here and nowhere else: swscale
expects destination lines laid out as FFmpeg lays out its own frames
(`av_frame_get_buffer`, libavfilter's frame pools): every line aligned and
padded. It relies on the padding. Its x86 `yuv2rgb` converters (yuv420p,
yuvj420p, yuv422p, ... to packed RGB) store whole 16-pixel blocks, up to 45
bytes past a line's last pixel; and where a line's stride leaves no room for
the block holding its last pixels, they leave those pixels (the last
`width % 8`) unwritten. A tightly sized `(H, W, 3)` tensor therefore gets
bytes written past its end (heap corruption, or a fault at a page boundary)
or columns never written (every 854x480 video).
So swscale writes into the caller's tensor only where its lines are filled
exactly (`writes_exactly`: a width that is a multiple of 16 pixels, packed
rows, 16-byte aligned); every other destination gets a padded picture this
converter keeps (`padded_rgb_picture`) and one copy. The common sizes (640,
1280, 1920, 3840 wide) take the direct path. `tests/test_buffer_contract.py`
sweeps widths, heights and pixel formats with outputs bounded by guard pages.
"""

from __future__ import annotations

import ctypes
import glob
import os
from functools import lru_cache
from typing import Any

import av
import numpy as np
import torch

from framefeed.engine.backends.colour_range import is_full_range
from framefeed.errors import FrameSizeChangedError

_SWS_BICUBIC = 4
# The destination contract (see the module docstring), in bytes and pixels.
_LINE_ALIGN = 64  # FFmpeg's largest line alignment (AVX-512 builds)
_LINE_PADDING = 64  # after each line's last pixel: more than swscale's 45-byte overrun
_EXACT_WIDTH_MULTIPLE = 16  # widths whose lines swscale's 16-pixel block stores fill exactly
_EXACT_ALIGN = 16
_P4 = ctypes.c_void_p * 4
_I4 = ctypes.c_int * 4


class _Libs:
    def __init__(self, swscale: ctypes.CDLL, avutil: ctypes.CDLL) -> None:
        self.sws = swscale
        self.avutil = avutil
        vp, i = ctypes.c_void_p, ctypes.c_int
        swscale.sws_getCachedContext.restype = vp
        swscale.sws_getCachedContext.argtypes = [vp, i, i, i, i, i, i, i, vp, vp, vp]
        swscale.sws_getCoefficients.restype = ctypes.POINTER(i)
        swscale.sws_getCoefficients.argtypes = [i]
        swscale.sws_setColorspaceDetails.restype = i
        swscale.sws_setColorspaceDetails.argtypes = [
            vp, ctypes.POINTER(i), i, ctypes.POINTER(i), i, i, i, i]
        swscale.sws_scale.restype = i
        swscale.sws_scale.argtypes = [vp, vp, vp, i, i, vp, vp]
        swscale.sws_freeContext.restype = None
        swscale.sws_freeContext.argtypes = [vp]
        avutil.av_get_pix_fmt.restype = i
        avutil.av_get_pix_fmt.argtypes = [ctypes.c_char_p]
        self.rgb24 = avutil.av_get_pix_fmt(b"rgb24")


def _loaded_library_paths(stem: str) -> list[str]:
    """Paths of `stem` libraries: the ones bundled with the PyAV wheel first,
    then whatever this process has already mapped."""
    package_dir = os.path.dirname(av.__file__)
    candidates = []
    for libs_dir in (os.path.join(package_dir, os.pardir, "av.libs"), os.path.join(package_dir, ".dylibs")):
        candidates += sorted(glob.glob(os.path.join(libs_dir, f"{stem}*")))
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                if os.path.basename(path).startswith(stem) and path not in candidates:
                    candidates.append(path)
    except OSError:
        pass
    return candidates


@lru_cache(maxsize=1)
def _libs() -> _Libs | None:
    for sws_path in _loaded_library_paths("libswscale"):
        for util_path in _loaded_library_paths("libavutil"):
            try:
                return _Libs(ctypes.CDLL(sws_path), ctypes.CDLL(util_path))
            except (OSError, AttributeError):
                continue
    return None


def writes_exactly(dst: torch.Tensor) -> bool:
    """Whether swscale, converting a picture of `dst`'s size to RGB24, writes
    exactly `dst`'s pixels when given `dst` itself: an `(H, W, 3)` uint8 CPU
    tensor whose width is a multiple of 16 pixels, with packed pixels and
    16-byte aligned rows."""
    width = dst.shape[1]
    return (
        dst.device.type == "cpu"
        and dst.dtype == torch.uint8
        and width % _EXACT_WIDTH_MULTIPLE == 0
        and dst.stride(2) == 1
        and dst.stride(1) == 3
        and dst.stride(0) % _EXACT_ALIGN == 0
        and dst.data_ptr() % _EXACT_ALIGN == 0
    )


def padded_rgb_picture(height: int, width: int) -> torch.Tensor:
    """An `(height, width, 3)` uint8 view laid out as swscale expects its
    destinations: lines 64-byte aligned, each followed by at least 64 bytes of
    padding inside the same storage."""
    line = -(-(width * 3 + _LINE_PADDING) // _LINE_ALIGN) * _LINE_ALIGN
    storage = torch.empty(height * line + _LINE_ALIGN, dtype=torch.uint8)
    start = -storage.data_ptr() % _LINE_ALIGN
    lines = storage[start : start + height * line].view(height, line)
    return lines[:, : width * 3].view(height, width, 3)


def check_frame_size(frame: Any, dst: torch.Tensor, turns: int) -> None:
    """Raise `FrameSizeChangedError` unless `frame`, turned `turns` quarter
    turns, is `dst`'s `(H, W)`: a converter writes nothing for such a frame."""
    width, height = frame.width, frame.height
    if turns % 2:
        width, height = height, width
    if dst.shape[0] != height or dst.shape[1] != width:
        raise FrameSizeChangedError(
            f"it decoded at {width}x{height}, but this stream's frames are {dst.shape[1]}x{dst.shape[0]}: "
            "the frame size changes mid-stream, which framefeed does not decode (nothing was written "
            f"for this frame, pts {frame.pts})",
            (width, height), (int(dst.shape[1]), int(dst.shape[0])),
        )


class RgbConverter:
    """Converts decoded `av.VideoFrame`s to RGB24 into `(H, W, 3)` uint8 views.

    `rotation_quarter_turns` (0-3, counter-clockwise) is applied after
    conversion, so the destination has the post-rotation shape. One converter
    per decoder: its swscale context is not thread-safe.
    """

    def __init__(self, rotation_quarter_turns: int = 0, force_pyav: bool = False) -> None:
        self.turns = rotation_quarter_turns % 4
        self._libs = None if force_pyav else _libs()
        self._ctx: int | None = None
        self._ctx_key: tuple | None = None
        self._padded: torch.Tensor | None = None  # swscale's destination when the caller's is not exact
        self._pix_fmts: dict[str, int] = {}
        self._arrays = (_P4(), _I4(), _P4(), _I4())

    def __del__(self) -> None:
        if self._libs is not None and self._ctx:
            self._libs.sws.sws_freeContext(self._ctx)
            self._ctx = None

    def write(self, frame: Any, dst: torch.Tensor) -> None:
        """Convert `frame` into `dst`, a CPU uint8 tensor of shape `(H, W, 3)`
        (after rotation), any strides. Nothing outside `dst` is written.

        Raises:
            FrameSizeChangedError: the frame (after rotation) is not `H x W`;
                `dst` is left untouched.
        """
        check_frame_size(frame, dst, self.turns)
        if self._libs is None:
            array = frame.to_ndarray(format="rgb24", interpolation="BICUBIC")
            upright = torch.from_numpy(np.ascontiguousarray(array))
        elif self.turns == 0 and writes_exactly(dst):
            self._scale_into(frame, dst)
            return
        else:
            upright = self._padded_picture(frame.height, frame.width)
            self._scale_into(frame, upright)
        if self.turns:
            upright = torch.rot90(upright, self.turns, dims=(0, 1))
        dst.copy_(upright)

    def _padded_picture(self, height: int, width: int) -> torch.Tensor:
        if self._padded is None or tuple(self._padded.shape[:2]) != (height, width):
            self._padded = padded_rgb_picture(height, width)
        return self._padded

    def _scale_into(self, frame: Any, dst: torch.Tensor) -> None:
        """The one sws_scale call: `dst` is exact (`writes_exactly`) or padded
        (`padded_rgb_picture`), never a tight buffer swscale would overrun."""
        libs = self._libs
        assert libs is not None
        width, height = frame.width, frame.height
        name = frame.format.name
        pix_fmt = self._pix_fmts.get(name)
        if pix_fmt is None:
            pix_fmt = self._pix_fmts[name] = libs.avutil.av_get_pix_fmt(name.encode())
        full_range = is_full_range(name, frame.color_range)
        key = (width, height, pix_fmt, frame.colorspace, full_range)
        if key != self._ctx_key:
            ctx = libs.sws.sws_getCachedContext(
                self._ctx, width, height, pix_fmt, width, height, libs.rgb24, _SWS_BICUBIC, None, None, None)
            if not ctx:
                raise ValueError(f"swscale cannot convert {name} {width}x{height} to rgb24")
            self._ctx = ctx
            # sws_getCoefficients takes FFmpeg's colour-space numbers; unknown ones mean BT.601.
            coefficients = libs.sws.sws_getCoefficients(frame.colorspace)
            libs.sws.sws_setColorspaceDetails(
                ctx, coefficients, int(full_range), coefficients, 1, 0, 1 << 16, 1 << 16)
            self._ctx_key = key
        # The argument arrays are reused: building ctypes arrays per frame costs
        # as much as a small frame's conversion.
        sources, strides, targets, target_strides = self._arrays
        for i, plane in enumerate(frame.planes):
            sources[i] = plane.buffer_ptr
            strides[i] = plane.line_size
        targets[0] = dst.data_ptr()
        target_strides[0] = dst.stride(0)
        written = libs.sws.sws_scale(self._ctx, sources, strides, 0, height, targets, target_strides)
        if written != height:
            raise ValueError(f"swscale wrote {written} of {height} rows converting {name} to rgb24")
