"""Where decoded frames' memory comes from: `empty_frames` is the one call
that allocates the buffers backends write frames into (output buffers of
batches, transform scratch, pool slots, loader buffers, single frames).

One seam, so that a test can bound every frame buffer framefeed allocates
with guard pages (`framefeed.testing.guard_pages`): a writer that strays one
byte outside the buffer it was given then faults at once instead of
corrupting the heap. `cpu_frame_allocator` swaps the CPU allocator for the
whole process (forked children inherit it); by default it is `torch.empty`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch

CpuAllocator = Callable[[tuple[int, ...], torch.dtype], torch.Tensor]
"""`(shape, dtype) -> tensor`: a contiguous CPU tensor, contents unspecified."""

_CPU = torch.device("cpu")
_cpu_allocator: CpuAllocator | None = None


def empty_frames(shape: tuple[int, ...], device: torch.device = _CPU, dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """An uninitialised contiguous tensor for frames on `device`."""
    if _cpu_allocator is not None and device.type == "cpu":
        return _cpu_allocator(tuple(shape), dtype)
    return torch.empty(shape, dtype=dtype, device=device)


def cpu_allocator_overridden() -> bool:
    """Whether `cpu_frame_allocator` is in effect (reused single-frame memory
    then comes from it too)."""
    return _cpu_allocator is not None


@contextlib.contextmanager
def cpu_frame_allocator(allocate: CpuAllocator) -> Iterator[None]:
    """Within the block, every CPU frame buffer comes from `allocate`."""
    global _cpu_allocator
    previous, _cpu_allocator = _cpu_allocator, allocate
    try:
        yield
    finally:
        _cpu_allocator = previous
