"""Colour facts shared by the CPU and GPU converters, so both read a frame's
range the same way."""

from __future__ import annotations

AVCOL_RANGE_JPEG = 2  # FFmpeg's "full range" value


def is_full_range(pixel_format: str, color_range: int | None) -> bool:
    """Full (0-255) rather than limited (16-235) range: tagged so, or one of
    FFmpeg's deprecated yuvj* formats, which imply it."""
    return color_range == AVCOL_RANGE_JPEG or pixel_format.startswith("yuvj")
