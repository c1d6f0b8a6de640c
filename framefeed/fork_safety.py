"""Forking a process that has threads, without its garbage in the child.

A child made by `fork()` holds only the forking thread, but every object of
the parent. If the child's garbage collector then collects a cycle the parent
left behind (a gRPC channel, a thread pool, a decoder whose finalizer joins
or locks), that finalizer runs in the child and waits forever on a thread or
lock the child does not have. Seen here as a forked child stuck in
"Garbage-collecting" under `torch.manual_seed`, and as DataLoader workers that
never sent a batch.

The remedy CPython documents for fork without exec: collect in the parent,
then `gc.freeze()` across the fork, so the child's collector never looks at
the parent's objects. It also spares the child a copy of the parent's heap: a
collection touches every object it tracks, and each page it touches is copied
(a full collection in a child of a process that imported torch and PyAV took
about 130 ms here, several times the child's own work in the fuzz runs)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["parent_garbage_kept_from_children"]


@contextmanager
def parent_garbage_kept_from_children() -> Iterator[None]:
    """Within this block, processes forked from this one never collect (and so
    never finalize) objects this process made before the block: its garbage is
    collected here first, the rest frozen until the block ends."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
