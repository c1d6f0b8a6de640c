"""What the server does with each request, apart from the wire (`_server`).

A `DecodePool` per device decodes; this layer checks paths against the
allowed roots, leases a slot in the device's slab for each batch, copies the
batch in, and answers where it lies. Everything here runs on the server's
event loop; blocking work (handing a request to a pool whose queue is full,
copying frames, opening a file for its metadata) goes to worker threads.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from framefeed import _arguments as args
from framefeed.serve._leases import Lease, LeaseBook, Session
from framefeed.serve._paths import AllowedRoots, OpenedFile
from framefeed.serve._shm import HostSlab, ShmProbe
from framefeed.serve._slab import SlabAllocator
from framefeed.serve.protocol import (
    PROTOCOL_VERSION,
    ServiceBusyError,
    ServiceError,
    metadata_to_wire,
    transforms_from_wire,
)

_REQUEST_FIELDS = ("indices", "seconds", "start", "stop", "step", "seek_mode", "dimension_order", "stream_index")
_FRAME_DTYPES = {torch.uint8: "uint8", torch.float32: "float32"}
_RATE_WINDOW_SECONDS = 10.0
_UNCHECKED_FRAMES = 32  # requests listing at most this many frames are sized after decoding


@dataclass
class ServeConfig:
    """How a server runs (the `framefeed serve` options).

    Attributes:
        devices: one `DecodePool` each ("cpu", "cuda:0", ...).
        allow_roots: folders whose files clients may read.
        memory_budget: bytes of each device's slab (frames leased to clients).
        lease_timeout: seconds without a heartbeat after which a client's
            session ends and its slots return.
        request_timeout: longest a request may wait (for the decoders or for
            room in the budget) before failing as busy; clients may ask less.
        shutdown_timeout: seconds in-flight requests get to finish on SIGTERM/SIGINT.
        max_request_bytes: largest request body accepted.
        sessions: decode sessions per pool (None: the pool's default).
    """

    devices: Sequence[str]
    allow_roots: Sequence[str]
    memory_budget: int = 1 << 30
    lease_timeout: float = 10.0
    request_timeout: float = 60.0
    shutdown_timeout: float = 10.0
    max_request_bytes: int = 4 << 20
    sessions: int | None = None

    @property
    def heartbeat_seconds(self) -> float:
        return max(self.lease_timeout / 4, 0.05)


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
                self._slabs["cuda"] = (slab, SlabAllocator(slab.size, 4096))
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
            slab = HostSlab(self.budget, self.name.replace(":", ""))
            self._slabs[kind] = (slab, SlabAllocator(slab.size, 4096))
        return self._slabs[kind]

    def describe(self) -> dict[str, Any]:
        slabs = {kind: slab.describe() for kind, (slab, _) in self._slabs.items()}
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
    """The request handlers (each takes a checked message, returns a reply map).

    Raises (constructor): what a pool or a slab raises for a device that
    cannot be used (ValueError, CudaUnavailableError, MemoryError, ImportError).
    """

    def __init__(self, config: ServeConfig) -> None:
        from framefeed.serve._shm import remove_stale_segments

        self.config = config
        self.roots = AllowedRoots(config.allow_roots)
        self.book = LeaseBook(config.lease_timeout)
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
        self.default_device = next(iter(self.devices))
        cores = os.cpu_count() or 2
        self._submit_threads = ThreadPoolExecutor(max_workers=32, thread_name_prefix="framefeed-serve-submit")
        self._work_threads = ThreadPoolExecutor(max_workers=max(2, cores), thread_name_prefix="framefeed-serve-copy")
        self._metadata: collections.OrderedDict[tuple, dict[str, Any]] = collections.OrderedDict()
        self.started = time.monotonic()
        self.stopping = False
        self.requests: collections.Counter[tuple[str, str]] = collections.Counter()
        self.frames_returned = 0
        self.bytes_returned = 0
        self.in_flight = 0
        self._recent: collections.deque[tuple[float, int]] = collections.deque()

    # -- Hello / Heartbeat / Goodbye ------------------------------------------------------------

    async def hello(self, message: dict[str, Any]) -> dict[str, Any]:
        if message["protocol"] != PROTOCOL_VERSION:
            raise ServiceError(f"protocol version {message['protocol']} is not this server's "
                               f"({PROTOCOL_VERSION}): use the same framefeed version on both sides")
        session = self.book.open_session(int(message.get("pid", 0)))
        return {"ok": True, "session": session.token, "protocol": PROTOCOL_VERSION, "server_pid": os.getpid(),
                "devices": [d.describe() for d in self.devices.values()], "default_device": self.default_device,
                "shm_probe": self.probe.describe() if self.probe else None,
                "heartbeat_seconds": self.config.heartbeat_seconds,
                "lease_timeout_seconds": self.config.lease_timeout,
                "request_timeout_seconds": self.config.request_timeout,
                "max_request_bytes": self.config.max_request_bytes}

    async def heartbeat(self, message: dict[str, Any]) -> dict[str, Any]:
        session = self.book.touch(message["session"])
        released = self.book.release(session, message.get("release", []))
        return {"ok": True, "released": released}

    async def goodbye(self, message: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "released": self.book.end_session(message["session"])}

    async def expire_sessions(self) -> list[tuple[int, int]]:
        return self.book.expire()

    # -- Open -----------------------------------------------------------------------------------

    async def open(self, message: dict[str, Any]) -> dict[str, Any]:
        self.book.touch(message["session"])
        self._device(message.get("device"))
        opened = self.roots.open(message["source"])
        try:
            metadata = await self._metadata_of(opened, message.get("seek_mode", "exact"),
                                               message.get("stream_index"))
        finally:
            opened.close()
        return {"ok": True, "metadata": metadata}

    async def _metadata_of(self, opened: OpenedFile, seek_mode: str, stream_index: int | None) -> dict[str, Any]:
        """The stream's metadata, cached by file identity (path, inode, size, mtime) and options."""
        info = os.fstat(opened.fd)
        key = (opened.real_path, info.st_ino, info.st_size, info.st_mtime_ns, seek_mode, stream_index)
        cached = self._metadata.get(key)
        if cached is not None:
            self._metadata.move_to_end(key)
            return cached
        loop = asyncio.get_running_loop()
        try:
            metadata = await loop.run_in_executor(
                self._work_threads, functools.partial(_read_metadata, opened.source, seek_mode, stream_index))
        except Exception as error:
            raise _described(error, opened) from None
        self._metadata[key] = metadata
        if len(self._metadata) > 4096:
            self._metadata.popitem(last=False)
        return metadata

    # -- Decode ---------------------------------------------------------------------------------

    async def decode(self, message: dict[str, Any], call: Any = None) -> dict[str, Any]:
        """Decode, lease a slot, fill it, answer where it is. `call` is the
        gRPC call: a lease whose reply never reached the client (the call was
        cancelled) returns at once instead of at the session's end."""
        session = self.book.touch(message["session"])
        state = self._device(message.get("device"))
        transport = message["transport"]
        if transport == "cuda" and state.device.type != "cuda":
            raise ServiceError(f"transport 'cuda' needs a CUDA device; {state.name} is not one")
        if self.stopping:
            raise ServiceError("the server is stopping and takes no new requests")
        timeout = min(float(message.get("timeout", self.config.request_timeout)), self.config.request_timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        opened = self.roots.open(message["source"])
        self.in_flight += 1
        try:
            return await self._decode(session, state, transport, opened, message, deadline, timeout, call)
        finally:
            self.in_flight -= 1

    async def _decode(self, session: Session, state: DeviceState, transport: str, opened: OpenedFile,
                      message: dict[str, Any], deadline: float, timeout: float, call: Any) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        kwargs = {name: message[name] for name in _REQUEST_FIELDS if name in message}
        if message.get("transforms"):
            kwargs["transforms"] = transforms_from_wire(message["transforms"])
        if "output_dtype" in message:
            kwargs["output_dtype"] = args.output_dtype_from_name(message["output_dtype"])
        try:
            await self._check_size(state, opened, kwargs, transport)
        except BaseException:
            opened.close()
            raise
        abandoned = threading.Event()
        submit = functools.partial(_submit, state.pool, opened, kwargs, abandoned)
        try:
            future = await asyncio.wait_for(loop.run_in_executor(self._submit_threads, submit),
                                            max(deadline - loop.time(), 0.001))
        except (asyncio.TimeoutError, TimeoutError):
            abandoned.set()
            raise ServiceBusyError(f"busy: the decode queue stayed full for {timeout:.1f} s") from None
        except asyncio.CancelledError:
            abandoned.set()
            raise
        except Exception as error:
            raise _described(error, opened) from None
        try:
            batch = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)),
                                           max(deadline - loop.time(), 0.001))
        except (asyncio.TimeoutError, TimeoutError):
            future.cancel()
            raise ServiceBusyError(f"busy: the decoders did not finish this request within {timeout:.1f} s "
                                   f"({self.in_flight} requests in flight)") from None
        except asyncio.CancelledError:
            future.cancel()  # the client went away
            raise
        except Exception as error:
            raise _described(error, opened) from None
        reply = await self._deliver(session, state, transport, batch, deadline)
        if call is not None and reply.get("lease") is not None:
            call.add_done_callback(functools.partial(self._undelivered, loop, session, reply["lease"]))
        info = batch.info
        if info is not None:
            reply["info"] = {"source": opened.requested, "session": info.session,
                             "cpu_fallback": {"device": info.cpu_fallback.device,
                                              "is_fallback": info.cpu_fallback.is_fallback,
                                              "reason": info.cpu_fallback.reason},
                             "decoder_reused": info.decoder_reused, "frames_decoded": info.frames_decoded}
        frames = int(batch.pts_seconds.numel())
        self.frames_returned += frames
        self.bytes_returned += batch.data.numel() * batch.data.element_size()
        self._recent.append((time.monotonic(), frames))
        return reply

    async def _check_size(self, state: DeviceState, opened: OpenedFile, kwargs: dict[str, Any],
                          transport: str) -> None:
        """Refuse, before anything is decoded, a request whose frames could
        never fit in the memory budget (inline replies are held to the same
        size). Short lists of frames skip the check: it needs the stream's
        metadata, an extra open of a file not seen before."""
        listed = kwargs.get("indices", kwargs.get("seconds"))
        if listed is not None and len(listed) <= _UNCHECKED_FRAMES:
            return
        metadata = await self._metadata_of(opened, kwargs.get("seek_mode", "exact"), kwargs.get("stream_index"))
        count = int(metadata.get("num_frames") or 0)
        if listed is not None:
            count = len(listed)
        elif any(kwargs.get(k) is not None for k in ("start", "stop")) or kwargs.get("step", 1) not in (1, None):
            count = len(range(*slice(kwargs.get("start"), kwargs.get("stop"), kwargs.get("step", 1)).indices(count)))
        height, width = int(metadata.get("height") or 0), int(metadata.get("width") or 0)
        if kwargs.get("transforms"):  # each transform sets the size; the last one is the output's
            height, width = (int(v) for v in kwargs["transforms"][-1].size)
        dtype = args.resolve_output_dtype(kwargs.get("output_dtype", torch.uint8), metadata.get("pixel_format"))
        nbytes = count * height * width * 3 * dtype.itemsize
        fits = nbytes <= self.config.memory_budget if transport == "inline" \
            else state.slab(transport)[1].fits_at_all(nbytes)
        if not fits:
            raise ServiceError(
                f"this request's {count} frames take {nbytes} bytes, more than the server's whole memory "
                f"budget ({self.config.memory_budget} bytes): ask for fewer frames per request or raise "
                "--memory-budget")

    async def _deliver(self, session: Session, state: DeviceState, transport: str, batch: Any,
                       deadline: float) -> dict[str, Any]:
        """Where the client finds the frames: a leased slot, or (inline) the bytes themselves."""
        loop = asyncio.get_running_loop()
        data = batch.data
        reply: dict[str, Any] = {"ok": True, "shape": list(data.shape), "dtype": _FRAME_DTYPES[data.dtype],
                                 "transport": transport,
                                 "pts": batch.pts_seconds.numpy().tobytes(),
                                 "durations": batch.duration_seconds.numpy().tobytes(),
                                 "timestamp_shape": list(batch.pts_seconds.shape)}
        if transport == "inline":
            dense, strides = await loop.run_in_executor(self._work_threads, _dense_on_host, data)
            reply.update(strides=strides, data=dense)
            return reply
        nbytes = data.numel() * data.element_size()
        if nbytes == 0:
            reply.update(strides=list(data.stride()), lease=None)
            return reply
        slab, allocator = state.slab(transport)
        lease = await self.book.lease(session, slab, allocator, nbytes, max(deadline - loop.time(), 0.001))
        try:
            strides, event = await loop.run_in_executor(self._work_threads, _fill, slab, lease, data)
        except BaseException:
            self.book.abandon(lease)
            raise
        if event is not None:
            lease.event_index = event[0]
            reply["event"] = {"index": event[0], "handle": event[1]}
        if not self.book.grant(lease):
            raise ServiceError("the session ended while its request was decoded")
        reply.update(strides=strides, lease=lease.id, offset=lease.offset, nbytes=nbytes,
                     slab=slab.describe() if slab.kind == "shm" else {"kind": "cuda"})
        return reply

    def _undelivered(self, loop: asyncio.AbstractEventLoop, session: Session, lease_id: int, call: Any) -> None:
        if call.cancelled():
            loop.call_soon_threadsafe(self.book.release, session, [lease_id])

    # -- Stats ----------------------------------------------------------------------------------

    async def stats(self, message: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"ok": True, **self.snapshot()}

    def snapshot(self) -> dict[str, Any]:
        """Counters for `Stats` and `/metrics` (safe to call from another thread)."""
        import dataclasses

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
            "memory_budget_bytes": self.config.memory_budget,
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
        for executor in (getattr(self, "_submit_threads", None), getattr(self, "_work_threads", None)):
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)


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


def _read_metadata(source: str, seek_mode: str, stream_index: int | None) -> dict[str, Any]:
    from framefeed.decoders import VideoDecoder

    with VideoDecoder(source, seek_mode=seek_mode, stream_index=stream_index, device="cpu") as decoder:
        return metadata_to_wire(decoder.metadata)


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
    slot = slab.view(lease.offset, lease.nbytes).view(dense.dtype)  # slots are 4096-byte aligned
    if slab.kind == "cuda":
        if not dense.is_cuda:  # a CPU fallback batch in a CUDA pool is uploaded already; be safe
            dense = dense.to(slab.device)
        return strides, slab.fill(slot, dense)
    slot.view(dense.shape).copy_(dense)
    return strides, None


def _submit(pool: Any, opened: OpenedFile, kwargs: dict[str, Any], abandoned: threading.Event) -> Any:
    """Hand the request to the pool (may block while its queue is full).

    The descriptor is closed by whoever holds it last: here when the request
    is never submitted, else when the pool's future completes. Never before
    the pool opened `/proc/self/fd/N`: a descriptor number reused meanwhile
    would point it at a file nobody checked.
    """
    if abandoned.is_set():
        opened.close()
        raise asyncio.CancelledError()
    try:
        future = pool.submit(opened.source, **kwargs)
    except BaseException:
        opened.close()
        raise
    future.add_done_callback(lambda _: opened.close())
    if abandoned.is_set():
        future.cancel()
    return future


def _described(error: Exception, opened: OpenedFile) -> Exception:
    """`error` with the server's descriptor path replaced by the client's path."""
    text = str(error)
    described = opened.describe(text)
    if described == text:
        return error
    try:
        return type(error)(described)
    except Exception:
        return error
