"""Client sessions, the slots leased to them, and the queue for room.

A client opens a session (its hello) and keeps it alive with heartbeats that
also carry the slots it releases. A session ends on `Goodbye`, when the
client's authentication connection closes (its process ended), or when its
heartbeats stop for `lease_timeout` seconds (it hangs, or a TCP client
died); all its slots then return.

Memory is reserved before any work: a request's frames get their slot (or,
for frames sent inside the reply, their share of the budget) before they
are decoded, so frames never wait in memory for room. Fair share:
- each session may hold at most `client_bytes` bytes and `client_leases`
  slots (leased and reserved together); a request beyond that waits for
  the session's own releases and never blocks other sessions;
- requests waiting for room are served in order of how much their session
  holds (least first), then of arrival at the server (`arrival`, taken
  before the request is planned: planning runs in threads and finishes in
  any order, which had given a client's waiting requests room out of the
  order they came in). A request that does not fit blocks
  those behind it on the same slab (no overtaking), so a large request is
  not starved by a stream of small ones.
A request that finds no room within its timeout fails with `ServiceBusyError`.

All of this runs on the server's event loop thread (no locks); slabs keep
their books in a `SlabAllocator` (frames in replies in a `ByteBudget`).
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from framefeed.serve._auth import Peer
from framefeed.serve.protocol import ServiceBusyError, ServiceError


@dataclass(eq=False)
class Session:
    """One client: who it is (`peer`), what it holds and what it waits for."""

    token: str
    peer: Peer
    last_seen: float
    leases: dict[int, Lease] = field(default_factory=dict)
    held_bytes: int = 0  # leased and reserved
    held_slots: int = 0
    requests: int = 0  # Decode calls in progress
    connection: Any = None  # the authentication connection's writer (Unix sessions)
    ended: bool = False

    @property
    def pid(self) -> int:
        return self.peer.pid


@dataclass(eq=False)
class Lease:
    """A slot of a slab (or bytes of the inline budget), reserved for one
    request, then lent to its session until released."""

    id: int
    owner: Session
    slab: Any
    allocator: Any
    offset: int
    nbytes: int
    length: int
    event_index: int | None = None
    freed: bool = False


@dataclass(eq=False)
class _Waiter:
    seq: int
    session: Session
    slab: Any
    allocator: Any
    nbytes: int
    length: int
    future: asyncio.Future


class LeaseBook:
    """Sessions, their leases, and requests waiting for room (see the module docstring)."""

    def __init__(self, lease_timeout: float, client_bytes: int, client_leases: int) -> None:
        self.lease_timeout = lease_timeout
        self.client_bytes = client_bytes
        self.client_leases = client_leases
        self.sessions: dict[str, Session] = {}
        self._waiters: list[_Waiter] = []
        self._ids = itertools.count(1)
        self._order = itertools.count()
        self.waiting = 0
        self.expired_sessions = 0
        self.busy_timeouts = 0

    # -- sessions ---------------------------------------------------------------------------

    def open_session(self, peer: Peer) -> Session:
        session = Session(secrets.token_hex(16), peer, time.monotonic())
        self.sessions[session.token] = session
        return session

    def touch(self, token: str) -> Session:
        """The live session `token`, its heartbeat renewed.

        Raises:
            ServiceError: no such session (it ended, or the server restarted).
        """
        session = self.sessions.get(token)
        if session is None:
            raise ServiceError(
                "unknown session: it ended (its process exited, or no heartbeat for "
                f"{self.lease_timeout:g} s) or the server restarted; connect again"
            )
        session.last_seen = time.monotonic()
        return session

    def end_session(self, token: str) -> int:
        """End a session: its leases return, its waiting requests fail; how many leases returned."""
        session = self.sessions.pop(token, None)
        if session is None:
            return 0
        session.ended = True
        count = len(session.leases)
        for lease in list(session.leases.values()):
            self._free(lease)
        session.leases.clear()
        for waiter in [w for w in self._waiters if w.session is session]:
            self._waiters.remove(waiter)
            if not waiter.future.done():
                waiter.future.set_exception(ServiceError("the session ended while this request waited for room"))
        if session.connection is not None:
            session.connection.close()
            session.connection = None
        self._dispatch()
        return count

    def expire(self) -> list[tuple[Session, int]]:
        """End sessions silent for longer than the lease timeout: (session, leases returned) each."""
        now = time.monotonic()
        ended = []
        for token, session in list(self.sessions.items()):
            if now - session.last_seen > self.lease_timeout:
                ended.append((session, self.end_session(token)))
                self.expired_sessions += 1
        return ended

    # -- room ------------------------------------------------------------------------------

    def check_size(self, allocator: Any, nbytes: int) -> None:
        """Refuse, before any work, frames that could never be given room.

        Raises:
            ServiceError: more than the whole budget, or than one client's share.
        """
        if not allocator.fits_at_all(nbytes):
            raise ServiceError(
                f"this request's frames take {nbytes} bytes, more than the server's whole memory budget "
                f"({allocator.size} bytes): ask for fewer or smaller frames per request or raise --memory-budget")
        if allocator.rounded(nbytes) > self.client_bytes:
            raise ServiceError(
                f"this request's frames take {nbytes} bytes, more than one client may hold "
                f"({self.client_bytes} bytes, --client-memory): ask for fewer or smaller frames per request")

    def arrival(self) -> int:
        """A request's place in the queue for room, taken when it arrives."""
        return next(self._order)

    async def reserve(self, session: Session, slab: Any, allocator: Any, nbytes: int, timeout: float,
                      place: int | None = None) -> Lease:
        """Room for `nbytes` of frames in `slab`, waiting up to `timeout`
        seconds in the fair queue (see the module docstring) at `place` (from
        `arrival`; default: a new place now). The lease is not yet the
        session's: `grant` it once its frames are in, or `abandon` it.

        Raises:
            ServiceError: `check_size` refuses it, or the session ended.
            ServiceBusyError: no room within `timeout`.
        """
        self.check_size(allocator, nbytes)
        if session.ended:
            raise ServiceError("the session ended")
        loop = asyncio.get_running_loop()
        waiter = _Waiter(self.arrival() if place is None else place, session, slab, allocator, nbytes,
                         allocator.rounded(nbytes),
                         loop.create_future())
        self._waiters.append(waiter)
        self._dispatch()
        if waiter.future.done():
            return waiter.future.result()
        self.waiting += 1
        timer = loop.call_later(max(timeout, 0.0), self._time_out, waiter, timeout)
        try:
            return await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled() and waiter.future.exception() is None:
                self.abandon(waiter.future.result())  # granted as the call was cancelled
            raise
        finally:
            timer.cancel()
            self.waiting -= 1
            if waiter in self._waiters:
                self._waiters.remove(waiter)
                self._dispatch()

    def _eligible(self, waiter: _Waiter) -> bool:
        session = waiter.session
        return (session.held_bytes + waiter.length <= self.client_bytes
                and session.held_slots + 1 <= self.client_leases)

    def _dispatch(self) -> None:
        """Give room to waiting requests, fairest first (see the module docstring)."""
        blocked: set[int] = set()
        while True:
            candidates = [w for w in self._waiters if id(w.allocator) not in blocked and self._eligible(w)]
            if not candidates:
                return
            waiter = min(candidates, key=lambda w: (w.session.held_bytes, w.seq))
            offset = waiter.allocator.allocate(waiter.nbytes)
            if offset is None:
                blocked.add(id(waiter.allocator))  # nobody overtakes it on this slab
                continue
            self._waiters.remove(waiter)
            session = waiter.session
            session.held_bytes += waiter.length
            session.held_slots += 1
            waiter.future.set_result(Lease(next(self._ids), session, waiter.slab, waiter.allocator, offset,
                                           waiter.nbytes, waiter.length))

    def _time_out(self, waiter: _Waiter, timeout: float) -> None:
        if waiter.future.done():
            return
        self._waiters.remove(waiter)
        self.busy_timeouts += 1
        session, allocator = waiter.session, waiter.allocator
        if not self._eligible(waiter) and self.client_bytes < allocator.size:  # its share, not the budget, stops it
            message = (f"busy: this client already holds {session.held_bytes} bytes in {session.held_slots} slot(s) "
                       f"of its share ({self.client_bytes} bytes, {self.client_leases} slots; --client-memory, "
                       f"--client-leases) and released none within {timeout:.1f} s; release batches sooner "
                       "(batch.release() or drop them) or lower the look-ahead")
        else:
            message = (f"busy: no room for {waiter.nbytes} bytes of frames in the server's memory budget "
                       f"({allocator.used_bytes} of {allocator.size} bytes leased to clients) within "
                       f"{timeout:.1f} s; release batches sooner (batch.release() or drop them), "
                       "lower the look-ahead, or raise --memory-budget")
        waiter.future.set_exception(ServiceBusyError(message))
        self._dispatch()  # a blocked head gone: those behind it may fit

    # -- leases -----------------------------------------------------------------------------

    def grant(self, lease: Lease) -> bool:
        """Hand `lease` to its session; False (and the room freed) if the session is gone."""
        if lease.owner.ended:
            self.abandon(lease)
            return False
        lease.owner.leases[lease.id] = lease
        return True

    def abandon(self, lease: Lease) -> None:
        """Free a lease never granted (its request failed, was cancelled, or its reply went out)."""
        self._free(lease)
        self._dispatch()

    def release(self, session: Session, ids: list[int]) -> int:
        """Return `session`'s leases `ids` (unknown ids are ignored); how many returned."""
        count = 0
        for lease_id in ids:
            lease = session.leases.pop(lease_id, None)
            if lease is not None:
                self._free(lease)
                count += 1
        if count:
            self._dispatch()
        return count

    def _free(self, lease: Lease) -> None:
        if lease.freed:
            return
        lease.freed = True
        lease.allocator.free(lease.offset)
        lease.owner.held_bytes -= lease.length
        lease.owner.held_slots -= 1
        if lease.event_index is not None:
            lease.slab.events.release(lease.event_index)

    def leases(self) -> int:
        return sum(len(s.leases) for s in self.sessions.values())
