"""`framefeed serve`: the gRPC server around `DecodeService`, its socket,
signals and shutdown.

Why gRPC (over ZeroMQ): every call carries its own deadline and status, so
an oversized body is refused by gRPC itself with RESOURCE_EXHAUSTED while
the connection stays usable (ZeroMQ's size cap drops the peer), a request
to a dead server fails at once with UNAVAILABLE instead of waiting in a
socket queue, and the asyncio server holds no thread per waiting request
(requests wait for the decoders or for memory by the hundred). It listens on
Unix sockets and TCP alike, needs no generated code here (generic handlers
over msgpack bodies, `protocol`), and its wheels are widely installed.

Security: the Unix socket is created owner-only (umask 0177, then checked
0600) in a folder created 0700; TCP binds to 127.0.0.1 unless `--host`
says otherwise (then a warning), and never shares its port (SO_REUSEPORT
off). A request may only read files under an `--allow-root`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import stat
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from framefeed.serve._service import DecodeService, ServeConfig
from framefeed.serve.protocol import (
    SERVICE,
    Address,
    ProtocolError,
    ServiceBusyError,
    check_fields,
    error_reply,
    pack,
    unpack,
)

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]

_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def _log(text: str) -> None:
    print(f"framefeed serve: {text}", file=sys.stderr, flush=True)


def _wire(service: DecodeService, method: str, handler: Handler) -> Callable[..., Awaitable[bytes]]:
    """A gRPC unary handler: body -> checked message -> `handler` -> reply body."""
    import grpc

    async def call(body: bytes, context: Any) -> bytes:
        try:
            message = check_fields(method, unpack(body))
        except ProtocolError as error:
            service.requests[(method, "malformed")] += 1
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        try:
            reply = await (handler(message, context) if method == "Decode" else handler(message))
            service.requests[(method, "ok")] += 1
        except ServiceBusyError as error:
            service.requests[(method, "busy")] += 1
            reply = error_reply(error)
        except Exception as error:  # the request's own failure: an error reply, the server goes on
            service.requests[(method, "error")] += 1
            reply = error_reply(error)
        return pack(reply)

    return call


def _handlers(service: DecodeService) -> Any:
    import grpc

    table: dict[str, Handler] = {
        "Hello": service.hello, "Heartbeat": service.heartbeat, "Open": service.open,
        "Decode": service.decode, "Stats": service.stats, "Goodbye": service.goodbye,
    }
    return grpc.method_handlers_generic_handler(
        SERVICE, {name: grpc.unary_unary_rpc_method_handler(_wire(service, name, handler))
                  for name, handler in table.items()})


def _prepare_socket(path: str) -> None:
    """Make the socket's folder (0700 when we create it) and clear a stale socket.

    Raises:
        OSError: another server listens there, or the path is not a socket.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, mode=0o700, exist_ok=True)
    if not os.path.lexists(path):
        return
    if not stat.S_ISSOCK(os.lstat(path).st_mode):
        raise OSError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody listens: left by a server that died
        return
    finally:
        probe.close()
    raise OSError(f"another server is listening on {path}")


def _bind(server: Any, address: Address) -> Address:
    if address.path is not None:
        _prepare_socket(address.path)
        old = os.umask(0o177)  # the socket is born owner-only: no window where others may connect
        try:
            server.add_insecure_port(address.target)
        finally:
            os.umask(old)
        os.chmod(address.path, 0o600)
        return address
    port = server.add_insecure_port(address.target)
    if not port:
        raise OSError(f"cannot listen on {address.target}")
    if address.host not in _LOOPBACK:
        _log(f"warning: listening on {address.host}, reachable from other hosts; any process that can "
             "connect may decode files under --allow-root")
    return Address(host=address.host, port=port)


async def serve(config: ServeConfig, address: Address, *, metrics: tuple[str, int] | None = None,
                ready: Callable[[str], None] | None = None) -> int:
    """Run until SIGTERM/SIGINT; the exit code."""
    import grpc

    service = DecodeService(config)
    server = None
    try:
        server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", config.max_request_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),
        ])
        server.add_generic_rpc_handlers((_handlers(service),))
        bound = _bind(server, address)
        await server.start()
        metrics_url = None
        if metrics is not None:
            from framefeed.serve._metrics import start_metrics_server

            metrics_url = start_metrics_server(service, *metrics)
        line = f"listening on {bound} (devices: {', '.join(service.devices)}"
        line += f"; metrics: {metrics_url})" if metrics_url else ")"
        print(f"framefeed serve: {line}", flush=True)
        if ready is not None:
            ready(str(bound))
        await _run_until_signal(service)
        service.begin_shutdown()
        _log(f"stopping: {service.in_flight} request(s) in flight get up to {config.shutdown_timeout:g} s")
        await server.stop(grace=config.shutdown_timeout)
        server = None
        return 0
    finally:
        if server is not None:
            await server.stop(grace=None)
        service.close()
        if address.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(address.path)
        _log("stopped")


async def _run_until_signal(service: DecodeService) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(stop.wait(), service.config.heartbeat_seconds)
            for pid, returned in await service.expire_sessions():
                _log(f"client pid {pid} sent no heartbeat for {service.config.lease_timeout:g} s: "
                     f"session ended, {returned} slot(s) returned")
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
