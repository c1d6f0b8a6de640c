"""Reuse of NVDEC decoders across `VideoDecoder`s: an LRU pool per device.

Creating an NVDEC decoder costs milliseconds and tens of megabytes of device
memory; a loop over thousands of short clips must not create one per clip.
A backend takes a decoder out of the pool for its lifetime and gives it back
when it is garbage-collected or closed. Idle decoders are kept per device,
keyed by codec, picture size and surface format (a decoder is only handed to
streams it was configured for), and the least recently used ones are
destroyed beyond the pool's capacity.

Each decoder keeps the CUDA stream it was created with (PyNvVideoCodec binds
a decoder to one stream at creation), so work queued by an earlier owner
stays ordered before the next owner's.

This module does not touch CUDA itself: decoders come from a factory. Each
`gpu_decode.owner.NvdecDecoders` holds one cache (no process-wide state here).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DEFAULT_CAPACITY = 8


def capacity_from_environment() -> int:
    """Idle decoders kept per device: `$FRAMEFEED_NVDEC_CACHE_SIZE`, default 8."""
    value = os.environ.get("FRAMEFEED_NVDEC_CACHE_SIZE", "")
    try:
        return max(int(value), 0) if value else DEFAULT_CAPACITY
    except ValueError:
        return DEFAULT_CAPACITY


@dataclass(frozen=True)
class DecoderKey:
    """What a decoder was configured for; only equal keys share decoders."""

    device_index: int
    codec: str
    width: int
    height: int
    surface_format: str


@dataclass(eq=False)
class PooledDecoder:
    """A decoder, the CUDA stream it runs on, and how often it was handed out."""

    key: DecoderKey
    decoder: Any
    stream: Any
    uses: int = 0

    @property
    def reused(self) -> bool:
        """Whether an earlier owner decoded with it (its state needs a flush)."""
        return self.uses > 1


DecoderFactory = Callable[[DecoderKey], PooledDecoder]


class DecoderCache:
    """Idle decoders of one device, least recently released first out.

    Thread-safe. `acquire` hands a decoder to exactly one owner; `release`
    takes it back.
    """

    def __init__(self, factory: DecoderFactory, capacity: int = DEFAULT_CAPACITY,
                 on_evict: Callable[[PooledDecoder], None] | None = None) -> None:
        self._factory = factory
        self.capacity = capacity
        self._on_evict = on_evict
        self._idle: OrderedDict[int, PooledDecoder] = OrderedDict()  # id -> entry, oldest first
        self._lock = threading.Lock()
        self.created = 0
        self.reused = 0
        self.evicted = 0

    def acquire(self, key: DecoderKey) -> PooledDecoder:
        """A decoder for `key`: the most recently released idle one, else a new one.

        Raises whatever the factory raises when a new decoder cannot be created.
        """
        with self._lock:
            for ident in reversed(self._idle):
                entry = self._idle[ident]
                if entry.key == key:
                    del self._idle[ident]
                    entry.uses += 1
                    self.reused += 1
                    return entry
        entry = self._factory(key)  # outside the lock: creation is slow
        with self._lock:
            self.created += 1
        entry.uses = 1
        return entry

    def release(self, entry: PooledDecoder) -> None:
        """Take a decoder back; evict the least recently used beyond capacity."""
        evicted = []
        with self._lock:
            self._idle[id(entry)] = entry
            self._idle.move_to_end(id(entry))
            while len(self._idle) > self.capacity:
                _, oldest = self._idle.popitem(last=False)
                evicted.append(oldest)
                self.evicted += 1
        for oldest in evicted:
            self._destroy(oldest)

    def idle_count(self) -> int:
        with self._lock:
            return len(self._idle)

    def clear(self) -> None:
        """Destroy every idle decoder."""
        with self._lock:
            idle = list(self._idle.values())
            self._idle.clear()
        for entry in idle:
            self._destroy(entry)

    def _destroy(self, entry: PooledDecoder) -> None:
        if self._on_evict is not None:
            self._on_evict(entry)
        entry.decoder = None  # PyNvVideoCodec frees the decoder with its last reference
