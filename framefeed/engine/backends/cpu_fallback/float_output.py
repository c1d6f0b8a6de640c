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
for float32 destinations. It uses the libswscale that PyAV loaded (`rgb._libs`)
and swscale writes only into a picture laid out per its destination contract
(`rgb.padded_rgb_picture`: aligned, padded lines), never into a tight buffer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from framefeed.engine.backends.colour_range import is_full_range
from framefeed.engine.backends.cpu_fallback.rgb import (
    _I4,
    _P4,
    _SWS_BICUBIC,
    _libs,
    check_frame_size,
    padded_rgb_picture,
)

RGB48_MAX = 65535.0
"""What a 16-bit sample is divided by (in float32) to give [0, 1]."""

# Pixels of slack beyond `padded_rgb_picture`'s own padding: a 16-pixel block of
# 16-bit RGB is 96 bytes, more than the padding an 8-bit line gets.
_BLOCK_PIXELS = 16


def padded_rgb48_picture(height: int, width: int) -> torch.Tensor:
    """An `(height, width, 3)` uint16 view laid out as swscale expects its
    destinations (`rgb.padded_rgb_picture`, of which a 16-bit pixel takes two
    8-bit ones), with room for whole 16-pixel blocks past each line."""
    lines = padded_rgb_picture(height, 2 * (width + _BLOCK_PIXELS))[:, : 2 * width]
    return lines.flatten(1).view(torch.uint16).view(height, width, 3)


class FloatRgbWriter:
    """Converts decoded `av.VideoFrame`s to float32 RGB in [0, 1] into `(H, W, 3)` views.

    `rotation_quarter_turns` (0-3, counter-clockwise) is applied after conversion,
    as in `RgbConverter`. One writer per decoder: its swscale context and 16-bit
    picture are reused from frame to frame and are not thread-safe.
    """

    def __init__(self, rotation_quarter_turns: int = 0) -> None:
        self.turns = rotation_quarter_turns % 4
        self._libs = _libs()
        self._ctx: int | None = None
        self._ctx_key: tuple | None = None
        self._pix_fmts: dict[str, int] = {}
        self._picture: torch.Tensor | None = None  # swscale's 16-bit destination
        self._arrays = (_P4(), _I4(), _P4(), _I4())
        self._tail_ctx: int | None = None  # the last column's conversion (see `_convert_last_column`)
        self._tail_key: tuple | None = None
        self._tail: torch.Tensor | None = None

    def __del__(self) -> None:
        if self._libs is not None:
            for ctx in (self._ctx, self._tail_ctx):
                if ctx:
                    self._libs.sws.sws_freeContext(ctx)
            self._ctx = self._tail_ctx = None

    def write(self, frame: Any, dst: torch.Tensor) -> None:
        """Convert `frame` into `dst`, a float32 CPU tensor `(H, W, 3)` (after
        rotation), any strides. Nothing outside `dst` is written.

        Raises:
            FrameSizeChangedError: the frame (after rotation) is not `H x W`;
                `dst` is left untouched.
            ValueError: `dst` is not float32 on the CPU; swscale cannot
                convert the frame's pixel format to 16-bit RGB.
            RuntimeError: PyAV's libswscale cannot be located (an unusual PyAV build).
        """
        if dst.dtype != torch.float32 or dst.device.type != "cpu":
            raise ValueError(f"destination must be a float32 CPU tensor, got {dst.dtype} on {dst.device}")
        check_frame_size(frame, dst, self.turns)
        rgb48 = self._scale_to_rgb48(frame).numpy()
        if self.turns:
            rgb48 = np.rot90(rgb48, self.turns, axes=(0, 1))
        # float32(sample) / float32(65535), correctly rounded: torchcodec's division.
        np.divide(rgb48, np.float32(RGB48_MAX), out=dst.numpy(), dtype=np.float32)

    def _scale_to_rgb48(self, frame: Any) -> torch.Tensor:
        """The frame as `(H, W, 3)` native-endian uint16 RGB, a view of the padded picture."""
        libs = self._libs
        if libs is None:
            raise RuntimeError("float32 output needs PyAV's libswscale, which could not be located")
        width, height = frame.width, frame.height
        name = frame.format.name
        pix_fmt = self._pix_fmts.get(name)
        if pix_fmt is None:
            pix_fmt = self._pix_fmts[name] = libs.avutil.av_get_pix_fmt(name.encode())
        full_range = _swscale_full_range(name, frame.color_range)
        key = (width, height, pix_fmt, frame.colorspace, full_range)
        if key != self._ctx_key:
            rgb48 = libs.avutil.av_get_pix_fmt(b"rgb48")  # native endianness, as torchcodec asks
            ctx = libs.sws.sws_getCachedContext(
                self._ctx, width, height, pix_fmt, width, height, rgb48, _SWS_BICUBIC, None, None, None)
            if not ctx:
                raise ValueError(f"swscale cannot convert {name} {width}x{height} to rgb48")
            self._ctx = ctx
            coefficients = libs.sws.sws_getCoefficients(frame.colorspace)
            libs.sws.sws_setColorspaceDetails(
                ctx, coefficients, int(full_range), coefficients, 1, 0, 1 << 16, 1 << 16)
            self._ctx_key = key
        picture = self._picture
        if picture is None or tuple(picture.shape[:2]) != (height, width):
            picture = self._picture = padded_rgb48_picture(height, width)
        sources, strides, targets, target_strides = self._arrays
        for i, plane in enumerate(frame.planes):
            sources[i] = plane.buffer_ptr
            strides[i] = plane.line_size
        targets[0] = picture.data_ptr()
        target_strides[0] = picture.stride(0) * picture.element_size()
        written = libs.sws.sws_scale(self._ctx, sources, strides, 0, height, targets, target_strides)
        if written != height:
            raise ValueError(f"swscale wrote {written} of {height} rows converting {name} to rgb48")
        if _drops_last_column(frame):
            self._convert_last_column(frame, pix_fmt, full_range, picture)
        return picture

    def _convert_last_column(self, frame: Any, pix_fmt: int, full_range: bool, picture: torch.Tensor) -> None:
        """Write the last column that swscale's special converter skipped
        (`_drops_last_column`): the same converter, on the 2 pixels from that
        column on. The column is even, so its chroma sample is its own; the
        converter maps each pixel from its own samples, and the second pixel
        (read from the lines' padding, inside each plane's line) is dropped."""
        libs = self._libs
        assert libs is not None
        width, height = frame.width, frame.height
        last = width - 1
        planes = frame.planes
        # Full-width planes give two samples (the last one and one of padding), halved ones one.
        offsets = [last if plane.width == width else last // 2 for plane in planes]
        samples = [2 if plane.width == width else 1 for plane in planes]
        if any(plane.line_size < offset + count for plane, offset, count in zip(planes, offsets, samples, strict=True)):
            raise ValueError(f"cannot convert the last column of a {width}x{height} {frame.format.name} frame "
                             "to rgb48: its lines have no padding")
        key = (height, pix_fmt, frame.colorspace, full_range)
        if key != self._tail_key:
            ctx = libs.sws.sws_getCachedContext(self._tail_ctx, 2, height, pix_fmt, 2, height,
                                                libs.avutil.av_get_pix_fmt(b"rgb48"), _SWS_BICUBIC, None, None, None)
            if not ctx:
                raise ValueError(f"swscale cannot convert {frame.format.name} 2x{height} to rgb48")
            self._tail_ctx = ctx
            coefficients = libs.sws.sws_getCoefficients(frame.colorspace)
            libs.sws.sws_setColorspaceDetails(ctx, coefficients, int(full_range), coefficients, 1, 0, 1 << 16, 1 << 16)
            self._tail_key = key
        if self._tail is None or self._tail.shape[0] != height:
            self._tail = padded_rgb48_picture(height, 2)
        sources, strides, targets, target_strides = self._arrays
        for i, (plane, offset) in enumerate(zip(planes, offsets, strict=True)):
            sources[i] = plane.buffer_ptr + offset
            strides[i] = plane.line_size
        targets[0] = self._tail.data_ptr()
        target_strides[0] = self._tail.stride(0) * self._tail.element_size()
        written = libs.sws.sws_scale(self._tail_ctx, sources, strides, 0, height, targets, target_strides)
        if written != height:
            raise ValueError(f"swscale wrote {written} of {height} rows converting the last column to rgb48")
        picture[:, last] = self._tail[:, 0]


def _drops_last_column(frame: Any) -> bool:
    """Whether swscale's special converter for 8-bit planar 4:2:0 and 4:2:2 YUV,
    which it takes for pictures of even height, converts `frame`: at an odd
    width it leaves the last column of 16-bit RGB unwritten (FFmpeg 8; the
    FFmpeg 5.1 that torchcodec 0.17 runs on here writes a wrong one)."""
    fmt = frame.format
    components = fmt.components
    return (frame.width % 2 == 1 and frame.height % 2 == 0 and not fmt.is_rgb and len(components) >= 3
            and components[0].bits == 8 and len(frame.planes) >= 3
            and fmt.chroma_width(frame.width) == (frame.width + 1) // 2)


def _swscale_full_range(pixel_format: str, color_range: int | None) -> bool:
    """The source range torchcodec's conversion uses: the frame's tag when it
    has one, else swscale's default for the format, which is full range for
    `yuvj*` and for gray ones (luma only). (For 8-bit RGB, gray converts
    alike either way; for 16-bit RGB the range matters.)"""
    if not color_range and (pixel_format.startswith(("gray", "ya"))):
        return True
    return is_full_range(pixel_format, color_range)
