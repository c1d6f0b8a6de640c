"""The wire between `framefeed serve` and `framefeed.client`: plain data only.

Every call is a gRPC unary call on service `framefeed.Decode` whose request
and reply bodies are msgpack maps (no protobuf, no pickle: the server only
ever reads maps of strings, numbers, lists and bytes, and never executes
what a client sends). Methods:

- `Challenge` {} -> {nonce}: TCP only, the first half of `Hello`
- `Hello`     {protocol, pid, nonce, client_nonce, proof} -> {session,
  server_proof, devices, heartbeat_seconds, ...}: TCP only. On a Unix
  socket the client says hello on the server's authentication socket
  instead (`<socket>.auth`, framed msgpack, see `_auth`), where the kernel
  tells the server who it is (SO_PEERCRED).
- `Heartbeat` {session, release: [lease ids]} -> {}: keeps the session's
  leases alive and returns the given ones
- `Open`      {session, device, source, seek_mode, stream_index} -> {metadata}
- `Decode`    {session, device, source, <what>, seek_mode, dimension_order,
  stream_index, output_dtype, transport} -> a lease: where the frames lie,
  their dtype, shape and strides (in elements), pts, durations, how they were decoded
- `Stats`     {session} -> the server's counters
- `Goodbye`   {session} -> {}: the session ends, its leases return

Every method but `Challenge` and `Hello` names a session, and the session
token (random, 128 bits, known only to the client that said hello) is the
credential: a call without a live session is refused with gRPC status
UNAUTHENTICATED before any work.

A reply is `{"ok": True, ...}` or `{"ok": False, "error": {...}}` for a
request the server understood but could not serve; the client raises the
exception `VideoDecoder` or `DecodePool` would raise in-process (same type,
same message), with the server-side causes chained as `RemoteCause`s.
Warnings raised while serving a request travel in its reply (`warnings`)
and are raised again in the client. A body that is not such a map, or has
unknown or mistyped fields, is refused with gRPC status INVALID_ARGUMENT; a
body larger than the server's limit with RESOURCE_EXHAUSTED (gRPC enforces
it). Neither affects the connection.

Errors the client raises beyond the decoder's own (`ServiceError` and kin)
are defined here so both sides name them the same.
"""

from __future__ import annotations

import builtins
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

PROTOCOL_VERSION = 2
SERVICE = "framefeed.Decode"
METHODS = ("Challenge", "Hello", "Heartbeat", "Open", "Decode", "Stats", "Goodbye")

# Limits a well-formed request stays far below (the server also caps the body size).
MAX_PATH_CHARS = 4096
MAX_TARGETS = 1 << 20
DEFAULT_MAX_REQUEST_BYTES = 4 << 20
MAX_MESSAGE_CHARS = 8192  # an error or warning text sent to a client
MAX_CAUSES = 8
MAX_WARNINGS = 32

TRANSPORTS = ("cuda", "shm", "inline")
# `output_dtype` as the wire spells it (`VideoDecoder`'s torch.uint8, torch.float32, "auto"),
# and the dtypes a reply's frames can have ("auto" resolved by the server).
OUTPUT_DTYPES = ("uint8", "float32", "auto")
FRAME_DTYPES = ("uint8", "float32")


# -- errors ---------------------------------------------------------------------------------


class ServiceError(RuntimeError):
    """The decode service could not serve a request (see the message)."""


class ServiceBusyError(ServiceError):
    """busy: the server's memory budget stayed full (every slot leased to
    clients) for the request's whole timeout. Release batches sooner
    (`batch.release()` or drop them), lower the look-ahead, or start the
    server with a larger `--memory-budget`."""


class ServiceConnectionError(ServiceError, ConnectionError):
    """The server cannot be reached: it is not running, it stopped or died,
    or it did not answer within the timeout."""


class ProtocolError(ValueError):
    """A malformed message (server side: answered with INVALID_ARGUMENT)."""


class RemoteCause(Exception):
    """What led, inside the server, to the exception a client call raised:
    the server-side exception's type and message, as text (its traceback
    stays in the server). Chained as that exception's `__cause__`."""


def _error_types() -> dict[str, type[BaseException]]:
    """The exception types a reply may name, beyond the builtin ones."""
    from framefeed.engine.packets import MissingPacketsError
    from framefeed.errors import (
        CudaUnavailableError,
        DecodingError,
        FrameTimeOutOfRangeError,
        VideoFileNotFoundError,
        VideoOpenError,
    )
    from framefeed.pool import PoolClosedError

    types: list[type[BaseException]] = [
        FrameTimeOutOfRangeError, VideoOpenError, VideoFileNotFoundError, DecodingError, CudaUnavailableError,
        MissingPacketsError, PoolClosedError, ServiceError, ServiceBusyError, ServiceConnectionError, ProtocolError,
    ]
    return {t.__name__: t for t in types}


def _known_type(name: str) -> type[BaseException] | None:
    known = _error_types().get(name)
    if known is not None:
        return known
    builtin = getattr(builtins, name, None)
    if isinstance(builtin, type) and issubclass(builtin, Exception) and not issubclass(builtin, Warning):
        return builtin
    return None


def _clip(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS - 3] + "..."


def _qualified(error: BaseException) -> str:
    kind = type(error)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _renamed(text: str, renames: Sequence[tuple[str, str]]) -> str:
    for internal, shown in renames:  # "/proc/self/fd/7" but not "/proc/self/fd/71"
        text = re.sub(re.escape(repr(internal)) + "|" + re.escape(internal) + r"(?!\d)",
                      lambda match, shown=shown: repr(shown) if match.group(0)[0] in "'\"" else shown, text)
    return text


def describe_error(error: BaseException, renames: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """`error` as plain data: named by the most specific type in its class
    hierarchy the client knows (a builtin or framefeed's own), its message,
    an OSError's (errno, strerror, filename) so the client rebuilds it
    exactly, and the chain of its causes as (type, message) text. Each
    `(internal, shown)` of `renames` names a path the server opened
    (`/proc/self/fd/N`) by the path the client gave."""
    name = next((cls.__name__ for cls in type(error).__mro__ if _known_type(cls.__name__) is cls), "ServiceError")
    wire: dict[str, Any] = {"type": name, "message": _clip(_renamed(str(error), renames))}
    if isinstance(error, OSError) and error.errno is not None and isinstance(error.strerror, str):
        filename = error.filename if isinstance(error.filename, str) else None
        wire["os"] = [int(error.errno), _clip(error.strerror), filename]
    causes = []
    cause = _next_cause(error)
    while cause is not None and len(causes) < MAX_CAUSES:
        causes.append({"type": _qualified(cause), "message": _clip(_renamed(str(cause), renames))})
        cause = _next_cause(cause)
    if causes:
        wire["causes"] = causes
    return wire


def _next_cause(error: BaseException) -> BaseException | None:
    if error.__cause__ is not None:
        return error.__cause__
    return None if error.__suppress_context__ else error.__context__


def error_reply(error: BaseException, renames: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """The reply for a request that failed with `error` (see `describe_error`)."""
    return {"ok": False, "error": describe_error(error, renames)}


def error_from_reply(reply: Mapping[str, Any]) -> BaseException:
    """The exception an error reply describes: the type the decoder or the
    service raised, with its message (an OSError rebuilt from its errno,
    strerror and filename), its server-side causes chained as
    `RemoteCause`s; `ServiceError` for a type this side does not know."""
    error = reply.get("error")
    error = error if isinstance(error, dict) else {}
    name, message = str(error.get("type", "ServiceError")), str(error.get("message", "unknown error"))
    kind = _known_type(name) or ServiceError
    made: BaseException | None = None
    details = error.get("os")
    if issubclass(kind, OSError) and isinstance(details, list) and len(details) == 3:
        errno_, strerror, filename = details
        try:
            made = kind(int(errno_), str(strerror), filename) if filename is not None else kind(int(errno_), str(strerror))
        except Exception:
            made = None
        if made is not None and str(made) != message:
            made = None
    if made is None:
        try:
            made = kind(message)
        except Exception:
            made = ServiceError(f"{name}: {message}")
    chained: BaseException = made
    causes = error.get("causes")
    for cause in causes if isinstance(causes, list) else []:
        if not isinstance(cause, dict):
            break
        remote = RemoteCause(f"{cause.get('type', '?')}: {cause.get('message', '')}")
        chained.__cause__ = remote
        chained = remote
    return made


def raise_error(reply: Mapping[str, Any]) -> None:
    """Raise what an error reply describes (`error_from_reply`)."""
    raise error_from_reply(reply)


def warnings_to_wire(caught: list[tuple[type[Warning], str]]) -> list[dict[str, str]]:
    """Warnings as plain data, at most `MAX_WARNINGS`, duplicates dropped."""
    wire: list[dict[str, str]] = []
    for category, message in caught:
        item = {"category": category.__name__, "message": _clip(message)}
        if item not in wire:
            wire.append(item)
        if len(wire) >= MAX_WARNINGS:
            break
    return wire


def warnings_from_wire(wire: Any) -> list[tuple[type[Warning], str]]:
    """(category, message) pairs; a category this side does not know is a UserWarning."""
    result = []
    for item in wire if isinstance(wire, list) else []:
        if not isinstance(item, dict):
            continue
        category = getattr(builtins, str(item.get("category", "")), None)
        if not (isinstance(category, type) and issubclass(category, Warning)):
            category = UserWarning
        result.append((category, str(item.get("message", ""))))
    return result[:MAX_WARNINGS]


# -- encoding -------------------------------------------------------------------------------


def pack(message: Mapping[str, Any]) -> bytes:
    import msgpack

    return msgpack.packb(message, use_bin_type=True)


def unpack(body: bytes) -> dict[str, Any]:
    """A message body as a map with string keys.

    Raises:
        ProtocolError: not msgpack, trailing bytes, or not a map.
    """
    import msgpack

    try:
        message = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception as error:  # msgpack raises several types for bad bytes
        raise ProtocolError(f"malformed message: not msgpack ({type(error).__name__}: {error})") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"malformed message: expected a map, got {type(message).__name__}")
    return message


# -- request fields ---------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and not (isinstance(value, float) and math.isnan(value))


def _is_nonce(value: Any) -> bool:
    return isinstance(value, bytes) and 16 <= len(value) <= 64


_CHECKS: dict[str, tuple[str, Any]] = {
    "protocol": ("an int", _is_int),
    "nonce": ("16 to 64 bytes", _is_nonce),
    "client_nonce": ("16 to 64 bytes", _is_nonce),
    "proof": ("16 to 64 bytes", _is_nonce),
    "pid": ("an int", _is_int),
    "session": ("a str", lambda v: isinstance(v, str) and len(v) <= 64),
    "device": ("a str", lambda v: isinstance(v, str) and len(v) <= 32),
    "source": ("a str path", lambda v: isinstance(v, str) and 0 < len(v) <= MAX_PATH_CHARS),
    "indices": ("a list of ints", lambda v: isinstance(v, list) and len(v) <= MAX_TARGETS
                and all(_is_int(i) for i in v)),
    "seconds": ("a list of numbers", lambda v: isinstance(v, list) and len(v) <= MAX_TARGETS
                and all(_is_number(s) for s in v)),
    "start": ("an int or nil", lambda v: v is None or _is_int(v)),
    "stop": ("an int or nil", lambda v: v is None or _is_int(v)),
    "step": ("an int or nil", lambda v: v is None or _is_int(v)),
    "seek_mode": ("'exact' or 'approximate'", lambda v: v in ("exact", "approximate")),
    "dimension_order": ("'NCHW' or 'NHWC'", lambda v: v in ("NCHW", "NHWC")),
    "stream_index": ("an int or nil", lambda v: v is None or _is_int(v)),
    "output_dtype": ("'uint8', 'float32' or 'auto'", lambda v: isinstance(v, str) and v in OUTPUT_DTYPES),
    "transport": (f"one of {', '.join(TRANSPORTS)}", lambda v: v in TRANSPORTS),
    "release": ("a list of lease ids", lambda v: isinstance(v, list) and len(v) <= MAX_TARGETS
                and all(_is_int(i) for i in v)),
    "timeout": ("a number of seconds", lambda v: _is_number(v) and 0 < v < math.inf),
    "transforms": ("a list of {kind: 'Resize' or 'CenterCrop', size: [height, width]}",
                   lambda v: isinstance(v, list) and len(v) <= 16 and all(_is_transform(t) for t in v)),
}

TRANSFORM_KINDS = ("Resize", "CenterCrop")


def _is_transform(value: Any) -> bool:
    return (isinstance(value, dict) and set(value) == {"kind", "size"} and value["kind"] in TRANSFORM_KINDS
            and isinstance(value["size"], list) and len(value["size"]) == 2
            and all(_is_int(v) and 0 < v <= 1 << 15 for v in value["size"]))

# Fields each method takes, and which of them it requires.
FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "Challenge": (frozenset(), frozenset()),
    "Hello": (frozenset({"protocol", "pid", "nonce", "client_nonce", "proof"}), frozenset({"protocol"})),
    "Heartbeat": (frozenset({"session", "release"}), frozenset({"session"})),
    "Open": (frozenset({"session", "device", "source", "seek_mode", "stream_index"}),
             frozenset({"session", "source"})),
    "Decode": (frozenset({"session", "device", "source", "indices", "seconds", "start", "stop", "step",
                          "seek_mode", "dimension_order", "stream_index", "output_dtype", "transforms", "transport",
                          "timeout"}),
               frozenset({"session", "source", "transport"})),
    "Stats": (frozenset({"session"}), frozenset({"session"})),
    "Goodbye": (frozenset({"session"}), frozenset({"session"})),
}


def check_fields(method: str, message: Mapping[str, Any]) -> dict[str, Any]:
    """`message` checked against `method`'s fields: no unknown field, every
    required one present, each of its plain type.

    Raises:
        ProtocolError: naming the first bad field and what it must be.
    """
    allowed, required = FIELDS[method]
    unknown = sorted(set(message) - allowed)
    if unknown:
        raise ProtocolError(f"malformed {method} request: unknown field(s) {', '.join(map(repr, unknown))}; "
                            f"known: {', '.join(sorted(allowed)) or 'none'}")
    missing = sorted(required - set(message))
    if missing:
        raise ProtocolError(f"malformed {method} request: missing field(s) {', '.join(missing)}")
    for name, value in message.items():
        what, check = _CHECKS[name]
        if not check(value):
            shown = repr(value)
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            raise ProtocolError(f"malformed {method} request: {name} must be {what}, got {shown}")
    return dict(message)


# -- values that cross ----------------------------------------------------------------------------


def metadata_to_wire(metadata: Any) -> dict[str, Any]:
    """A `VideoStreamMetadata` as plain data (a Fraction becomes [num, den])."""
    import dataclasses

    wire = dataclasses.asdict(metadata)
    ratio = wire.get("pixel_aspect_ratio")
    if isinstance(ratio, Fraction):
        wire["pixel_aspect_ratio"] = [ratio.numerator, ratio.denominator]
    return wire


def metadata_from_wire(wire: Mapping[str, Any]) -> Any:
    import dataclasses

    from framefeed.engine.demux.metadata import VideoStreamMetadata

    names = {f.name for f in dataclasses.fields(VideoStreamMetadata)}
    values = {k: v for k, v in wire.items() if k in names}
    ratio = values.get("pixel_aspect_ratio")
    if isinstance(ratio, list) and len(ratio) == 2:
        values["pixel_aspect_ratio"] = Fraction(ratio[0], ratio[1])
    return VideoStreamMetadata(**values)


def transforms_to_wire(transforms: Any) -> list[dict[str, Any]]:
    """Decoder transforms (framefeed's or torchvision's) as plain data.

    Raises:
        ValueError: a transform the decoder refuses, or a `RandomCrop` (its
            window is drawn from the caller's RNG, which the server cannot
            reproduce; crop the returned frames instead).
    """
    from framefeed.transforms import CenterCrop, Resize, _as_decoder_transform

    wire = []
    for transform in transforms:
        converted = _as_decoder_transform(transform)
        if not isinstance(converted, (Resize, CenterCrop)):
            raise ValueError(f"{converted!r} is not supported through framefeed serve (the server cannot draw "
                             "the window from this process's RNG): use Resize or CenterCrop, or crop the frames")
        wire.append({"kind": type(converted).__name__, "size": [int(v) for v in converted.size]})
    return wire


def transforms_from_wire(wire: list[dict[str, Any]]) -> list[Any]:
    from framefeed.transforms import CenterCrop, Resize

    kinds = {"Resize": Resize, "CenterCrop": CenterCrop}
    return [kinds[item["kind"]](tuple(item["size"])) for item in wire]


# -- addresses ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Address:
    """Where a server listens: a Unix socket path or a TCP host and port."""

    path: str | None = None
    host: str | None = None
    port: int | None = None

    @property
    def target(self) -> str:
        """The gRPC target string."""
        if self.path is not None:
            return f"unix:{self.path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"unix://{self.path}" if self.path is not None else self.target


def parse_address(text: str | os.PathLike[str]) -> Address:
    """`unix:///path`, `unix:/path`, a socket path, or `host:port`.

    Raises:
        ValueError: none of these.
    """
    text = os.fspath(text)
    if text.startswith("unix://"):
        return Address(path=text[len("unix://"):])
    if text.startswith("unix:"):
        return Address(path=text[len("unix:"):])
    if "/" in text:
        return Address(path=text)
    host, sep, port = text.rpartition(":")
    if sep and port.isdigit() and host:
        return Address(host=host.strip("[]"), port=int(port))
    raise ValueError(f"Invalid server address {text!r}: use unix:///path/to/socket, a socket path, or host:port")


def default_socket_path() -> str:
    """`$FRAMEFEED_SOCKET`, else `/tmp/framefeed-<uid>/serve.sock` (its folder is owner-only)."""
    return os.environ.get("FRAMEFEED_SOCKET") or os.path.join(f"/tmp/framefeed-{os.geteuid()}", "serve.sock")


def default_token_file() -> str:
    """`$FRAMEFEED_TOKEN_FILE`, else `serve.token` beside the default socket
    (`/tmp/framefeed-<uid>/serve.token`): the TCP secret of this user's server."""
    return os.environ.get("FRAMEFEED_TOKEN_FILE") or os.path.join(f"/tmp/framefeed-{os.geteuid()}", "serve.token")


def auth_socket_path(socket_path: str) -> str:
    """The authentication socket beside a server's gRPC socket."""
    return socket_path + ".auth"
