"""The last stage of the engine: backends turn compressed packets into RGB
frames written into the caller's memory.

- `registry`: which backend serves a device (`open_backend`, `register`,
  `BackendSpec`, `BackendContext`); a new device is one module that registers.
- `devices`: the device a user asked for (`resolve_device`).
- `status`: `CpuFallbackStatus`, why a CUDA request decodes on the CPU.
- `transformed`: decoder transforms for backends that do not fuse them.
- `cpu_fallback`: FFmpeg's software decoders through PyAV, swscale to RGB.
- `gpu_decode`: NVDEC through PyNvVideoCodec, CuPy colour kernels (loaded
  only when a CUDA device asks for it, so CUDA-free workers never import it).
"""

from framefeed.engine.backends.devices import resolve_device
from framefeed.engine.backends.registry import (
    BackendContext,
    BackendSelection,
    BackendSpec,
    open_backend,
    register,
    registered,
)
from framefeed.engine.backends.status import CpuFallbackStatus

__all__ = [
    "BackendContext",
    "BackendSelection",
    "BackendSpec",
    "CpuFallbackStatus",
    "open_backend",
    "register",
    "registered",
    "resolve_device",
]
