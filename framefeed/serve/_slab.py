"""Slots in a slab: first-fit allocation of byte ranges, freed ranges merged.

A slab is one block of memory allocated once (host shared memory or a
`cudaMalloc`'d device block); each request's frames are written into a slot
of it, leased to the client until the client releases it. This module only
keeps the books (offsets and lengths); it touches no memory and takes no
lock (the service calls it from its event loop thread only).
"""

from __future__ import annotations

import bisect


class SlabAllocator:
    """Byte ranges of `[0, size)` handed out first-fit, aligned to `alignment`.

    `allocate` returns None when no free range is large enough (the caller
    waits for a release); freeing merges a range with free neighbours, so a
    slab whose slots are all returned is one free range again.
    """

    def __init__(self, size: int, alignment: int = 4096) -> None:
        if size <= 0 or alignment <= 0 or alignment & (alignment - 1):
            raise ValueError(f"slab size ({size}) must be > 0 and alignment ({alignment}) a power of two")
        self.size = size - size % alignment
        self.alignment = alignment
        self._free_starts: list[int] = [0] if self.size else []
        self._free_lengths: dict[int, int] = {0: self.size} if self.size else {}
        self._used: dict[int, int] = {}
        self.used_bytes = 0

    def rounded(self, nbytes: int) -> int:
        """The bytes a slot for `nbytes` takes (at least one alignment unit)."""
        units = max(1, -(-nbytes // self.alignment))
        return units * self.alignment

    def fits_at_all(self, nbytes: int) -> bool:
        """Whether a slot of `nbytes` could ever be allocated (an empty slab is large enough)."""
        return self.rounded(nbytes) <= self.size

    def allocate(self, nbytes: int) -> int | None:
        """The offset of a new slot of at least `nbytes`, or None if none is free now."""
        length = self.rounded(nbytes)
        for start in self._free_starts:
            free = self._free_lengths[start]
            if free >= length:
                self._take(start, free, length)
                self._used[start] = length
                self.used_bytes += length
                return start
        return None

    def _take(self, start: int, free: int, length: int) -> None:
        index = bisect.bisect_left(self._free_starts, start)
        del self._free_starts[index]
        del self._free_lengths[start]
        if free > length:
            rest = start + length
            self._free_starts.insert(index, rest)
            self._free_lengths[rest] = free - length

    def free(self, offset: int) -> None:
        """Return the slot at `offset`.

        Raises:
            KeyError: no slot starts at `offset` (already freed, or never allocated).
        """
        length = self._used.pop(offset)
        self.used_bytes -= length
        start, end = offset, offset + length
        index = bisect.bisect_left(self._free_starts, start)
        if index < len(self._free_starts) and self._free_starts[index] == end:  # merge the next range
            end += self._free_lengths.pop(end)
            del self._free_starts[index]
        if index > 0:
            previous = self._free_starts[index - 1]
            if previous + self._free_lengths[previous] == start:  # merge into the previous range
                self._free_lengths[previous] = end - previous
                return
        self._free_starts.insert(index, start)
        self._free_lengths[start] = end - start

    @property
    def slots(self) -> int:
        return len(self._used)

    def largest_free(self) -> int:
        return max(self._free_lengths.values(), default=0)


class ByteBudget:
    """Bytes counted against a cap, with `SlabAllocator`'s interface but no
    memory behind it: frames sent inside replies (`transport="inline"`)
    are reserved here until their reply has gone, so they count against the
    memory budget like frames in a slab."""

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise ValueError(f"budget size ({size}) must be > 0")
        self.size = size
        self.used_bytes = 0
        self._used: dict[int, int] = {}
        self._next = 0

    def rounded(self, nbytes: int) -> int:
        return max(int(nbytes), 1)

    def fits_at_all(self, nbytes: int) -> bool:
        return self.rounded(nbytes) <= self.size

    def allocate(self, nbytes: int) -> int | None:
        length = self.rounded(nbytes)
        if self.used_bytes + length > self.size:
            return None
        self._next += 1
        self._used[self._next] = length
        self.used_bytes += length
        return self._next

    def free(self, key: int) -> None:
        self.used_bytes -= self._used.pop(key)

    @property
    def slots(self) -> int:
        return len(self._used)

    def largest_free(self) -> int:
        return self.size - self.used_bytes
