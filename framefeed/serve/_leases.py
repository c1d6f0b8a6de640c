"""Client sessions and the slots leased to them.

A client opens a session (`Hello`) and keeps it alive with heartbeats that
also carry the slots it releases. A session whose heartbeats stop for
`lease_timeout` seconds (its process died, or hangs) is ended and all its
slots return, so a killed client costs the others nothing but that delay.

Waiting for room is the memory back-pressure: a request whose frames find
no free slot waits until a release makes one, up to its timeout, then fails
with `ServiceBusyError`. All of this runs on the server's event loop thread
(no locks); slabs keep their books in a `SlabAllocator`.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from framefeed.serve._slab import SlabAllocator
from framefeed.serve.protocol import ServiceBusyError, ServiceError


@dataclass(eq=False)
class Lease:
    """One slot of a slab, lent to a session until released."""

    id: int
    session: str
    slab: Any
    allocator: SlabAllocator
    offset: int
    nbytes: int
    event_index: int | None = None


@dataclass(eq=False)
class Session:
    token: str
    pid: int
    last_seen: float
    leases: dict[int, Lease] = field(default_factory=dict)


class LeaseBook:
    """Sessions, their leases, and requests waiting for room (see the module docstring)."""

    def __init__(self, lease_timeout: float) -> None:
        self.lease_timeout = lease_timeout
        self.sessions: dict[str, Session] = {}
        self._room: asyncio.Future | None = None
        self._next_id = 1
        self.waiting = 0
        self.expired_sessions = 0
        self.busy_timeouts = 0

    # -- sessions ---------------------------------------------------------------------------

    def open_session(self, pid: int) -> Session:
        session = Session(secrets.token_hex(16), pid, time.monotonic())
        self.sessions[session.token] = session
        return session

    def touch(self, token: str) -> Session:
        """The live session `token`, its heartbeat renewed.

        Raises:
            ServiceError: no such session (it expired, or the server restarted).
        """
        session = self.sessions.get(token)
        if session is None:
            raise ServiceError(
                "unknown session: it ended (no heartbeat for "
                f"{self.lease_timeout:g} s) or the server restarted; connect again"
            )
        session.last_seen = time.monotonic()
        return session

    def end_session(self, token: str) -> int:
        """End a session and return its leases; how many returned."""
        session = self.sessions.pop(token, None)
        if session is None:
            return 0
        count = len(session.leases)
        for lease in list(session.leases.values()):
            self._free(lease)
        session.leases.clear()
        self._notify()
        return count

    def expire(self) -> list[tuple[int, int]]:
        """End sessions silent for longer than the lease timeout: (pid, leases returned) each."""
        now = time.monotonic()
        ended = []
        for token, session in list(self.sessions.items()):
            if now - session.last_seen > self.lease_timeout:
                ended.append((session.pid, self.end_session(token)))
                self.expired_sessions += 1
        return ended

    # -- slots ------------------------------------------------------------------------------

    async def lease(self, session: Session, slab: Any, allocator: SlabAllocator, nbytes: int,
                    timeout: float) -> Lease:
        """A slot of `nbytes` in `slab`, waiting up to `timeout` seconds for room.

        The lease is not yet the session's: `grant` it once its frames are in.

        Raises:
            ServiceError: `nbytes` exceeds the whole slab.
            ServiceBusyError: no room within `timeout`.
        """
        if not allocator.fits_at_all(nbytes):
            raise ServiceError(
                f"this request's frames take {nbytes} bytes, more than the server's whole memory budget "
                f"({allocator.size} bytes): ask for fewer frames per request or raise --memory-budget"
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        offset = allocator.allocate(nbytes)
        if offset is None:
            self.waiting += 1
            try:
                while offset is None:  # allocation itself never awaits: no slot is lost to a cancel
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        self.busy_timeouts += 1
                        raise ServiceBusyError(
                            f"busy: no room for {nbytes} bytes of frames in the server's memory budget "
                            f"({allocator.used_bytes} of {allocator.size} bytes leased to clients) within "
                            f"{timeout:.1f} s; release batches sooner (batch.release() or drop them), "
                            "lower the look-ahead, or raise --memory-budget"
                        )
                    with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                        await asyncio.wait_for(asyncio.shield(self._room_changed()), remaining)
                    offset = allocator.allocate(nbytes)
            finally:
                self.waiting -= 1
        lease = Lease(self._next_id, session.token, slab, allocator, offset, nbytes)
        self._next_id += 1
        return lease

    def _room_changed(self) -> asyncio.Future:
        """A future that completes at the next release."""
        if self._room is None or self._room.done():
            self._room = asyncio.get_running_loop().create_future()
        return self._room

    def grant(self, lease: Lease) -> bool:
        """Hand `lease` to its session; False (and the slot freed) if the session is gone."""
        session = self.sessions.get(lease.session)
        if session is None:
            self._free(lease)
            self._notify()
            return False
        session.leases[lease.id] = lease
        return True

    def abandon(self, lease: Lease) -> None:
        """Free a lease never granted (its request failed or was cancelled)."""
        self._free(lease)
        self._notify()

    def release(self, session: Session, ids: list[int]) -> int:
        """Return `session`'s leases `ids` (unknown ids are ignored); how many returned."""
        count = 0
        for lease_id in ids:
            lease = session.leases.pop(lease_id, None)
            if lease is not None:
                self._free(lease)
                count += 1
        if count:
            self._notify()
        return count

    def _free(self, lease: Lease) -> None:
        lease.allocator.free(lease.offset)
        if lease.event_index is not None:
            lease.slab.events.release(lease.event_index)

    def _notify(self) -> None:
        """Wake every request waiting for room (each tries to allocate again)."""
        if self._room is not None and not self._room.done():
            self._room.set_result(None)

    def leases(self) -> int:
        return sum(len(s.leases) for s in self.sessions.values())
