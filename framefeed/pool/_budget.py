"""The cap on decoded frames in flight: back-pressure instead of growth.

A request is admitted once its output size is known (after planning, before
its output buffer exists) and leaves when its batch has been handed to its
future. Admission blocks while the request would push the frames or bytes in
flight past a cap, so a producer faster than the decoders waits instead of
piling up buffers. A request larger than a cap on its own is admitted when
nothing else is in flight: it runs alone rather than never.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass


class BudgetClosed(RuntimeError):
    """The pool closed while a request waited for room."""


@dataclass(frozen=True)
class Ticket:
    """An admitted request's share of the budget."""

    frames: int
    bytes: int


class InFlightBudget:
    """Frames and bytes in flight, capped (None: no cap on that measure).

    Thread-safe. `peak_frames`/`peak_bytes` are the largest totals ever
    admitted at once.
    """

    def __init__(self, max_frames: int | None, max_bytes: int | None) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.frames = 0
        self.bytes = 0
        self.peak_frames = 0
        self.peak_bytes = 0
        self._closed = False
        self._changed = threading.Condition()

    def _fits(self, frames: int, nbytes: int) -> bool:
        if self.frames == 0 and self.bytes == 0:
            return True  # alone, even if larger than a cap
        if self.max_frames is not None and self.frames + frames > self.max_frames:
            return False
        return self.max_bytes is None or self.bytes + nbytes <= self.max_bytes

    def acquire(self, frames: int, nbytes: int, give_up: Callable[[], bool] = lambda: False) -> Ticket:
        """Wait for room for `frames` frames of `nbytes` bytes in total.

        Raises:
            BudgetClosed: the budget was closed, or `give_up()` turned true, while waiting.
        """
        with self._changed:
            while not self._fits(frames, nbytes):
                if self._closed or give_up():
                    raise BudgetClosed("the pool stopped while this request waited for room in flight")
                self._changed.wait(timeout=0.5)  # a timeout so `give_up` is polled
            if self._closed:
                raise BudgetClosed("the pool stopped while this request waited for room in flight")
            self.frames += frames
            self.bytes += nbytes
            self.peak_frames = max(self.peak_frames, self.frames)
            self.peak_bytes = max(self.peak_bytes, self.bytes)
            return Ticket(frames, nbytes)

    def release(self, ticket: Ticket) -> None:
        with self._changed:
            self.frames -= ticket.frames
            self.bytes -= ticket.bytes
            self._changed.notify_all()

    def close(self) -> None:
        """Wake every waiter with `BudgetClosed`."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
