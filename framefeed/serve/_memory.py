"""Giving memory back to the system after a burst, and measuring it.

Frames pass through the server's heap (the pool's output batches, replies
sent inline) between decoding and the slab. glibc keeps freed blocks below
its mmap threshold (which grows up to 32 MiB after large frees) for reuse,
so after a burst of large requests the server's resident size stays at its
peak. `TrimPolicy` calls `malloc_trim(0)` (every arena, free pages returned
with MADV_DONTNEED) once the server is idle after enough bytes went
through, at most once a second: nothing on the request path.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import time
from typing import Any


@functools.cache
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
        return libc
    except (OSError, AttributeError, TypeError):  # not glibc: nothing to trim
        return None


def trim_heap() -> bool:
    """Return free heap memory to the system (glibc's `malloc_trim(0)`); whether it could."""
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


class TrimPolicy:
    """When to trim: after `threshold` bytes of frames went through since the
    last trim, once nothing is in flight, at most every `interval` seconds."""

    def __init__(self, threshold: int = 32 << 20, interval: float = 1.0) -> None:
        self.threshold = threshold
        self.interval = interval
        self._bytes = 0
        self._last = 0.0
        self.running = False
        self.trims = 0

    def passed(self, nbytes: int) -> None:
        self._bytes += nbytes

    def due(self, in_flight: int) -> bool:
        return (not self.running and in_flight == 0 and self._bytes >= self.threshold
                and time.monotonic() - self._last >= self.interval)

    def begin(self) -> None:
        self.running = True
        self._bytes = 0

    def end(self) -> None:
        self.running = False
        self._last = time.monotonic()
        self.trims += 1


def memory_of(pid: int | str = "self") -> dict[str, int]:
    """Resident memory of a process from /proc, in bytes: `rss` (VmRSS),
    `anon` (RssAnon: heap and anonymous mappings), `shmem` (RssShmem:
    shared memory such as its slabs), `threads`."""
    values: dict[str, int] = {}
    keys = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file", "RssShmem": "shmem", "Threads": "threads"}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in keys:
                number = int(rest.split()[0])
                values[keys[name]] = number if name == "Threads" else number * 1024
    return values
