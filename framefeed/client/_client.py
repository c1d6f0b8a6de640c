"""`ServiceClient`: a `DecodePool`'s request API, served by `framefeed serve`.

Frames arrive without a copy where the machine allows: as CUDA tensors
through CUDA IPC when the client sees the server's GPU, as CPU tensors over
the server's shared memory on the same host, else inside the reply
(`transport="inline"`, e.g. from another host). Each batch views a slot
the server leased to this client; the slot goes back when the last tensor
viewing it is freed, or at `batch.release()`. A background thread sends
those releases and a heartbeat; if this process dies the heartbeat stops
and the server takes its slots back after its lease timeout.

Before anything else the client checks whom it talks to, and proves who it
is: on a Unix socket, the socket's folder must belong to the user the
server should run as (this process's by default: `server_uid=`), the hello
goes over the server's authentication socket where the kernel tells each
side the other's uid, and the connection stays open for the session (when
this process ends, the server returns its slots at once). On TCP the
client and the server prove to each other that they hold the token file's
secret (`token_file=`, default `$FRAMEFEED_TOKEN_FILE` or the server user's
`/tmp/framefeed-UID/serve.token`).

Failures raise what the same call raises on an in-process `DecodePool`:
the same exception type and message, with what happened inside the server
chained as `RemoteCause`s; decoder warnings raised in the server are raised
again here, in the thread that takes the result.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import multiprocessing.util
import os
import queue
import secrets
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from framefeed import _arguments as args
from framefeed._lookahead import map_with_lookahead
from framefeed._warnings import warn_user
from framefeed.engine.backends.status import CpuFallbackStatus
from framefeed.pool import DecodeInfo, DecodeRequest, PoolBatch
from framefeed.serve import require_serve_dependencies
from framefeed.serve.protocol import (
    FRAME_DTYPES,
    METHODS,
    PROTOCOL_VERSION,
    SERVICE,
    ProtocolError,
    ServiceConnectionError,
    ServiceError,
    auth_socket_path,
    default_socket_path,
    default_token_file,
    error_from_reply,
    pack,
    parse_address,
    raise_error,
    transforms_to_wire,
    unpack,
    warnings_from_wire,
)

Transport = Literal["auto", "cuda", "shm", "inline"]
_MARGIN_SECONDS = 5.0  # the server answers "busy" before the call's own deadline


@dataclass(repr=False)
class ServiceBatch(PoolBatch):
    """A `FrameBatch` from `framefeed serve`, with `info` on how it was decoded.

    Its `data` views memory the server leased to this client. The lease
    returns when every tensor viewing it is freed, or at `release()`.
    """

    def release(self) -> None:
        """Give the frames' memory back to the server now. Afterwards the
        server reuses it: `data` and every view of it must not be used
        (copy what you keep first). Idempotent."""
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer()

    def record_stream(self, stream: Any) -> None:
        """Like `torch.Tensor.record_stream`: `data` (CUDA IPC) is also used on
        `stream`, so the slot returns to the server only after the work queued
        there by then is done (the stream current at submit always counts)."""
        streams = getattr(self, "_streams", None)
        if streams is not None and stream not in streams:
            streams.append(stream)


class _ServiceFuture(Future):
    """A `Future` that, in the thread taking its outcome (`result()`,
    `exception()`), first raises the warnings the server raised while
    serving it, as the in-process call would have raised them."""

    def __init__(self) -> None:
        super().__init__()
        self._server_warnings: list[tuple[type[Warning], str]] = []

    def _raise_warnings(self) -> None:
        pending, self._server_warnings = self._server_warnings, []
        for category, message in pending:
            warn_user(message, category)

    def result(self, timeout: float | None = None) -> Any:
        try:
            return super().result(timeout)
        finally:
            if self.done():
                self._raise_warnings()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        try:
            return super().exception(timeout)
        finally:
            if self.done():
                self._raise_warnings()


def _rpc_error(error: Any, what: str, timeout: float | None) -> Exception:
    """A grpc.RpcError as the exception the client raises."""
    import grpc

    code, details = error.code(), error.details() or ""
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED):
        return ProtocolError(f"the server refused {what}: {details}")
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return ServiceError(f"the server refused {what}: {details}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ServiceConnectionError(f"the server did not answer {what} within {timeout:g} s")
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return ServiceConnectionError(f"the server is not reachable or stopped ({details or code.name})")
    return ServiceError(f"{what} failed: {code.name}: {details}")


class _DeviceLink:
    """How frames of one server device reach this process."""

    def __init__(self, info: dict[str, Any], transport: str, local: torch.device, cuda_view: Any = None) -> None:
        self.name: str = info["name"]
        self.info = info
        self.transport = transport
        self.local = local  # where this client's batches live
        self.cuda_view = cuda_view


class ServiceClient:
    """A connection to `framefeed serve` (made by `connect`).

    Thread-safe. Use it in the process that made it: gRPC channels do not
    survive `fork()`, so connect in each DataLoader worker (e.g. lazily in
    the dataset, or in `worker_init_fn`).
    """

    def __init__(self, address: str | os.PathLike[str] | None = None, *, timeout: float = 60.0,
                 connect_timeout: float = 10.0, device: str | None = None, transport: Transport = "auto",
                 token_file: str | os.PathLike[str] | None = None, server_uid: int | None = None) -> None:
        require_serve_dependencies()
        import grpc

        if transport not in ("auto", "cuda", "shm", "inline"):
            raise ValueError(f"Invalid transport {transport!r}: use auto, cuda, shm or inline")
        self.address = parse_address(address if address is not None else default_socket_path())
        self.timeout = float(timeout)
        self._pid = os.getpid()
        self._closed = False
        self._said_goodbye = False
        self._goodbye_lock = threading.Lock()
        self._auth_socket: Any = None
        self._expected_uid = os.geteuid() if server_uid is None else int(server_uid)
        options = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1),
                   ("grpc.enable_retries", 0)]
        message = {"protocol": PROTOCOL_VERSION, "pid": self._pid}
        if self.address.path is not None:
            hello = self._hello_on_unix_socket(message, connect_timeout)
            self._channel = grpc.insecure_channel(self.address.target, options=options)
            self._calls = {name: self._channel.unary_unary(f"/{SERVICE}/{name}") for name in METHODS}
        else:
            self._channel = grpc.insecure_channel(self.address.target, options=options)
            self._calls = {name: self._channel.unary_unary(f"/{SERVICE}/{name}") for name in METHODS}
            try:
                hello = self._hello_over_tcp(message, token_file, connect_timeout)
            except ServiceConnectionError as error:
                self._channel.close()
                raise ServiceConnectionError(f"no framefeed server at {self.address}: {error}") from None
            except BaseException:
                self._channel.close()
                raise
        self._session: str = hello["session"]
        self.server_pid: int = hello.get("server_pid", 0)
        self.server_uid: int = int(hello.get("server_uid", self._expected_uid))
        self.heartbeat_seconds = float(hello["heartbeat_seconds"])
        self.devices: list[str] = [d["name"] for d in hello["devices"]]
        name = hello["default_device"] if device is None else str(device)
        info = next((d for d in hello["devices"] if d["name"] == name), None)
        if info is None:
            self._goodbye()
            raise ValueError(f"the server decodes on {', '.join(self.devices)}, not {device!r}")
        try:
            self._link = self._choose_link(info, transport, hello.get("shm_probe"))
        except BaseException:
            self._goodbye()
            raise
        self._host_views: dict[str, Any] = {}
        self._views_lock = threading.Lock()
        self._releases: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()  # put() is safe in finalizers
        # Leases whose release the server has not confirmed, with the finalizer
        # that releases each (alive while some tensor still views the slot).
        self._leases: dict[int, Any] = {}
        self._calls_in_flight: set[int] = set()  # Decode calls not yet answered
        self._stream_events: dict[Any, Any] = {}  # the release thread's, per stream
        self._broken: Exception | None = None
        self._releaser = threading.Thread(target=self._release_loop, daemon=True, name="framefeed-client-leases")
        self._releaser.start()
        # A process that ends without close() still says goodbye (atexit, and multiprocessing's
        # exit in DataLoader workers), so the server does not mistake it for a dead client.
        self._at_exit = multiprocessing.util.Finalize(None, _goodbye_at_exit, args=(weakref.ref(self),),
                                                      exitpriority=20)
        _LIVE_CLIENTS.add(self)

    def _hello_on_unix_socket(self, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Hello on the server's authentication socket, after checking that
        the socket's folder is the expected user's; the reply."""
        from framefeed.serve._auth import hello_over_unix
        from framefeed.serve._folders import check_client_side

        path = self.address.path
        assert path is not None
        try:
            check_client_side(path, self._expected_uid)
            body, sock, server = hello_over_unix(auth_socket_path(path), pack(message), timeout)
        except PermissionError:
            raise
        except (OSError, TimeoutError) as error:
            raise ServiceConnectionError(f"no framefeed server at {self.address}: {error}") from None
        if server.uid not in (self._expected_uid, 0):
            sock.close()
            raise PermissionError(f"the process listening at {self.address} runs as uid {server.uid}, not as uid "
                                  f"{self._expected_uid}: refusing to talk to it (pass server_uid= if you trust "
                                  "that user)")
        reply = unpack(body)
        if not reply.get("ok"):
            sock.close()
            raise_error(reply)
        self._auth_socket = sock
        return reply

    def _hello_over_tcp(self, message: dict[str, Any], token_file: Any, timeout: float) -> dict[str, Any]:
        """Challenge, then hello with proof that this client holds the token
        (when it has one); the server must prove it holds it too."""
        from framefeed.serve._auth import proof, read_token

        token = None
        path = os.fspath(token_file) if token_file is not None else default_token_file()
        try:
            token = read_token(path, self._expected_uid)
        except FileNotFoundError:
            if token_file is not None:
                raise
        nonce = self._call("Challenge", {}, timeout)["nonce"]
        client_nonce = secrets.token_bytes(32)
        if token is not None:
            message = dict(message, nonce=nonce, client_nonce=client_nonce,
                           proof=proof(token, b"client", nonce, client_nonce))
        hello = self._call("Hello", message, timeout)
        if token is not None:
            expected = proof(token, b"server", nonce, client_nonce)
            if not hmac.compare_digest(bytes(hello.get("server_proof") or b""), expected):
                with contextlib.suppress(Exception):
                    self._call("Goodbye", {"session": hello["session"]}, 2.0)
                raise PermissionError(f"the server at {self.address} did not prove that it holds the token of "
                                      f"{path}: it is not the server that token belongs to")
        return hello

    # -- transports -------------------------------------------------------------------------------

    def _choose_link(self, info: dict[str, Any], transport: str, probe: Any) -> _DeviceLink:
        from framefeed.serve._shm import probe_matches

        cpu = torch.device("cpu")
        if transport in ("auto", "cuda") and info["type"] == "cuda":
            reason = self._try_cuda(info)
            if isinstance(reason, _DeviceLink):
                return reason
            if transport == "cuda":
                raise ServiceError(f"transport 'cuda' is not possible for {info['name']}: {reason}")
        elif transport == "cuda":
            raise ServiceError(f"transport 'cuda' needs a CUDA device; the server's {info['name']} is not one")
        if transport in ("auto", "shm") and probe_matches(probe):
            return _DeviceLink(info, "shm", cpu)
        if transport == "shm":
            raise ServiceError("this process does not see the server's shared memory (another host, or another "
                               "IPC namespace: run containers with --ipc=host); use transport='inline'")
        return _DeviceLink(info, "inline", cpu)

    def _try_cuda(self, info: dict[str, Any]) -> _DeviceLink | str:
        from framefeed.serve._cuda_ipc import DeviceSlabView, client_device_for

        if "cuda" not in info.get("slabs", {}):
            return "the server shares its device memory only with clients of its own user on its Unix socket"
        local = client_device_for(info.get("uuid"))
        if local is None:
            return f"this process sees no GPU with UUID {info.get('uuid')}"
        try:
            view = DeviceSlabView(info["slabs"]["cuda"], local)
        except Exception as error:  # no CuPy, another IPC namespace, ...
            return f"cannot open the server's device memory ({type(error).__name__}: {error})"
        return _DeviceLink(info, "cuda", local, view)

    @property
    def transport(self) -> str:
        """How frames reach this process: "cuda", "shm" or "inline"."""
        return self._link.transport

    @property
    def device(self) -> str:
        """The server device this client's requests decode on."""
        return self._link.name

    # -- calls ------------------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if os.getpid() != self._pid:
            raise RuntimeError("a framefeed client cannot be used after fork(): call connect() in each process "
                               "(e.g. in the dataset's first __getitem__ or a DataLoader worker_init_fn)")
        if self._closed:
            raise RuntimeError("This framefeed client is closed")
        if self._broken is not None:
            raise self._broken

    def _call(self, method: str, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        import grpc

        try:
            body = self._calls[method](pack(message), timeout=timeout)
        except grpc.RpcError as error:
            raise _rpc_error(error, method, timeout) from None
        reply = unpack(body)
        if not reply.get("ok"):
            raise_error(reply)
        return reply

    def stats(self, timeout: float | None = None) -> dict[str, Any]:
        """The server's counters (the same as its `/metrics`), as a dict."""
        self._check_usable()
        reply = self._call("Stats", {"session": self._session}, timeout or self.timeout)
        reply.pop("ok", None)
        return reply

    # -- requests ---------------------------------------------------------------------------------

    def submit(
        self,
        source: str | Path | DecodeRequest,
        *,
        indices: Sequence[int] | Tensor | None = None,
        seconds: Sequence[float] | Tensor | None = None,
        start: int | None = None,
        stop: int | None = None,
        step: int = 1,
        seek_mode: Literal["exact", "approximate"] = "exact",
        dimension_order: Literal["NCHW", "NHWC"] = "NCHW",
        transforms: Sequence[Any] | None = None,
        stream_index: int | None = None,
        timeout: float | None = None,
        output_dtype: torch.dtype | Literal["auto"] = torch.uint8,
    ) -> Future[ServiceBatch]:
        """Queue one request; a future of its `ServiceBatch`. Arguments as
        `DecodePool.submit`, `output_dtype` included (`source` a path the server may read: relative
        paths are made absolute here; `transforms` are the decoder
        transforms `Resize` and `CenterCrop`, applied by the server as
        `VideoDecoder(transforms=...)` applies them; `RandomCrop` is refused).

        The future raises what `VideoDecoder` would for the file,
        `PermissionError` for a path outside the server's `--allow-root`,
        `ServiceBusyError` when the server's memory budget stays full for
        `timeout` seconds (default: the client's), `ServiceConnectionError`
        (a ConnectionError) when the server is gone or does not answer.

        Raises:
            TypeError, ValueError: malformed arguments, or a source that is not a path.
            RuntimeError: the client is closed, or used after fork().
        """
        if isinstance(source, DecodeRequest):
            given = (indices, seconds, start, stop, transforms, stream_index)
            defaults = (step, seek_mode, dimension_order, output_dtype) != (1, "exact", "NCHW", torch.uint8)
            if any(v is not None for v in given) or defaults:
                raise TypeError("submit() takes either a DecodeRequest or a source with keyword arguments, not both")
            request = source
        else:
            request = DecodeRequest(source, indices=indices, seconds=seconds, start=start, stop=stop, step=step,
                                    seek_mode=seek_mode, dimension_order=dimension_order,
                                    transforms=transforms or (), stream_index=stream_index,
                                    output_dtype=output_dtype)
        return self._submit(request, None, timeout)

    def _submit(self, request: DecodeRequest, clip_shape: tuple[int, int] | None,
                timeout: float | None) -> Future[ServiceBatch]:
        self._check_usable()
        message = _request_message(request)
        timeout = self.timeout if timeout is None else float(timeout)
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        message.update(session=self._session, device=self._link.name, transport=self._link.transport,
                       timeout=timeout)
        stream = torch.cuda.current_stream(self._link.local) if self._link.transport == "cuda" else None
        future: _ServiceFuture = _ServiceFuture()
        call = self._calls["Decode"].future(pack(message), timeout=timeout + _MARGIN_SECONDS)

        def arrived(call: Any) -> None:
            try:
                self._arrived(call, future, request, clip_shape, stream, timeout)
            finally:
                self._calls_in_flight.discard(id(future))

        self._calls_in_flight.add(id(future))
        future.add_done_callback(lambda f: call.cancel() if f.cancelled() else None)
        call.add_done_callback(arrived)
        return future

    def _arrived(self, call: Any, future: Future, request: DecodeRequest, clip_shape: tuple[int, int] | None,
                 stream: Any, timeout: float) -> None:
        """A Decode call ended: resolve its future (a batch, or the error it raises)."""
        import grpc

        try:
            reply = unpack(call.result())
        except grpc.RpcError as error:
            outcome: Any = _rpc_error(error, "Decode", timeout)
        except Exception as error:  # cancelled
            outcome = error
        else:
            outcome = reply
        if isinstance(outcome, dict) and outcome.get("ok"):
            try:
                batch: Any = self._batch(outcome, request, clip_shape, stream)
            except Exception as error:
                self._release_reply(outcome)
                batch = error
        elif isinstance(outcome, dict):
            batch = error_from_reply(outcome)
        else:
            batch = outcome
        if isinstance(outcome, dict):
            future._server_warnings = warnings_from_wire(outcome.get("warnings"))
        if not future.set_running_or_notify_cancel():
            if isinstance(batch, ServiceBatch):
                batch.release()
            return
        if isinstance(batch, BaseException):
            future.set_exception(batch)
        else:
            future.set_result(batch)

    def _batch(self, reply: dict[str, Any], request: DecodeRequest, clip_shape: tuple[int, int] | None,
               stream: Any) -> ServiceBatch:
        shape, strides = list(reply["shape"]), list(reply["strides"])
        dtype_name = reply.get("dtype", "uint8")
        if dtype_name not in FRAME_DTYPES:
            raise ServiceError(f"the server sent frames of dtype {dtype_name!r}; expected one of {FRAME_DTYPES}")
        dtype = {"uint8": torch.uint8, "float32": torch.float32}[dtype_name]
        finalizer = None
        link = self._link
        if reply["transport"] == "inline":
            flat = torch.from_numpy(np.frombuffer(reply["data"], dtype=np.uint8).copy()).view(dtype)
            data = flat.as_strided(shape, strides)
        elif reply.get("lease") is None:  # no frames: nothing leased
            data = torch.empty(shape, dtype=dtype, device=link.local)
        else:
            lease = int(reply["lease"])
            self._leases[lease] = None
            if reply["transport"] == "cuda":
                event = reply["event"]
                # On the host, here: complete for every stream, not only the one current at submit.
                link.cuda_view.wait_event(int(event["index"]), event["handle"])
                streams = [stream]
                # The finalizer only queues: the release thread records the streams' events (no CUDA call
                # in a finalizer, none at interpreter exit).
                on_free = functools.partial(self._releases.put, (lease, streams))
                data, finalizer = link.cuda_view.lease_tensor(reply["offset"], reply["nbytes"], shape, strides,
                                                              on_free, dtype)
            else:
                view = self._host_view(reply["slab"]["name"])
                on_free = functools.partial(self._releases.put, (lease, None))
                data, finalizer = view.lease_tensor(reply["offset"], reply["nbytes"], shape, strides, on_free, dtype)
            self._leases[lease] = finalizer
        pts_shape = tuple(reply["timestamp_shape"])
        pts = torch.from_numpy(np.frombuffer(reply["pts"], dtype=np.float64).copy().reshape(pts_shape))
        durations = torch.from_numpy(np.frombuffer(reply["durations"], dtype=np.float64).copy().reshape(pts_shape))
        if clip_shape is not None:
            data, pts, durations = data.unflatten(0, clip_shape), pts.unflatten(0, clip_shape), \
                durations.unflatten(0, clip_shape)
        batch = ServiceBatch(data, pts, durations, _info(reply.get("info")))
        batch._finalizer = finalizer  # type: ignore[attr-defined]
        if reply["transport"] == "cuda" and reply.get("lease") is not None:
            batch._streams = streams  # type: ignore[attr-defined]
        return batch

    def _host_view(self, name: str) -> Any:
        from framefeed.serve._shm import HostSlabView

        with self._views_lock:
            view = self._host_views.get(name)
            if view is None:
                view = self._host_views[name] = HostSlabView(name, owner=self.server_uid)
            return view

    def _after_streams(self, streams: list[Any]) -> None:
        """On the release thread: wait until the work queued so far on every
        stream a CUDA batch was used on (which may still read its slot) is
        done. One event per stream, made once and reused."""
        for stream in streams:
            event = self._stream_events.get(stream)
            if event is None:
                event = self._stream_events[stream] = torch.cuda.Event()
            event.record(stream)
            event.synchronize()

    def _release_reply(self, reply: dict[str, Any]) -> None:
        if reply.get("lease") is not None:
            self._leases.setdefault(int(reply["lease"]), None)
            self._releases.put((int(reply["lease"]), None))

    # -- many requests ----------------------------------------------------------------------------

    def map(
        self,
        requests: Iterable[DecodeRequest | Any],
        *,
        ordered: bool = True,
        lookahead: int = 8,
        return_exceptions: bool = False,
        timeout: float | None = None,
        output_dtype: torch.dtype | Literal["auto"] = torch.uint8,
    ) -> Iterator[ServiceBatch | BaseException]:
        """Decode `requests` (each a `DecodeRequest`, or a path meaning its
        whole file) and yield their batches, as `DecodePool.map`: at most
        `lookahead` requests in flight, `ordered=False` yields as they
        complete, a failure raises from the iterator (or is yielded with
        `return_exceptions=True`); `output_dtype` applies to the paths (a
        `DecodeRequest` carries its own)."""
        self._check_usable()
        if isinstance(lookahead, bool) or not isinstance(lookahead, int) or lookahead < 1:
            raise ValueError(f"lookahead must be an int >= 1, got {lookahead!r}")
        output_dtype = args.output_dtype(output_dtype)
        return self._map(iter(requests), ordered, lookahead, return_exceptions, timeout, output_dtype)

    def _map(self, requests: Iterator[Any], ordered: bool, depth: int, return_exceptions: bool,
             timeout: float | None, output_dtype: Any = torch.uint8) -> Iterator[ServiceBatch | BaseException]:
        def submit(item: Any) -> Future:
            request = item if isinstance(item, DecodeRequest) else DecodeRequest(item, output_dtype=output_dtype)
            return self._submit(request, None, timeout)

        return map_with_lookahead(submit, requests, ordered=ordered, depth=depth, return_exceptions=return_exceptions)

    def videos(
        self,
        sources: Iterable[str | Path],
        *,
        seek_mode: Literal["exact", "approximate"] = "exact",
        dimension_order: Literal["NCHW", "NHWC"] = "NCHW",
        transforms: Sequence[Any] | None = None,
        stream_index: int | None = None,
        lookahead: int = 8,
        timeout: float | None = None,
        output_dtype: torch.dtype | Literal["auto"] = torch.uint8,
    ) -> Any:
        """Sources for the samplers, as `DecodePool.videos` (`output_dtype` included):
        `clips_at_random_indices(client.videos(paths), num_clips=4, ...)`
        returns one `Future[ServiceBatch]` of clips per source, equal to the
        sampler called on `VideoDecoder(path, ...)` per source under the same
        seed (the sampler runs here, drawing from this process's RNG)."""
        from framefeed.client._videos import ServiceVideos

        self._check_usable()
        template = DecodeRequest(None, seek_mode=seek_mode, dimension_order=dimension_order,
                                 transforms=transforms or (), stream_index=stream_index, output_dtype=output_dtype)
        return ServiceVideos(self, list(sources), template, lookahead, timeout)

    def _open(self, source: Any, template: DecodeRequest, timeout: float | None) -> Future:
        """A future of the source's `VideoStreamMetadata` (the server reads the file)."""
        import grpc

        from framefeed.serve.protocol import metadata_from_wire

        self._check_usable()
        timeout = self.timeout if timeout is None else float(timeout)
        message = {"session": self._session, "device": self._link.name, "source": _path_of(source),
                   "seek_mode": template.seek_mode, "stream_index": template.stream_index}
        future: _ServiceFuture = _ServiceFuture()
        call = self._calls["Open"].future(pack(message), timeout=timeout)

        def arrived(call: Any) -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                reply = unpack(call.result())
                future._server_warnings = warnings_from_wire(reply.get("warnings"))
                if not reply.get("ok"):
                    raise_error(reply)
                future.set_result(metadata_from_wire(reply["metadata"]))
            except grpc.RpcError as error:
                future.set_exception(_rpc_error(error, "Open", timeout))
            except Exception as error:
                future.set_exception(error)

        call.add_done_callback(arrived)
        return future

    # -- lifetime ---------------------------------------------------------------------------------

    def _release_loop(self) -> None:
        """Send releases as they come and a heartbeat at least every `heartbeat_seconds`."""
        unsent: list[int] = []
        while True:
            items = []
            try:
                items.append(self._releases.get(timeout=self.heartbeat_seconds))
                while True:
                    items.append(self._releases.get_nowait())
            except queue.Empty:
                pass
            for lease, streams in items:
                if streams:
                    self._after_streams(streams)  # the consumer's kernels are done with the slot
                if lease >= 0:  # -1: close() waking this thread
                    unsent.append(lease)
            if self._closed and not self._calls_in_flight and not (set(self._leases) - set(unsent)):
                self._close_mapping()  # no tensor views the slab any more
                self._goodbye()  # returns whatever is left
                self._channel.close()
                self._close_auth_socket()
                return
            try:
                self._call("Heartbeat", {"session": self._session, "release": unsent}, self.heartbeat_seconds * 2)
            except ServiceConnectionError:
                continue  # the server is gone or slow: requests fail on their own; retry these next time
            except ServiceError as error:  # the session ended (expired, or the server restarted)
                self._broken = ServiceConnectionError(str(error))
                return
            except Exception:
                continue
            for lease in unsent:
                self._leases.pop(lease, None)
            unsent = []

    def _close_mapping(self) -> None:
        view = getattr(getattr(self, "_link", None), "cuda_view", None)
        if view is not None:
            try:
                view.close()
            except Exception:  # the driver is going away: nothing left to unmap
                pass

    def _goodbye(self) -> None:
        # Held for the whole call: the release thread and an exit hook can both get
        # here, and the one that comes second must not close the channel and the
        # authentication socket under the first one's Goodbye (the server would
        # see the socket close first and log a dead client).
        with self._goodbye_lock:
            if self._said_goodbye:
                return
            self._said_goodbye = True
            at_exit = getattr(self, "_at_exit", None)
            if at_exit is not None:
                at_exit.cancel()
            try:
                self._call("Goodbye", {"session": self._session}, 2.0)
            except Exception:
                pass  # the server is gone: nothing to return
            self._close_auth_socket()

    def _close_auth_socket(self) -> None:
        sock, self._auth_socket = self._auth_socket, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def close(self) -> None:
        """Stop taking requests. Batches already returned stay valid: the
        session ends once they have all been released or freed (or this
        process exits). Idempotent."""
        self._closed = True
        self._releases.put((-1, None))
        live = any(f is not None and f.alive for f in list(self._leases.values()))
        if not live and not self._calls_in_flight and threading.current_thread() is not self._releaser:
            self._releaser.join(timeout=5.0)  # the goodbye goes out before this process may exit

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"ServiceClient({self.address}, device={self.device}, transport={self.transport}, {state})"



_LIVE_CLIENTS: weakref.WeakSet[ServiceClient] = weakref.WeakSet()


def _goodbye_at_exit(ref: weakref.ref) -> None:
    """This process is exiting with the client's session still open (the
    client was not closed, or closed while batches were alive): end the
    session now (its batches die with the process)."""
    client = ref()
    if client is None or os.getpid() != client._pid:
        return
    client._closed = True
    client._goodbye()


def _forget_in_child() -> None:
    """After fork(): the child must not hold its parent's authentication
    sockets open (the server would think the parent alive)."""
    for client in list(_LIVE_CLIENTS):
        sock, client._auth_socket = client._auth_socket, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()


os.register_at_fork(after_in_child=_forget_in_child)


def _path_of(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if isinstance(path, str):
            return os.path.abspath(path)
    raise TypeError(f"framefeed serve reads files the server can open: pass a path, not {type(source).__name__}")


def _request_message(request: DecodeRequest) -> dict[str, Any]:
    message: dict[str, Any] = {"source": _path_of(request.source), "seek_mode": request.seek_mode,
                               "dimension_order": request.dimension_order, "step": request.step}
    if request.transforms:
        message["transforms"] = transforms_to_wire(request.transforms)
    if request.output_dtype is not torch.uint8:  # the default stays off the wire (older servers)
        message["output_dtype"] = args.output_dtype_name(request.output_dtype)
    for name in ("indices", "seconds"):
        value = getattr(request, name)
        if value is not None:
            message[name] = list(value)
    for name in ("start", "stop", "stream_index"):
        value = getattr(request, name)
        if value is not None:
            message[name] = value
    return message


def _info(wire: Any) -> DecodeInfo | None:
    if not isinstance(wire, dict):
        return None
    status = wire.get("cpu_fallback") or {}
    return DecodeInfo(str(wire.get("source", "")), int(wire.get("session", -1)),
                      CpuFallbackStatus(str(status.get("device", "")), bool(status.get("is_fallback")),
                                        str(status.get("reason", ""))),
                      bool(wire.get("decoder_reused")), int(wire.get("frames_decoded", 0)))


def connect(address: str | os.PathLike[str] | None = None, *, timeout: float = 60.0, connect_timeout: float = 10.0,
            device: str | None = None, transport: Transport = "auto",
            token_file: str | os.PathLike[str] | None = None, server_uid: int | None = None) -> ServiceClient:
    """Connect to a running `framefeed serve`.

    Args:
        address: what the server printed (`unix:///path`, a socket path, or
            `host:port`); None: `$FRAMEFEED_SOCKET` or the server's default socket.
        timeout: seconds a request may take (the server answers "busy"
            before; a server that does not answer raises ServiceConnectionError).
        connect_timeout: seconds to wait for the server's first answer.
        device: the server device to decode on (None: its first).
        transport: "auto" (CUDA IPC if this process sees the server's GPU,
            else shared memory if it sees its /dev/shm, else inside the
            replies), or one of "cuda", "shm", "inline" to insist.
        token_file: TCP only: the file holding the server's secret (None:
            `$FRAMEFEED_TOKEN_FILE`, else `/tmp/framefeed-<your uid>/serve.token` if it exists).
        server_uid: the uid the server must run as (None: this process's;
            root is always trusted): the owner of the Unix socket's folder,
            or of the TCP token file and its folder.

    Raises:
        ImportError: grpcio or msgpack missing (`pip install 'framefeed[serve]'`).
        ServiceConnectionError (a ConnectionError): no server answers there.
        PermissionError: the socket's folder or the listening process belongs
            to another user, the server refused this client, or (TCP) it did
            not prove it holds the token.
        ServiceError: the transport asked for is not possible.
        ValueError: a bad address, transport or device.
    """
    return ServiceClient(address, timeout=timeout, connect_timeout=connect_timeout, device=device,
                         transport=transport, token_file=token_file, server_uid=server_uid)

