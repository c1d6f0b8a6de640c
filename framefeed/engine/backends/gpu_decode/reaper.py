"""Destroying NVDEC decoders off the decoding threads: `DecoderReaper`.

Destroying a decoder is slow and synchronising: its stream must drain first
(the colour kernel may still read its pictures), then PyNvVideoCodec's
destructor runs `cuvidDestroyVideoParser`, `cuvidDestroyDecoder`, `cuMemFree`
of every output buffer and `cuEventDestroy` of every frame event
(`NvDecoder::~NvDecoder` in the Video Codec SDK's `NvDecoder.cpp`), and
`cuMemFree` waits for the whole device. Done inline when a decoder cache
evicts at 8+ threads, it stalled the thread that was about to decode, with
the GIL held for the stream synchronise.

So an evicted decoder is handed to one daemon thread per process. It waits
for the decoder's stream with `OwnedStream.finish` (an event synchronise,
which releases the GIL), then drops the last reference (the destructor runs
on this thread; pybind11 destructors hold the GIL, but by then no work of
the decoder is pending), then destroys the stream and its events.
`drain()` waits until everything handed over is gone: owners call it when
they close, and it runs at interpreter exit while CUDA is still up.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
from typing import Any

logger = logging.getLogger("framefeed.nvdec")


class DecoderReaper:
    """Destroys retired decoders (`PooledDecoder`s) on a thread of its own."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Any] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self.destroyed = 0

    def retire(self, entry: Any) -> None:
        """Queue `entry` (its `decoder` and `stream`) for destruction; returns at once."""
        self._ensure_thread()
        self._queue.put(entry)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every retired decoder is destroyed; False on timeout."""
        if self._thread is None or self._pid != os.getpid():
            return True
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
                return
            self._pid = os.getpid()  # a forked child starts its own thread
            self._thread = threading.Thread(target=self._run, name="framefeed-nvdec-reaper", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if isinstance(item, threading.Event):
                item.set()
                continue
            try:
                destroy(item)
                self.destroyed += 1
            except Exception:  # a broken driver must not end the reaper
                logger.exception("framefeed: destroying an NVDEC decoder failed")


def destroy(entry: Any) -> None:
    """Wait for the decoder's stream, drop the decoder, destroy the stream."""
    stream = getattr(entry, "stream", None)
    if stream is not None and hasattr(stream, "finish"):
        stream.finish()  # nothing queued may still read its pictures
    entry.decoder = None  # PyNvVideoCodec destroys the decoder with its last reference
    if stream is not None and hasattr(stream, "close"):
        stream.close()


_reaper = DecoderReaper()


def reaper() -> DecoderReaper:
    """The process's reaper."""
    return _reaper


@atexit.register
def _drain_at_exit() -> None:
    # Registered when this module is imported, which is before any decoder
    # exists: atexit runs handlers in reverse order, so this runs after the
    # owners' own exit handlers have retired their idle decoders.
    _reaper.drain(timeout=10.0)
