"""Who may talk to a server: every client says hello before anything else,
and the hello proves who it is.

- **Unix socket**: gRPC does not tell a server who is on the other end of a
  Unix socket, so the hello goes over a second, plain socket beside it
  (`<socket>.auth`). There the kernel does tell (SO_PEERCRED: the client's
  pid, uid and gid; SO_PEERGROUPS: its supplementary groups), and the
  server admits the uids and gids of its `AccessPolicy` (its own uid by
  default). The reply carries the session token every later gRPC call must
  name. The client likewise learns from the kernel which uid the server
  runs as. The connection stays open for the session's lifetime: when the
  client process ends, killed or not, the kernel closes it and the server
  returns the session's slots at once.
- **TCP**: a shared secret (a token file only the allowed users can read).
  The client proves it knows the secret without sending it, and so does the
  server (`proof`): a challenge (`Challenge`, a server nonce), then
  `Hello` carries HMAC-SHA256(secret, "client", server nonce, client nonce)
  and the reply HMAC-SHA256(secret, "server", ...). A process listening on
  the port in the server's place learns nothing it can reuse.

Frames on the authentication socket: a 4-byte big-endian length, then a
msgpack map; one hello and one reply per connection.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import os
import secrets
import socket
import stat
import struct
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass

MAX_HELLO_BYTES = 64 << 10
HELLO_SECONDS = 5.0  # a peer that does not finish its hello in this time is dropped
_LENGTH = struct.Struct(">I")
_SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux >= 4.13
_TOKEN_MIN_BYTES = 16


@dataclass(frozen=True)
class Peer:
    """Who a session belongs to: from the kernel on a Unix socket (`kind`
    "unix"), unknown beyond "holds the token" on TCP (`kind` "tcp", ids -1)."""

    kind: str
    pid: int = -1
    uid: int = -1
    gid: int = -1
    groups: tuple[int, ...] = ()

    def describe(self) -> str:
        if self.kind == "unix":
            return f"pid {self.pid} (uid {self.uid})"
        return f"pid {self.pid} (TCP)"


def peer_of(sock: socket.socket) -> Peer:
    """The process at the other end of a connected Unix socket, as the
    kernel recorded it at connect time.

    Raises:
        OSError: not a Unix socket, or the kernel has no credentials for it.
    """
    pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    if pid <= 0 and uid == -1:
        raise OSError("the kernel gave no credentials for this connection")
    groups: tuple[int, ...] = ()
    if sys.platform.startswith("linux"):
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, _SO_PEERGROUPS, 4 * 256)
            groups = struct.unpack(f"{len(raw) // 4}I", raw[:len(raw) // 4 * 4])
        except OSError:  # older kernels: the effective gid only
            groups = ()
    return Peer("unix", pid, uid, gid, tuple(groups))


@dataclass(frozen=True)
class AccessPolicy:
    """The uids and gids whose processes may use the server (on its Unix
    socket). A peer is admitted when its uid is listed, or its effective or
    a supplementary gid is."""

    uids: frozenset[int]
    gids: frozenset[int] = frozenset()

    @classmethod
    def of(cls, uids: Iterable[int] | None, gids: Iterable[int] | None) -> AccessPolicy:
        """The server's own uid, plus those given."""
        return cls(frozenset({os.geteuid(), *(uids or ())}), frozenset(gids or ()))

    @property
    def shared(self) -> bool:
        """Whether processes of other users may connect (the socket must then be reachable by them)."""
        return bool(self.gids) or self.uids != {os.geteuid()}

    def admits(self, peer: Peer) -> bool:
        if peer.kind != "unix":
            return False
        return peer.uid in self.uids or peer.gid in self.gids or bool(self.gids.intersection(peer.groups))

    def describe(self) -> str:
        text = "uid " + ", ".join(str(u) for u in sorted(self.uids))
        if self.gids:
            text += "; gid " + ", ".join(str(g) for g in sorted(self.gids))
        return text


# -- the TCP secret ---------------------------------------------------------------------------


def load_or_create_token(path: str) -> bytes:
    """The server's TCP secret from `path`, created (0600, random) if missing.

    An existing file must be a regular file of this user that others cannot
    read or write (group read is allowed: give the group the secret to let
    its members in), holding at least 16 bytes; its folder is checked like
    a socket folder (`_folders`).

    Raises:
        PermissionError: the file or its folder could be read or changed by others.
        ValueError: the file holds too short a secret.
    """
    from framefeed.serve._folders import UntrustedFolderError, open_trusted_parent

    owner = os.geteuid()
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        from framefeed.serve._folders import prepare_socket_folder

        prepare_socket_folder(folder, shared=False)
    parent = open_trusted_parent(folder, owner)
    try:
        folder_fd = os.open(os.path.basename(folder), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                            dir_fd=parent)
    finally:
        os.close(parent)
    try:
        info = os.fstat(folder_fd)
        if info.st_uid not in (owner, 0) or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise UntrustedFolderError(f"the token file's folder {folder} may be changed by other users "
                                       f"(owner uid {info.st_uid}, mode {oct(stat.S_IMODE(info.st_mode))})")
        name = os.path.basename(path)
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            fd = os.open(name, flags, dir_fd=folder_fd)
        except FileNotFoundError:
            fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=folder_fd)
            os.write(fd, secrets.token_hex(32).encode() + b"\n")
            os.lseek(fd, 0, os.SEEK_SET)
    finally:
        os.close(folder_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != owner:
            raise PermissionError(f"the token file {path} is not a regular file of uid {owner}")
        if info.st_mode & (stat.S_IRWXO | stat.S_IWGRP | stat.S_IXGRP):
            raise PermissionError(f"the token file {path} (mode {oct(stat.S_IMODE(info.st_mode))}) may be read "
                                  f"or changed by other users: run `chmod 600 {path}` (or 640 to share it with "
                                  "its group)")
        token = os.read(fd, 4096).strip()
    finally:
        os.close(fd)
    if len(token) < _TOKEN_MIN_BYTES:
        raise ValueError(f"the token file {path} holds {len(token)} bytes: a secret needs at least {_TOKEN_MIN_BYTES}")
    return token


def read_token(path: str, owner: int) -> bytes:
    """A client's copy of the secret, from a file that `owner` (the user the
    server runs as) or root owns and nobody else may change, in a folder
    nobody else may change: a secret planted by someone else would make the
    client trust whoever planted it.

    Raises:
        FileNotFoundError: no such file.
        PermissionError: the file cannot be read, or someone else could have written it.
        ValueError: it holds too short a secret.
    """
    from framefeed.serve._folders import UntrustedFolderError, open_trusted_parent

    folder = os.path.dirname(os.path.abspath(path))
    parent = open_trusted_parent(folder, owner)
    try:
        folder_fd = os.open(os.path.basename(folder), getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY
                            | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    finally:
        os.close(parent)
    try:
        info = os.fstat(folder_fd)
        if info.st_uid not in (owner, 0) or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise UntrustedFolderError(f"the token file's folder {folder} may be changed by users other than uid "
                                       f"{owner}: refusing to trust a secret from it")
        fd = os.open(os.path.basename(path), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                     dir_fd=folder_fd)
    finally:
        os.close(folder_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid not in (owner, 0) \
                or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise PermissionError(f"the token file {path} is not a regular file of uid {owner} that only it may "
                                  "write: refusing to trust its secret (pass server_uid= if another user runs "
                                  "the server)")
        token = os.read(fd, 4096).strip()
    finally:
        os.close(fd)
    if len(token) < _TOKEN_MIN_BYTES:
        raise ValueError(f"the token file {path} holds {len(token)} bytes: a secret needs at least {_TOKEN_MIN_BYTES}")
    return token


def proof(token: bytes, role: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    """HMAC-SHA256 of the nonces under the secret, for `role` b"client" or b"server"."""
    return hmac.new(token, b"framefeed-serve\0" + role + b"\0" + server_nonce + client_nonce, hashlib.sha256).digest()


class Challenges:
    """Server nonces handed out by `Challenge`, each good for one `Hello`
    within `lifetime` seconds; at most `capacity` outstanding (the oldest
    are forgotten first), so unanswered challenges cost bounded memory."""

    def __init__(self, capacity: int = 1024, lifetime: float = 30.0) -> None:
        self._issued: collections.OrderedDict[bytes, float] = collections.OrderedDict()
        self._capacity = capacity
        self._lifetime = lifetime

    def issue(self) -> bytes:
        nonce = secrets.token_bytes(32)
        self._issued[nonce] = time.monotonic() + self._lifetime
        while len(self._issued) > self._capacity:
            self._issued.popitem(last=False)
        return nonce

    def redeem(self, nonce: bytes) -> bool:
        deadline = self._issued.pop(nonce, None)
        return deadline is not None and time.monotonic() <= deadline


# -- framing on the authentication socket ----------------------------------------------------


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    """One frame's body.

    Raises:
        ValueError: a frame longer than `MAX_HELLO_BYTES`.
        asyncio.IncompleteReadError: the peer closed first.
    """
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    if length > MAX_HELLO_BYTES:
        raise ValueError(f"a hello of {length} bytes (at most {MAX_HELLO_BYTES})")
    return await reader.readexactly(length)


def frame(body: bytes) -> bytes:
    return _LENGTH.pack(len(body)) + body


def hello_over_unix(path: str, body: bytes, timeout: float) -> tuple[bytes, socket.socket, Peer]:
    """Client side: send a hello on the authentication socket `path`; (the
    reply's body, the connected socket (keep it open for the session), the
    server's credentials as the kernel gives them).

    Raises:
        OSError: cannot connect, or the server closed without a reply.
        TimeoutError: no reply within `timeout`.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        server = peer_of(sock)
        sock.sendall(frame(body))
        header = _receive(sock, _LENGTH.size)
        (length,) = _LENGTH.unpack(header)
        if length > MAX_HELLO_BYTES * 16:
            raise OSError(f"the server's hello reply claims {length} bytes")
        reply = _receive(sock, length)
        sock.settimeout(None)
        return reply, sock, server
    except BaseException:
        sock.close()
        raise


def _receive(sock: socket.socket, count: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < count:
        chunk = sock.recv(count - len(chunks))
        if not chunk:
            raise ConnectionResetError("the server closed the authentication socket without a reply")
        chunks += chunk
    return bytes(chunks)
