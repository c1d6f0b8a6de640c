"""Reusable host memory for single decoded frames.

Why: a 1080p RGB frame is 6 MB. Allocated per frame with `torch.empty`, it
comes from glibc's heap, and glibc hands freed blocks of that size back to
the kernel whenever two of them end up at the top of the heap (its trim
threshold). The next frame then pays one page fault per 4 KiB while swscale
writes it: about 300,000 faults and +40% wall time per 300 frames, in some
processes and not others (`benchmarks/results/core-cpu-sequential-faults.md`).

`take_frame_tensor` hands out uint8 tensors backed by private anonymous
mappings this module keeps. A mapping goes back to the free list only when
the last tensor or view on it is gone (a weak reference on the ndarray that
the tensor's storage owns), so a frame the caller still holds is never
written again. Up to `RETAINED_BYTES_LIMIT` of free mappings are kept, the
rest are unmapped.

The tensors behave as any CPU tensor, except that their storage cannot grow
(`resize_` to a larger size raises, as for `torch.from_numpy`).
`share_memory_()`, pickling and DataLoader queues work: moving a storage to
shared memory releases the mapping here.
"""

from __future__ import annotations

import math
import mmap
import os
import threading
import weakref
from collections import defaultdict

import numpy as np
import torch

from framefeed.engine.frame_memory import cpu_allocator_overridden, empty_frames

RETAINED_BYTES_LIMIT = 128 * 1024 * 1024
"""Free frame memory kept for reuse across all sizes, in bytes."""


def _new_mapping(nbytes: int) -> np.ndarray:
    if not hasattr(mmap, "MAP_PRIVATE"):  # Windows: heap memory, still reused
        return np.empty(nbytes, dtype=np.uint8)
    # MAP_PRIVATE: a forked child (DataLoader worker) gets its own
    # copy-on-write pages, never the parent's frames. Page-aligned, and
    # outside glibc's heap, so nothing there can trim it.
    return np.frombuffer(mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE), dtype=np.uint8)


class _FramePool:
    def __init__(self, retained_bytes_limit: int) -> None:
        self._limit = retained_bytes_limit
        # RLock: a lease can die (and call `_give_back`) while this thread is
        # inside `take`, e.g. when a refcount drop runs a weakref callback.
        self._lock = threading.RLock()
        self._free: dict[int, list[np.ndarray]] = defaultdict(list)
        self._free_bytes = 0
        self._leases: dict[int, weakref.ref] = {}

    def take(self, shape: tuple[int, ...], dtype: torch.dtype = torch.uint8) -> torch.Tensor:
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes == 0 or cpu_allocator_overridden():
            return empty_frames(shape, dtype=dtype)
        with self._lock:
            free = self._free.get(nbytes)
            if free:
                mapping = free.pop()
                self._free_bytes -= nbytes
            else:
                mapping = None
        if mapping is None:
            mapping = _new_mapping(nbytes)
        # The lease is the one ndarray the tensor's storage keeps alive; it
        # dies exactly when the last tensor or view on the storage does.
        lease = mapping.view()
        key = id(lease)
        released = weakref.ref(lease, lambda _, key=key, mapping=mapping: self._give_back(key, mapping))
        with self._lock:
            self._leases[key] = released
        return torch.from_numpy(lease).view(dtype).view(shape)  # a page-aligned mapping: any dtype fits

    def _give_back(self, key: int, mapping: np.ndarray) -> None:
        with self._lock:
            self._leases.pop(key, None)
            if self._free_bytes + mapping.nbytes <= self._limit:
                self._free[mapping.nbytes].append(mapping)
                self._free_bytes += mapping.nbytes

    def free_bytes(self) -> int:
        with self._lock:
            return self._free_bytes

    def leased(self) -> int:
        with self._lock:
            return len(self._leases)


_pool = _FramePool(RETAINED_BYTES_LIMIT)


def _reset_after_fork() -> None:
    # Another thread may have held the lock at fork; the child starts clean.
    global _pool
    _pool = _FramePool(RETAINED_BYTES_LIMIT)


os.register_at_fork(after_in_child=_reset_after_fork)


def take_frame_tensor(shape: tuple[int, ...], dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """A contiguous CPU tensor of `shape` and `dtype` (uint8 frames, or float32)
    with unspecified contents, from reused memory when a frame of the same byte
    size was dropped."""
    return _pool.take(shape, dtype)


def pool_free_bytes() -> int:
    """Bytes of frame memory held free for reuse in this process."""
    return _pool.free_bytes()


def pool_leased() -> int:
    """Number of frame tensors handed out whose memory is still in use."""
    return _pool.leased()
