"""Output buffers bounded by guard pages: proof that a writer stays inside the
memory it was given.

`guarded_tensor(shape, placement="end")` returns a CPU tensor whose storage
ends exactly where a `PROT_NONE` page begins (`placement="start"`: starts right
after one), so one byte written past the end (or before the start) faults at
once, instead of corrupting whatever the heap put there.
`guarded_frame_memory(placement)` routes every CPU frame buffer framefeed
allocates (`framefeed.engine.frame_memory`) through it for the duration of a
block. Run code under test in a child process (`run_in_child`) so a fault
fails one check, not the test session.

Linux and macOS (mmap + mprotect through ctypes).
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import itertools
import math
import mmap
import os
import pickle
import signal
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from framefeed.engine.frame_memory import cpu_frame_allocator
from framefeed.fork_safety import parent_garbage_kept_from_children

PAGE = mmap.PAGESIZE
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.mprotect.restype = ctypes.c_int
_PROT_NONE = 0


def _guarded_bytes(nbytes: int, placement: str) -> np.ndarray:
    if placement not in ("end", "start"):
        raise ValueError(f"placement must be 'end' or 'start', got {placement!r}")
    pages = max(1, math.ceil(nbytes / PAGE))
    mapping = mmap.mmap(-1, (pages + 2) * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    base = ctypes.addressof(ctypes.c_char.from_buffer(mapping))
    for page in (base, base + (pages + 1) * PAGE):
        if _libc.mprotect(page, PAGE, _PROT_NONE) != 0:
            raise OSError(ctypes.get_errno(), "mprotect failed")
    offset = PAGE + (pages * PAGE - nbytes if placement == "end" else 0)
    # The array keeps the mapping alive; the tensor keeps the array alive.
    return np.frombuffer(mapping, dtype=np.uint8, count=nbytes, offset=offset)


def guarded_tensor(shape: tuple[int, ...], dtype: torch.dtype = torch.uint8, placement: str = "end") -> torch.Tensor:
    """A contiguous CPU tensor bounded by a `PROT_NONE` page: right after its
    last byte (`placement="end"`) or right before its first (`"start"`).
    Filled with 0xA5 so unwritten pixels show."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    raw = _guarded_bytes(math.prod(shape) * itemsize, placement)
    raw[:] = 0xA5
    return torch.from_numpy(raw).view(dtype).view(shape)


@contextlib.contextmanager
def guarded_frame_memory(placement: str = "alternate") -> Iterator[None]:
    """Every CPU frame buffer framefeed allocates in this block (and in
    children forked from it) is a `guarded_tensor`: with its end at a guard
    page, its start, or (`"alternate"`) each in turn."""
    turns = itertools.cycle(("end", "start") if placement == "alternate" else (placement,))

    def allocate(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        return guarded_tensor(shape, dtype, next(turns))

    with cpu_frame_allocator(allocate):
        yield


def run_in_child(function: Callable[[], Any], timeout_s: float = 300.0) -> Any:
    """`function()` in a forked child; its result (pickled) or its exception
    re-raised here. A child killed by a signal (a guard-page fault) raises
    `ChildCrashed` naming the signal."""
    read_end, write_end = os.pipe()
    with parent_garbage_kept_from_children():
        pid = os.fork()
    if pid == 0:  # the child: report, then leave without running parent cleanups
        os.close(read_end)
        faulthandler.disable()  # a fault is the parent's to report, as a failed check
        faulthandler.register(signal.SIGUSR1, all_threads=True)  # the parent asks for stacks before a kill
        try:
            try:
                payload = pickle.dumps(("ok", function()))
            except BaseException as error:  # noqa: BLE001 - reported to the parent
                payload = pickle.dumps(("error", f"{type(error).__name__}: {error}\n{traceback.format_exc()}"))
            with os.fdopen(write_end, "wb") as out:
                out.write(payload)
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as results:
        data = _read_with_timeout(results, pid, timeout_s)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        raise ChildCrashed(f"the child died from {signal.Signals(os.WTERMSIG(status)).name}")
    if not data:
        raise ChildCrashed(f"the child exited with status {os.WEXITSTATUS(status)} and no result")
    kind, value = pickle.loads(data)
    if kind == "error":
        raise AssertionError(f"the child raised {value}")
    return value


class ChildCrashed(AssertionError):
    """The code under test killed its process (a guard page caught a stray write)."""


def _read_with_timeout(stream: Any, pid: int, timeout_s: float) -> bytes:
    import select

    chunks = []
    fd = stream.fileno()
    while True:
        ready, _, _ = select.select([fd], [], [], timeout_s)
        if not ready:
            os.kill(pid, signal.SIGUSR1)  # its threads' stacks to stderr, for the report
            time.sleep(1.0)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise ChildCrashed(f"the child did not finish within {timeout_s} s (its stacks are on stderr)")
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
