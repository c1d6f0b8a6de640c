"""`set_cuda_backend`: torchcodec's switch between its CUDA backends, accepted
so that code written for torchcodec runs unchanged.

torchcodec has two CUDA backends, its own NVDEC one ("nvdec", the default,
formerly "beta") and FFmpeg's ("ffmpeg"). framefeed decodes CUDA devices with
its NVDEC backend whichever is named (`framefeed.engine.backends.gpu_decode`,
which falls back to the CPU with a reason where NVDEC cannot decode a stream):
the context manager checks its argument as torchcodec does and records the
choice, which `cuda_backend()` reports, and changes nothing else.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

_CUDA_BACKEND: contextvars.ContextVar[str] = contextvars.ContextVar("framefeed_cuda_backend", default="nvdec")
_BACKENDS = ("nvdec", "ffmpeg")


@contextlib.contextmanager
def set_cuda_backend(backend: str) -> Iterator[None]:
    """Within the block, `backend` ("nvdec", "ffmpeg", or "beta", the old name of
    "nvdec"; case-insensitive) is the CUDA backend asked for. Thread- and
    async-safe (a context variable), as torchcodec's.

    Raises:
        ValueError: another name (torchcodec's phrase "Invalid CUDA backend (...)").
        AttributeError: not a str (as torchcodec, which calls `.lower()`).
    """
    name = backend.lower()
    if name == "beta":
        name = "nvdec"
    if name not in _BACKENDS:
        raise ValueError(f"Invalid CUDA backend ({name}). Supported values are 'nvdec' and 'ffmpeg'.")
    token = _CUDA_BACKEND.set(name)
    try:
        yield
    finally:
        _CUDA_BACKEND.reset(token)


def cuda_backend() -> str:
    """The CUDA backend named by the innermost `set_cuda_backend` ("nvdec" outside any)."""
    return _CUDA_BACKEND.get()
