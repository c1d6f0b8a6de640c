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

Security (the trust model is in the README, "Decode service"):
- Unix socket: created in a folder that is the server user's own (0700;
  refused if another user made it, `_folders`), the socket 0600 (0666 when
  `--allow-uid`/`--allow-gid` let other users in). Every client says hello
  on `<socket>.auth`, where the kernel names its uid and gids and the
  server admits only its access policy (`_auth`); every gRPC call then
  names the session that hello opened.
- TCP: binds 127.0.0.1 unless `--host` says otherwise (then a warning),
  never shares its port (SO_REUSEPORT off), and admits only clients that
  prove they hold the token file's secret; without one it refuses to start
  unless told `--allow-unauthenticated-tcp`.
- A request may only read files under an `--allow-root`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import socket
import stat
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from framefeed.serve import _warnings
from framefeed.serve._auth import HELLO_SECONDS, AccessPolicy, frame, peer_of, read_frame
from framefeed.serve._folders import prepare_socket_folder
from framefeed.serve._service import CallContext, DecodeService, ServeConfig
from framefeed.serve.protocol import (
    SERVICE,
    Address,
    ProtocolError,
    ServiceBusyError,
    auth_socket_path,
    check_fields,
    default_token_file,
    error_reply,
    pack,
    unpack,
    warnings_to_wire,
)

Handler = Callable[[dict[str, Any], CallContext], Awaitable[dict[str, Any]]]
_MAX_PENDING_HELLOS = 64
_MAX_REFUSALS = 256

_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def _log(text: str) -> None:
    print(f"framefeed serve: {text}", file=sys.stderr, flush=True)


def _wire(service: DecodeService, method: str, handler: Handler, *, tcp: bool) -> Callable[..., Awaitable[bytes]]:
    """A gRPC unary handler: body -> checked message -> authenticated call -> `handler` -> reply body."""
    import grpc

    async def call(body: bytes, context: Any) -> bytes:
        try:
            message = check_fields(method, unpack(body))
        except ProtocolError as error:
            service.requests[(method, "malformed")] += 1
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        state = CallContext(None, context)
        if method in ("Challenge", "Hello"):
            if not tcp:
                service.requests[(method, "unauthenticated")] += 1
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "on this server's Unix socket, clients say "
                                    "hello on its .auth socket (a framefeed client of another version?)")
        else:
            session = service.book.sessions.get(message["session"])
            if session is None:
                service.requests[(method, "unauthenticated")] += 1
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, service.unknown_session_text())
            state.session = service.book.touch(message["session"])
        try:
            reply = await handler(message, state)
            service.requests[(method, "ok")] += 1
        except ServiceBusyError as error:
            service.requests[(method, "busy")] += 1
            reply = error_reply(error, state.renames)
        except Exception as error:  # the request's own failure: an error reply, the server goes on
            service.requests[(method, "error")] += 1
            reply = error_reply(error, state.renames)
        if state.warnings:
            reply["warnings"] = warnings_to_wire(state.warnings)
        return pack(reply)

    return call


def _handlers(service: DecodeService, *, tcp: bool) -> Any:
    import grpc

    table: dict[str, Handler] = {
        "Challenge": service.challenge, "Hello": service.hello, "Heartbeat": service.heartbeat,
        "Open": service.open, "Decode": service.decode, "Stats": service.stats, "Goodbye": service.goodbye,
    }
    return grpc.method_handlers_generic_handler(
        SERVICE, {name: grpc.unary_unary_rpc_method_handler(_wire(service, name, handler, tcp=tcp))
                  for name, handler in table.items()})


class AuthListener:
    """The authentication socket (see `_auth`): one hello per connection,
    answered after the kernel's credentials pass the access policy; the
    connection then stays open for the session's lifetime."""

    def __init__(self, service: DecodeService, path: str, policy: AccessPolicy) -> None:
        self.service = service
        self.path = path
        self.policy = policy
        self._server: asyncio.AbstractServer | None = None
        self._pending = 0  # hellos of admitted peers being read
        self._refusing = 0  # refusals being sent

    async def start(self, mode: int) -> None:
        old = os.umask(0o777 & ~mode)  # born with its final mode: no window where others may connect
        try:
            self._server = await asyncio.start_unix_server(self._handle, self.path, limit=1 << 16)
        finally:
            os.umask(old)
        os.chmod(self.path, mode)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        service = self.service
        try:
            peer = peer_of(writer.get_extra_info("socket"))
        except OSError:
            writer.close()
            return
        admitted = self.policy.admits(peer)
        # Whom the policy refuses cannot hold the places of those it admits while they take their time.
        counter = "_pending" if admitted else "_refusing"
        if getattr(self, counter) >= (_MAX_PENDING_HELLOS if admitted else _MAX_REFUSALS):
            writer.close()
            return
        setattr(self, counter, getattr(self, counter) + 1)
        session = None
        try:
            session = await (self._hello(peer, reader, writer) if admitted else self._refuse(peer, reader, writer))
        finally:
            setattr(self, counter, getattr(self, counter) - 1)
            if session is None:
                writer.close()
        if session is None:
            return
        try:
            while await reader.read(4096):  # nothing more is expected: the session lasts until EOF
                pass
        except (ConnectionError, OSError):
            pass
        finally:
            ended = service.disconnected(session)
            writer.close()
        if ended is not None and any(ended):
            _log(f"client {session.peer.describe()} disconnected without saying goodbye (killed?) with "
                 f"{ended[1]} request(s) in progress: session ended, {ended[0]} slot(s) returned")

    async def _refuse(self, peer: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Say why, at once, without reading more than the hello (given a second to arrive)."""
        self.service.requests[("Hello", "unauthenticated")] += 1
        error = PermissionError(f"uid {peer.uid} (gid {peer.gid}) may not use this framefeed server; it admits "
                                f"{self.policy.describe()} (--allow-uid, --allow-gid)")
        writer.write(frame(pack(error_reply(error))))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.drain(), 1.0)
            await asyncio.wait_for(read_frame(reader), 1.0)  # then close without resetting their send
        return None

    async def _hello(self, peer: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Any:
        service = self.service
        try:
            message = check_fields("Hello", unpack(await asyncio.wait_for(read_frame(reader), HELLO_SECONDS)))
        except (asyncio.TimeoutError, TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError,
                ValueError):
            service.requests[("Hello", "malformed")] += 1
            return None
        try:
            session = service.open_session(message, peer)
        except Exception as error:
            writer.write(frame(pack(error_reply(error))))
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.drain(), HELLO_SECONDS)
            return None
        session.connection = writer
        writer.write(frame(pack(service.hello_reply(session))))
        try:
            await asyncio.wait_for(writer.drain(), HELLO_SECONDS)
        except (asyncio.TimeoutError, TimeoutError, ConnectionError, OSError):
            service.book.end_session(session.token)
            return None
        service.requests[("Hello", "ok")] += 1
        return session


def _prepare_socket(path: str) -> None:
    """Clear a stale socket in the (already trusted) socket folder.

    Raises:
        OSError: another server listens there, or the path is not a socket.
    """
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


async def _bind(server: Any, service: DecodeService, address: Address) -> tuple[Address, AuthListener | None]:
    if address.path is not None:
        policy = service.policy
        prepare_socket_folder(os.path.dirname(os.path.abspath(address.path)), shared=policy.shared)  # again: cheap
        mode = 0o666 if policy.shared else 0o600  # shared: the kernel's credentials decide who gets in
        auth = AuthListener(service, auth_socket_path(address.path), policy)
        _prepare_socket(address.path)
        _prepare_socket(auth.path)
        old = os.umask(0o777 & ~mode)  # the socket is born with its mode: no window where others may connect
        try:
            server.add_insecure_port(address.target)
        finally:
            os.umask(old)
        os.chmod(address.path, mode)
        await auth.start(mode)
        return address, auth
    port = server.add_insecure_port(address.target)
    if not port:
        raise OSError(f"cannot listen on {address.target}")
    if address.host not in _LOOPBACK:
        _log(f"warning: listening on {address.host}, reachable from other hosts; the token travels unencrypted: "
             "use this across hosts only on a network you trust (or through an SSH tunnel)")
    return Address(host=address.host, port=port), None


def _raise_file_limit() -> None:
    """One descriptor per client session and per connection: allow as many as the hard limit does."""
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 1 << 16) if hard != resource.RLIM_INFINITY
                                                        else 1 << 16, hard))


async def serve(config: ServeConfig, address: Address, *, metrics: tuple[str, int] | None = None,
                ready: Callable[[str], None] | None = None, token_file: str | None = None,
                allow_unauthenticated_tcp: bool = False) -> int:
    """Run until SIGTERM/SIGINT; the exit code.

    Raises:
        PermissionError: an untrusted socket folder or token file.
        OSError, ValueError, MemoryError, ImportError: what the devices, the
            addresses or the options make impossible.
    """

    _raise_file_limit()
    _warnings.install()
    token_path = None
    token = None
    if address.path is not None:  # refuse an untrusted folder before anything else starts
        shared = AccessPolicy.of(config.allow_uids, config.allow_gids).shared
        prepare_socket_folder(os.path.dirname(os.path.abspath(address.path)), shared=shared)
    elif not allow_unauthenticated_tcp:
        from framefeed.serve._auth import load_or_create_token

        token_path = os.path.abspath(token_file or default_token_file())
        token = load_or_create_token(token_path)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):  # before anything can say it is ready: as PID 1 in a
        loop.add_signal_handler(signum, stop.set)  # container, a SIGTERM without a handler is ignored
    try:
        return await _serve(config, address, metrics, ready, token, token_path, stop)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


async def _serve(config: ServeConfig, address: Address, metrics: tuple[str, int] | None,
                 ready: Callable[[str], None] | None, token: bytes | None, token_path: str | None,
                 stop: asyncio.Event) -> int:
    import grpc

    service = DecodeService(config)
    service.token = token
    server = None
    auth = None
    metrics_server = None
    try:
        server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", config.max_request_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),
        ])
        server.add_generic_rpc_handlers((_handlers(service, tcp=address.path is None),))
        bound, auth = await _bind(server, service, address)
        await server.start()
        if address.path is None and token is None:
            _log("warning: --allow-unauthenticated-tcp: ANY local user (and, off loopback, any host) that can "
                 "connect may decode every file under --allow-root")
        metrics_url = None
        if metrics is not None:
            from framefeed.serve._metrics import MetricsServer

            metrics_server = MetricsServer(service, *metrics)
            metrics_url = await metrics_server.start()
        line = f"listening on {bound} (devices: {', '.join(service.devices)}"
        if token_path:
            line += f"; token: {token_path}"
        line += f"; metrics: {metrics_url})" if metrics_url else ")"
        print(f"framefeed serve: {line}", flush=True)
        if ready is not None:
            ready(str(bound))
        await _run_until(stop, service)
        service.begin_shutdown()
        _log(f"stopping: {service.in_flight} request(s) in flight get up to {config.shutdown_timeout:g} s")
        await server.stop(grace=config.shutdown_timeout)
        server = None
        return 0
    finally:
        if server is not None:
            await server.stop(grace=None)
        if auth is not None:
            await auth.close()
        if metrics_server is not None:
            await metrics_server.close()
        service.close()
        if address.path is not None:
            for path in (address.path, auth_socket_path(address.path)):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        _log("stopped")


async def _run_until(stop: asyncio.Event, service: DecodeService) -> None:
    """Until `stop` (SIGTERM/SIGINT): end silent sessions, trim the heap when idle."""
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
            await asyncio.wait_for(stop.wait(), service.config.heartbeat_seconds)
        for session, returned in await service.expire_sessions():
            _log(f"client {session.peer.describe()} sent no heartbeat for {service.config.lease_timeout:g} s: "
                 f"session ended, {returned} slot(s) returned")
        service.maybe_trim()
