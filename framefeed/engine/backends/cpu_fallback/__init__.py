"""CPU decoding with FFmpeg through PyAV."""

from framefeed.engine.backends.cpu_fallback.backend import CpuBackend

__all__ = ["CpuBackend"]
