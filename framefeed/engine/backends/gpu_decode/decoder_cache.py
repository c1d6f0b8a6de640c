"""Reuse of NVDEC decoders across `VideoDecoder`s: an LRU pool per device.

Creating an NVDEC decoder costs milliseconds and tens of megabytes of device
memory; a loop over thousands of short clips must not create one per clip.
A backend takes a decoder out of the pool for its lifetime and gives it back
when it is garbage-collected or closed. Idle decoders are kept per device,
keyed by codec, surface format, bit depth and *size bucket*: each decoder is
created with the bucket's size as `maxwidth`/`maxheight`, so any stream of
the bucket fits it (see `size_bucket`), and the least recently used ones are
destroyed beyond the pool's capacity, off the caller's thread
(`reaper.DecoderReaper`).

Why buckets (PyNvVideoCodec 2.2.4 / Video Codec SDK `NvDecoder.cpp`, read in
NVIDIA's sources as mirrored by suzuca-ai/PyNvVideoCodec@12cae8be, and the
same error strings in the 2.2.4 wheel's `PyNvVideoCodec_130*.so`): a decoder
created without a maximum size takes the first stream's *coded* size as its
maximum; a later stream with a larger coded size (HEVC coded 1080 vs 1088,
the same 1920x1080 display size) makes `ReconfigureDecoder` throw "Reconfigure
Not supported when width/height > maxwidth/maxheight" from inside the
parser's sequence callback, a C++ exception crossing the driver's C frames.
NVIDIA's own decoder cache (`DecoderCommon::ReconfigureDecoder`) reuses a
decoder only when the stream fits its maximum and then calls
`setReconfigParams(width, height)`; framefeed does the same
(`NvdecDecoders.open_backend`). Bit depth and chroma format cannot change on
reconfigure at all ("Reconfigure Not supported for bit depth change"), so
they are part of the key.

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
# Bucket sizes are multiples of this. A coded size exceeds the display size
# by less than one coding unit: 16 for H.264 and MPEG-1/2 macroblocks, 8 for
# VP8/VP9/AV1, at most 64 for HEVC (MinCbSizeY <= CtbSizeY <= 64), so a
# bucket of the display size rounded up to 64 holds the coded size too.
BUCKET_ALIGNMENT = 64


def capacity_from_environment() -> int:
    """Idle decoders kept per device: `$FRAMEFEED_NVDEC_CACHE_SIZE`, default 8."""
    value = os.environ.get("FRAMEFEED_NVDEC_CACHE_SIZE", "")
    try:
        return max(int(value), 0) if value else DEFAULT_CAPACITY
    except ValueError:
        return DEFAULT_CAPACITY


def size_bucket(width: int, height: int, limit: tuple[int, int] | None = None) -> tuple[int, int]:
    """The decoder size bucket of a `width x height` stream: each side rounded
    up to `BUCKET_ALIGNMENT` (1920x1080 and 1920x1088 share 1920x1088), at
    most `limit` (the GPU's `width_max`, `height_max`; 0 means none) but never
    below the stream's own size."""
    def up(value: int, most: int) -> int:
        aligned = -(-value // BUCKET_ALIGNMENT) * BUCKET_ALIGNMENT
        return max(min(aligned, most), value) if most > 0 else aligned

    most_w, most_h = limit if limit is not None else (0, 0)
    return up(width, most_w), up(height, most_h)


@dataclass(frozen=True)
class DecoderKey:
    """What a decoder was created for; only equal keys share decoders.

    `width`, `height` are the size bucket (`size_bucket`), given to
    `CreateDecoder` as `maxwidth`, `maxheight`; `bit_depth` and
    `surface_format` (which implies the chroma format) cannot change on a
    reconfigure.
    """

    device_index: int
    codec: str
    width: int
    height: int
    surface_format: str
    bit_depth: int = 8


@dataclass(eq=False)
class PooledDecoder:
    """A decoder, the CUDA stream it runs on, and how often it was handed out.

    `configured`: the display size of the stream it last decoded (None
    before its first); `broken`: an NVDEC call failed, so it is destroyed
    when given back instead of being reused.
    """

    key: DecoderKey
    decoder: Any
    stream: Any
    uses: int = 0
    configured: tuple[int, int] | None = None
    broken: bool = False

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
        """Take a decoder back; evict the least recently used beyond capacity.
        A broken decoder is destroyed instead of kept."""
        if entry.broken:
            with self._lock:
                self.evicted += 1
            self._destroy(entry)
            return
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
        """`on_evict` owns the destruction when given (it hands the decoder to
        a reaper thread); otherwise the last reference is dropped here."""
        if self._on_evict is not None:
            self._on_evict(entry)
        else:
            entry.decoder = None  # PyNvVideoCodec frees the decoder with its last reference
