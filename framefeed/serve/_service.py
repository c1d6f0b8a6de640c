"""What the server does with each request, apart from the wire (`_server`).

A Decode, in order:
1. the path is checked against the allowed roots and opened (`_paths`);
2. on a service thread the video is opened under the client's path (every
   message and warning names it, never `/proc/self/fd/N`), and the request
   is planned with the pool's own planning, so it is checked exactly as
   `VideoDecoder` checks it and its frames' size after transforms is known;
3. room for those frames is reserved before anything is decoded: a slot of
   the device's slab, or for frames sent inside the reply a share of the
   budget (`_leases`: per-client shares, fair queue, back-pressure). A
   request waiting for room holds an open file and a plan, never frames;
4. its packets are read, the file closed, and the device's `DecodePool`
   decodes the plan (`submit_plan`);
5. the frames are copied into the reserved slot and the reply says where.

Failures raise what the same call on an in-process `DecodePool` raises
(same type and message); warnings go back with the reply (`_warnings`).
Everything here runs on the server's event loop; blocking work goes to
worker threads. The heap is trimmed when the server is idle after a burst
(`_memory`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import hmac
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

from framefeed import _arguments as args
from framefeed.serve import _warnings
from framefeed.serve._auth import AccessPolicy, Challenges, Peer, proof
from framefeed.serve._leases import Lease, LeaseBook, Session
from framefeed.serve._memory import TrimPolicy, memory_of, trim_heap
from framefeed.serve._paths import AllowedRoots, OpenedFile
from framefeed.serve._shm import HostSlab, ShmProbe
from framefeed.serve._slab import ByteBudget, SlabAllocator
from framefeed.serve.protocol import (
    PROTOCOL_VERSION,
    ServiceBusyError,
    ServiceError,
    metadata_to_wire,
    transforms_from_wire,
)

_FRAME_DTYPES = {torch.uint8: "uint8", torch.float32: "float32"}
_RATE_WINDOW_SECONDS = 10.0
_MAX_REQUESTS_PER_CLIENT = 256  # Decode calls one session may have in progress
_SLOT_ALIGNMENT = 4096


@dataclass
class ServeConfig:
    """How a server runs (the `framefeed serve` options).

    Attributes:
        devices: one `DecodePool` each ("cpu", "cuda:0", ...).
        allow_roots: folders whose files clients may read.
        memory_budget: bytes of each device's slab (frames leased to clients);
            frames sent inside replies are held to the same budget.
        lease_timeout: seconds without a heartbeat after which a client's
            session ends and its slots return.
        request_timeout: longest a request may wait (for the decoders or for
            room in the budget) before failing as busy; clients may ask less.
        shutdown_timeout: seconds in-flight requests get to finish on SIGTERM/SIGINT.
        max_request_bytes: largest request body accepted.
        sessions: decode sessions per pool (None: the pool's default).
        allow_uids, allow_gids: who may connect on the Unix socket besides
            the server's own uid (kernel-checked peer credentials).
        client_memory: bytes one client may hold (None: half the budget).
        client_leases: slots one client may hold.
        max_clients: sessions at once.
        refuse_hard_links: refuse files with more than one hard link.
    """

    devices: Sequence[str]
    allow_roots: Sequence[str]
    memory_budget: int = 1 << 30
    lease_timeout: float = 10.0
    request_timeout: float = 60.0
    shutdown_timeout: float = 10.0
    max_request_bytes: int = 4 << 20
    sessions: int | None = None
    allow_uids: Sequence[int] = ()
    allow_gids: Sequence[int] = ()
    client_memory: int | None = None
    client_leases: int = 4096
    max_clients: int = 1024
    refuse_hard_links: bool = False

    @property
    def heartbeat_seconds(self) -> float:
        return max(self.lease_timeout / 4, 0.05)

    @property
    def client_bytes(self) -> int:
        return self.client_memory if self.client_memory is not None else max(self.memory_budget // 2, 1)


@dataclass(eq=False)
class CallContext:
    """One call: its session (None before hello), the gRPC call, and the
    warnings raised while serving it."""

    session: Session | None
    call: Any = None
    warnings: list[tuple[type[Warning], str]] = field(default_factory=list)
    renames: list[tuple[str, str]] = field(default_factory=list)  # (/proc/self/fd/N, the client's path)


class DeviceState:
    """One device: its pool and its slabs (host slab eager on the CPU, lazy
    on CUDA where the device slab serves same-GPU clients)."""

    def __init__(self, name: str, config: ServeConfig) -> None:
        from framefeed.pool import DecodePool

        self.pool = DecodePool(name, config.sessions)
        self.device = self.pool.device
        self.name = str(self.device)
        self.budget = config.memory_budget
        self.uuid: str | None = None
        self._slabs: dict[str, tuple[Any, SlabAllocator]] = {}
        try:
            if self.device.type == "cuda":
                from framefeed.serve._cuda_ipc import DeviceSlab

                slab = DeviceSlab(self.device, self.budget)
                self.uuid = slab.uuid
                self._slabs["cuda"] = (slab, SlabAllocator(slab.size, _SLOT_ALIGNMENT))
            else:
                self.slab("shm")
        except BaseException:
            self.close()
            raise

    def slab(self, kind: str) -> tuple[Any, SlabAllocator]:
        """The slab for transport `kind` ("shm" or "cuda"), created on first use."""
        if kind not in self._slabs:
            if kind == "cuda":
                raise ServiceError(f"transport 'cuda' needs a CUDA device; {self.name} is not one")
            import mmap

            slab = HostSlab(self.budget, self.name.replace(":", ""))
            # Slots never share a page: a client's private copy of a page it wrote is its own slot's.
            self._slabs[kind] = (slab, SlabAllocator(slab.size, max(_SLOT_ALIGNMENT, mmap.PAGESIZE)))
        return self._slabs[kind]

    def describe(self, cuda: bool) -> dict[str, Any]:
        """The device for a client's hello; the device slab's IPC handle only if `cuda`."""
        slabs = {kind: slab.describe() for kind, (slab, _) in self._slabs.items() if kind != "cuda" or cuda}
        return {"name": self.name, "type": self.device.type, "uuid": self.uuid, "slabs": slabs}

    def slab_stats(self) -> dict[str, dict[str, int]]:
        return {kind: {"size": a.size, "leased_bytes": a.used_bytes, "leases": a.slots}
                for kind, (_, a) in self._slabs.items()}

    def close(self, clients_may_map: bool = False) -> None:
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.close(cancel_pending=True)
        for kind, (slab, _) in self._slabs.items():
            if kind == "cuda":
                slab.close(clients_may_map)
            else:
                slab.close()


class DecodeService:
    """The request handlers (each takes a checked message and its
    `CallContext`, returns a reply map).

    Raises (constructor): what a pool or a slab raises for a device that
    cannot be used (ValueError, CudaUnavailableError, MemoryError, ImportError).
    """

    def __init__(self, config: ServeConfig) -> None:
        from framefeed.serve._shm import remove_stale_segments

        self.config = config
        self.policy = AccessPolicy.of(config.allow_uids, config.allow_gids)
        self.roots = AllowedRoots(config.allow_roots, refuse_hard_links=config.refuse_hard_links)
        self.book = LeaseBook(config.lease_timeout, config.client_bytes, config.client_leases)
        self.token: bytes | None = None  # the TCP secret (set by the server when it listens on TCP)
        self.challenges = Challenges()
        remove_stale_segments()
        self.devices: dict[str, DeviceState] = {}
        self.probe: ShmProbe | None = None
        try:
            for name in config.devices:
                state = DeviceState(name, config)
                if state.name in self.devices:
                    state.close()
                    raise ValueError(f"device {name!r} given twice")
                self.devices[state.name] = state
            self.probe = ShmProbe()
        except BaseException:
            self.close()
            raise
        self.inline = ByteBudget(config.memory_budget)
        self.default_device = next(iter(self.devices))
        cores = os.cpu_count() or 2
        self._plan_threads = ThreadPoolExecutor(max_workers=max(2, cores), thread_name_prefix="framefeed-serve-plan")
        self._submit_threads = ThreadPoolExecutor(max_workers=32, thread_name_prefix="framefeed-serve-submit")
        self._work_threads = ThreadPoolExecutor(max_workers=max(2, cores), thread_name_prefix="framefeed-serve-copy")
        self._metadata: collections.OrderedDict[tuple, tuple[dict[str, Any], list]] = collections.OrderedDict()
        self.trim = TrimPolicy()
        self.started = time.monotonic()
        self.stopping = False
        self.requests: collections.Counter[tuple[str, str]] = collections.Counter()
        self.frames_returned = 0
        self.bytes_returned = 0
        self.in_flight = 0
        self._recent: collections.deque[tuple[float, int]] = collections.deque()

    # -- sessions -------------------------------------------------------------------------------

    def open_session(self, message: dict[str, Any], peer: Peer) -> Session:
        """A new session for an authenticated `peer`.

        Raises:
            ServiceError: another protocol version, or the server is stopping.
            ServiceBusyError: `max_clients` sessions are open.
        """
        if message["protocol"] != PROTOCOL_VERSION:
            raise ServiceError(f"protocol version {message['protocol']} is not this server's "
                               f"({PROTOCOL_VERSION}): use the same framefeed version on both sides")
        if self.stopping:
            raise ServiceError("the server is stopping and takes no new clients")
        if len(self.book.sessions) >= self.config.max_clients:
            raise ServiceBusyError(f"busy: the server has {len(self.book.sessions)} clients, its most "
                                   "(--max-clients); try again later")
        if peer.kind == "tcp" and isinstance(message.get("pid"), int):
            peer = dataclasses.replace(peer, pid=int(message["pid"]))
        return self.book.open_session(peer)

    def unknown_session_text(self) -> str:
        try:
            self.book.touch("")
        except ServiceError as error:
            return str(error)
        return "unknown session"

    def _own_user(self, session: Session) -> bool:
        """Whether the kernel says the session runs as the server's user (Unix socket)."""
        return session.peer.kind == "unix" and session.peer.uid == os.geteuid()

    def _may_map_shm(self, session: Session) -> bool:
        # Slab files are the server user's (0600): on TCP the file system decides.
        return session.peer.kind == "tcp" or self._own_user(session)

    def hello_reply(self, session: Session) -> dict[str, Any]:
        cuda = self._own_user(session)  # an IPC handle opens the whole device slab, read-write
        return {"ok": True, "session": session.token, "protocol": PROTOCOL_VERSION, "server_pid": os.getpid(),
                "server_uid": os.geteuid(),
                "devices": [d.describe(cuda) for d in self.devices.values()], "default_device": self.default_device,
                "shm_probe": self.probe.describe() if self.probe and self._may_map_shm(session) else None,
                "heartbeat_seconds": self.config.heartbeat_seconds,
                "lease_timeout_seconds": self.config.lease_timeout,
                "request_timeout_seconds": self.config.request_timeout,
                "max_request_bytes": self.config.max_request_bytes,
                "client_memory_bytes": self.book.client_bytes}

    async def challenge(self, message: dict[str, Any], context: CallContext) -> dict[str, Any]:
        return {"ok": True, "nonce": self.challenges.issue()}

    async def hello(self, message: dict[str, Any], context: CallContext) -> dict[str, Any]:
        """Hello on TCP: the client proves it holds the token (see `_auth`).

        Raises:
            PermissionError: no proof, or a wrong one.
        """
        server_proof = b""
        if self.token is not None:
            nonce, client_nonce, given = message.get("nonce"), message.get("client_nonce"), message.get("proof")
            if not (nonce and client_nonce and given) or not self.challenges.redeem(nonce):
                raise PermissionError("this server takes clients that prove they hold its token: "
                                      "connect(..., token_file=...)")
            if not hmac.compare_digest(given, proof(self.token, b"client", nonce, client_nonce)):
                raise PermissionError("wrong token: the client's token file is not this server's")
            server_proof = proof(self.token, b"server", nonce, client_nonce)
        session = self.open_session(message, Peer("tcp"))
        reply = self.hello_reply(session)
        reply["server_proof"] = server_proof
        return reply

    async def heartbeat(self, message: dict[str, Any], context: CallContext) -> dict[str, Any]:
        released = self.book.release(context.session, message.get("release", []))
        return {"ok": True, "released": released}

    async def goodbye(self, message: dict[str, Any], context: CallContext) -> dict[str, Any]:
        return {"ok": True, "released": self.book.end_session(message["session"])}

    def disconnected(self, session: Session) -> tuple[int, int] | None:
        """The session's authentication connection closed (its process
        ended): end it; (slots returned, requests it had in progress), or
        None if it had ended already (said goodbye)."""
        if session.token not in self.book.sessions:
            return None
        requests = session.requests
        return self.book.end_session(session.token), requests

    async def expire_sessions(self) -> list[tuple[Session, int]]:
        return self.book.expire()

    # -- Open -----------------------------------------------------------------------------------

    async def open(self, message: dict[str, Any], context: CallContext) -> dict[str, Any]:
        self._device(message.get("device"))
        opened = _open_allowed(self.roots, message["source"], None)
        context.renames.append((opened.source, opened.requested))
        try:
            metadata = await self._metadata_of(opened, message.get("seek_mode", "exact"),
                                               message.get("stream_index"), context.warnings)
        finally:
            opened.close()
        return {"ok": True, "metadata": metadata}

    async def _metadata_of(self, opened: OpenedFile, seek_mode: str, stream_index: int | None,
                           warned: list[tuple[type[Warning], str]]) -> dict[str, Any]:
        """The stream's metadata (and the warnings opening it raised),
        cached by file identity (path, inode, size, mtime) and options."""
        info = os.fstat(opened.fd)
        key = (opened.requested, opened.real_path, info.st_ino, info.st_size, info.st_mtime_ns, seek_mode,
               stream_index)
        cached = self._metadata.get(key)
        if cached is None:
            caught: list[tuple[type[Warning], str]] = []
            loop = asyncio.get_running_loop()
            metadata = await loop.run_in_executor(
                self._plan_threads, functools.partial(_read_metadata, opened, seek_mode, stream_index, caught))
            cached = self._metadata[key] = (metadata, caught)
            if len(self._metadata) > 4096:
                self._metadata.popitem(last=False)
        self._metadata.move_to_end(key)
        warned.extend(cached[1])
        return cached[0]

    # -- Decode ---------------------------------------------------------------------------------

    async def decode(self, message: dict[str, Any], context: CallContext) -> dict[str, Any]:
        """Plan, reserve room, decode, fill the slot, answer where it is (see the module docstring)."""
        session = context.session
        assert session is not None
        state = self._device(message.get("device"))
        transport = message["transport"]
        if transport == "cuda" and state.device.type != "cuda":
            raise ServiceError(f"transport 'cuda' needs a CUDA device; {state.name} is not one")
        if transport == "cuda" and not self._own_user(session):
            raise PermissionError("transport 'cuda' maps the server's whole device slab: only clients running "
                                  "as the server's user on its Unix socket get it; use transport='inline'")
        if transport == "shm" and not self._may_map_shm(session):
            raise PermissionError("transport 'shm' is for clients running as the server's user; use "
                                  "transport='inline'")
        if self.stopping:
            raise ServiceError("the server is stopping and takes no new requests")
        if session.requests >= _MAX_REQUESTS_PER_CLIENT:
            raise ServiceBusyError(f"busy: this client has {session.requests} requests in progress, the most "
                                   "one client may have; wait for some to finish")
        timeout = min(float(message.get("timeout", self.config.request_timeout)), self.config.request_timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        place = self.book.arrival()  # before any await: the order requests came in
        request = _request_from(message)
        opened = _open_allowed(self.roots, message["source"], request)
        context.renames.append((opened.source, opened.requested))
        session.requests += 1
        self.in_flight += 1
        try:
            return await self._decode(session, state, transport, opened, request, deadline, timeout, context,
                                      place)
        finally:
            session.requests -= 1
            self.in_flight -= 1
            self.maybe_trim()

    async def _decode(self, session: Session, state: DeviceState, transport: str, opened: OpenedFile,
                      request: Any, deadline: float, timeout: float, context: CallContext,
                      place: int) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        sink = context.warnings
        video = None
        lease: Lease | None = None
        try:
            video, work = await loop.run_in_executor(
                self._plan_threads, functools.partial(_open_and_plan, opened, request, sink))
            nbytes = _output_bytes(work)
            slab, allocator = (None, self.inline) if transport == "inline" else state.slab(transport)
            if work.plan.time_range is not None:
                # Approximate mode, whole file: only decoding counts its frames, so the header's
                # estimate (which may be far off) is reserved, at most what is left of the
                # client's share; the frames are held to the budget again once decoded (`_deliver`).
                room = max(self.book.client_bytes - session.held_bytes, 1)
                nbytes = min(nbytes, room, allocator.size)
            if nbytes:
                lease = await self.book.reserve(session, slab, allocator, nbytes, max(deadline - loop.time(), 0.0),
                                                place)
            await loop.run_in_executor(self._plan_threads, functools.partial(_ship, work, video, request, sink))
        except BaseException:
            if lease is not None:
                self.book.abandon(lease)
            raise
        finally:
            if video is not None:
                video.close()
            opened.close()
        try:
            batch = await self._run(state, work, request, opened.requested, deadline, timeout, sink)
            reply = await self._deliver(session, state, transport, slab, allocator, batch, lease, deadline, context,
                                        place)
            lease = None  # granted, or freed when the reply has gone
        finally:
            if lease is not None:
                self.book.abandon(lease)
        info = batch.info
        if info is not None:
            reply["info"] = {"source": opened.requested, "session": info.session,
                             "cpu_fallback": {"device": info.cpu_fallback.device,
                                              "is_fallback": info.cpu_fallback.is_fallback,
                                              "reason": info.cpu_fallback.reason},
                             "decoder_reused": info.decoder_reused, "frames_decoded": info.frames_decoded}
        frames = int(batch.pts_seconds.numel())
        self.frames_returned += frames
        nbytes = batch.data.numel() * batch.data.element_size()
        self.bytes_returned += nbytes
        self.trim.passed(nbytes)
        self._recent.append((time.monotonic(), frames))
        return reply

    async def _run(self, state: DeviceState, work: Any, request: Any, requested: str, deadline: float,
                   timeout: float, sink: list) -> Any:
        """The planned request decoded by the device's pool: its batch."""
        loop = asyncio.get_running_loop()
        submit = functools.partial(state.pool.submit_plan, work.plan, work.bundle,
                                   frame_shape=tuple(work.pipeline.input_size), transforms=work.pipeline,
                                   dimension_order=request.dimension_order, description=requested,
                                   output_dtype=work.dtype)
        _warnings.watch(work.bundle, sink)
        future = None
        try:
            future = await asyncio.wait_for(loop.run_in_executor(self._submit_threads, submit),
                                            max(deadline - loop.time(), 0.001))
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)),
                                          max(deadline - loop.time(), 0.001))
        except (asyncio.TimeoutError, TimeoutError):
            if future is not None:
                future.cancel()
            raise ServiceBusyError(f"busy: the decoders did not finish this request within {timeout:.1f} s "
                                   f"({self.in_flight} requests in flight)") from None
        except asyncio.CancelledError:
            if future is not None:
                future.cancel()  # the client went away
            raise
        except Exception as error:
            renamed = _method_error(error, request)
            if renamed is error:
                raise
            raise renamed from renamed.__cause__
        finally:
            _warnings.unwatch(work.bundle)

    async def _deliver(self, session: Session, state: DeviceState, transport: str, slab: Any, allocator: Any,
                       batch: Any, lease: Lease | None, deadline: float, context: CallContext,
                       place: int) -> dict[str, Any]:
        """Where the client finds the frames: the reserved slot, or (inline) the bytes themselves."""
        loop = asyncio.get_running_loop()
        data = batch.data
        reply: dict[str, Any] = {"ok": True, "shape": list(data.shape), "dtype": _FRAME_DTYPES[data.dtype],
                                 "transport": transport,
                                 "pts": batch.pts_seconds.numpy().tobytes(),
                                 "durations": batch.duration_seconds.numpy().tobytes(),
                                 "timestamp_shape": list(batch.pts_seconds.shape)}
        nbytes = data.numel() * data.element_size()
        if lease is not None and nbytes > lease.nbytes:  # a time range's frame count was the header's estimate
            self.book.abandon(lease)
            lease = None
        if lease is None and nbytes:
            lease = await self.book.reserve(session, slab, allocator, nbytes, max(deadline - loop.time(), 0.0),
                                            place)
        try:
            if transport == "inline":
                dense, strides = await loop.run_in_executor(self._work_threads, _dense_on_host, data)
                reply.update(strides=strides, data=dense)
                if lease is not None:  # the reply's bytes count until it has gone
                    self._free_when_sent(context.call, lease)
                return reply
            if nbytes == 0:
                reply.update(strides=list(data.stride()), lease=None)
                return reply
            assert lease is not None
            strides, event = await loop.run_in_executor(self._work_threads, _fill, slab, lease, data)
        except BaseException:
            if lease is not None:
                self.book.abandon(lease)
            raise
        if event is not None:
            lease.event_index = event[0]
            reply["event"] = {"index": event[0], "handle": event[1]}
        if not self.book.grant(lease):
            raise ServiceError("the session ended while its request was decoded")
        if context.call is not None:
            context.call.add_done_callback(functools.partial(self._undelivered, loop, session, lease.id))
        reply.update(strides=strides, lease=lease.id, offset=lease.offset, nbytes=nbytes,
                     slab=slab.describe() if slab.kind == "shm" else {"kind": "cuda"})
        return reply

    def _free_when_sent(self, call: Any, lease: Lease) -> None:
        if call is None:
            self.book.abandon(lease)
            return
        loop = asyncio.get_running_loop()
        call.add_done_callback(lambda _: loop.call_soon_threadsafe(self.book.abandon, lease))

    def _undelivered(self, loop: asyncio.AbstractEventLoop, session: Session, lease_id: int, call: Any) -> None:
        if call.cancelled():
            loop.call_soon_threadsafe(self.book.release, session, [lease_id])

    # -- memory ---------------------------------------------------------------------------------

    def maybe_trim(self) -> None:
        """Give freed heap memory back once idle after a burst (`_memory.TrimPolicy`)."""
        if not self.trim.due(self.in_flight):
            return
        self.trim.begin()
        try:
            future = self._work_threads.submit(trim_heap)
        except RuntimeError:  # shutting down
            self.trim.end()
            return
        future.add_done_callback(lambda _: self.trim.end())

    # -- Stats ----------------------------------------------------------------------------------

    async def stats(self, message: dict[str, Any], context: CallContext) -> dict[str, Any]:
        return {"ok": True, **self.snapshot()}

    def snapshot(self) -> dict[str, Any]:
        """Counters for `Stats` and `/metrics` (safe to call from another thread)."""
        now = time.monotonic()
        recent = list(self._recent)
        while self._recent and now - self._recent[0][0] > _RATE_WINDOW_SECONDS:
            self._recent.popleft()
        window = min(_RATE_WINDOW_SECONDS, max(now - self.started, 1e-3))
        rate = sum(frames for when, frames in recent if now - when <= _RATE_WINDOW_SECONDS) / window
        devices = {}
        for name, state in list(self.devices.items()):
            pool = dataclasses.asdict(state.pool.stats())
            pool["pending"] = pool["submitted"] - pool["completed"] - pool["failed"] - pool["cancelled"]
            devices[name] = {"pool": pool, "slabs": state.slab_stats()}
        sessions = list(self.book.sessions.values())
        resident = _resident()
        return {
            "uptime_seconds": now - self.started,
            "clients": len(sessions),
            "requests": _nested(self.requests),
            "in_flight": self.in_flight,
            "waiting_for_memory": self.book.waiting,
            "busy_timeouts": self.book.busy_timeouts,
            "expired_sessions": self.book.expired_sessions,
            "frames_returned": self.frames_returned,
            "bytes_returned": self.bytes_returned,
            "frames_per_second": rate,
            "leases": sum(len(s.leases) for s in sessions),
            "leased_bytes": sum(s["leased_bytes"] for d in devices.values() for s in d["slabs"].values()),
            "inline_bytes": self.inline.used_bytes,
            "client_memory_bytes": self.book.client_bytes,
            "largest_client_bytes": max((s.held_bytes for s in sessions), default=0),
            "memory_budget_bytes": self.config.memory_budget,
            "heap_trims": self.trim.trims,
            "resident_bytes": resident.get("rss", 0),
            "heap_bytes": resident.get("anon", 0),
            "devices": devices,
        }

    # -- helpers --------------------------------------------------------------------------------

    def _device(self, name: str | None) -> DeviceState:
        if name is None:
            return self.devices[self.default_device]
        state = self.devices.get(name) or self.devices.get(str(_canonical(name)))
        if state is None:
            raise ValueError(f"this server decodes on {', '.join(self.devices)}, not {name!r}")
        return state

    def begin_shutdown(self) -> None:
        self.stopping = True

    def close(self) -> None:
        """Close every pool (queued requests cancelled, running ones finish) and remove the slabs
        (a CUDA slab is freed only if no client session is left that may map it)."""
        book = getattr(self, "book", None)
        for state in getattr(self, "devices", {}).values():
            state.close(clients_may_map=bool(book and book.sessions))
        if getattr(self, "probe", None) is not None:
            self.probe.close()
        for name in ("_plan_threads", "_submit_threads", "_work_threads"):
            executor = getattr(self, name, None)
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)


# -- work on service threads ------------------------------------------------------------------------


def _request_from(message: dict[str, Any]) -> Any:
    """The message as the `DecodeRequest` it stands for (argument errors as `DecodePool.submit` raises them)."""
    from framefeed.pool import DecodeRequest

    fields = {name: message[name] for name in ("indices", "seconds", "start", "stop", "step", "seek_mode",
                                               "dimension_order", "stream_index") if name in message}
    if fields.get("step") is None:
        fields.pop("step", None)
    if "output_dtype" in message:
        fields["output_dtype"] = args.output_dtype_from_name(message["output_dtype"])
    transforms = transforms_from_wire(message["transforms"]) if message.get("transforms") else ()
    return DecodeRequest(message["source"], transforms=transforms, **fields)


@contextlib.contextmanager
def _as_public(request: Any, *, opening: bool) -> Iterator[None]:
    """Errors inside become what the pool raises for them (`public_error`:
    the `VideoDecoder` constructor's while `opening`, else its method's),
    the original chained as the cause."""
    from framefeed.pool import DecodeRequest
    from framefeed.pool._engine import public_error

    try:
        yield
    except Exception as error:
        public = public_error(error, request if request is not None else DecodeRequest(None), opening)
        if public is error:
            raise
        raise public from error


def _open_allowed(roots: AllowedRoots, path: str, request: Any) -> OpenedFile:
    """`roots.open(path)`; a file that is missing or a folder fails as `VideoDecoder(path)` fails."""
    try:
        return roots.open(path)
    except (FileNotFoundError, IsADirectoryError):
        with _as_public(request, opening=True):
            raise


def _open_video(opened: OpenedFile, seek_mode: str, stream_index: int | None) -> Any:
    """The stream behind the descriptor, named by the client's path: raises
    what `VideoDecoder(path)` raises for it."""
    from framefeed.engine.demux.demuxer import Demuxer
    from framefeed.engine.opening import open_demuxed
    from framefeed.engine.source import VideoSource
    from framefeed.pool._adapter import OpenedVideo

    source = VideoSource("path", repr(opened.requested), opened.source, opened.size)
    with _as_public(None, opening=True):
        demuxer = Demuxer(source, stream_index)
        try:
            return OpenedVideo(open_demuxed(demuxer, seek_mode, 1))
        except BaseException:
            demuxer.close()
            raise


def _open_and_plan(opened: OpenedFile, request: Any, sink: list) -> tuple[Any, Any]:
    """(the opened video, its `Work`): what a pool's demux thread does before admission."""
    from framefeed.pool._adapter import plan_work, resolve_pipeline

    with _warnings.capture(sink):
        video = _open_video(opened, request.seek_mode, request.stream_index)
        try:
            with _as_public(request, opening=True):
                pipeline = resolve_pipeline(video, request)
            with _as_public(request, opening=False):
                work = plan_work(video, request, pipeline)
        except BaseException:
            video.close()
            raise
    return video, work


def _output_bytes(work: Any) -> int:
    """Bytes of the planned request's frames after transforms (RGB in the
    request's dtype): exact, but for an approximate-mode whole file the
    header's estimate."""
    return int(work.count) * int(work.frame_bytes)


def _ship(work: Any, video: Any, request: Any, sink: list) -> None:
    from framefeed.pool._adapter import ship

    with _warnings.capture(sink), _as_public(request, opening=False):
        ship(work, video)


def _method_error(error: Exception, request: Any) -> Exception:
    """A pool failure as the error of the `VideoDecoder` method the request
    stands for (a plan submitted ready-made is named `get_all_frames` by the pool)."""
    from framefeed.pool._engine import public_error

    cause = error.__cause__
    if isinstance(cause, Exception) and str(error).startswith("VideoDecoder.get_all_frames") \
            and request.kind != "all":
        return public_error(cause, request, opening=False)
    return error


def _read_metadata(opened: OpenedFile, seek_mode: str, stream_index: int | None, sink: list) -> dict[str, Any]:
    with _warnings.capture(sink):
        video = _open_video(opened, seek_mode, stream_index)
        try:
            return metadata_to_wire(video.metadata)
        finally:
            video.close()


def _resident() -> dict[str, int]:
    try:
        return memory_of("self")
    except OSError:  # no /proc
        return {}


def _nested(counts: collections.Counter[tuple[str, str]]) -> dict[str, dict[str, int]]:
    nested: dict[str, dict[str, int]] = {}
    for (method, outcome), count in list(counts.items()):
        nested.setdefault(method, {})[outcome] = count
    return nested


def _canonical(name: str) -> Any:
    try:
        return torch.device(name)
    except (RuntimeError, TypeError):
        return name


def _dense(data: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """(`data`'s elements in memory order as a contiguous tensor, the strides
    that view it as `data`): a channels-last NCHW batch keeps its layout."""
    order = sorted(range(data.ndim), key=lambda d: data.stride(d), reverse=True)
    base = data.permute(order)
    if data.storage_offset() == 0 and base.is_contiguous():
        return base, list(data.stride())
    data = data.contiguous()
    return data, list(data.stride())


def _dense_on_host(data: torch.Tensor) -> tuple[bytes, list[int]]:
    dense, strides = _dense(data)
    return dense.cpu().numpy().tobytes(), strides


def _fill(slab: Any, lease: Lease, data: torch.Tensor) -> tuple[list[int], tuple[int, bytes] | None]:
    """Copy `data` into the lease's slot: (strides to view it, the CUDA IPC event or None)."""
    dense, strides = _dense(data)
    slot = slab.view(lease.offset, dense.numel() * dense.element_size()).view(dense.dtype)  # the slot may be larger
    if slab.kind == "cuda":
        if not dense.is_cuda:  # a CPU fallback batch in a CUDA pool is uploaded already; be safe
            dense = dense.to(slab.device)
        return strides, slab.fill(slot, dense)
    slot.view(dense.shape).copy_(dense)
    return strides, None

