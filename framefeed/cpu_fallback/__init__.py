"""CPU decoding with FFmpeg through PyAV."""

from framefeed.cpu_fallback.backend import CpuBackend

__all__ = ["CpuBackend"]
