"""Host frames through shared memory: a slab in `/dev/shm`, mapped by both sides.

The server creates one file per slab (owner-only, mode 0600), reserves its
pages at once with `posix_fallocate` (a full `/dev/shm` then fails at
startup with a clear message instead of killing the server with SIGBUS on
a later write) and maps it. It writes each request's frames into a slot and
tells the client the slab's name, the slot's offset, and the frames' shape
and strides. The client maps the slab once and views each slot as a tensor
without copying; the slot returns to the server when that tensor's storage
is freed (a finalizer on the per-slot numpy array the storage holds) or on
`batch.release()`.

Names are `framefeed-serve-<pid>-<random>`; a server removes the slabs of
dead servers of the same user at startup (a SIGKILLed server cannot unlink
its own). `ShmProbe` lets a client check that it sees the server's
`/dev/shm` (same host, same IPC namespace) before choosing this transport.
"""

from __future__ import annotations

import mmap
import os
import secrets
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

SHM_DIR = "/dev/shm"
PREFIX = "framefeed-serve-"


def _create(name: str, size: int) -> mmap.mmap:
    path = os.path.join(SHM_DIR, name)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as error:
            free = _free_bytes()
            raise MemoryError(
                f"cannot reserve {_size_text(size)} of shared memory in {SHM_DIR} ({error.strerror}; "
                f"{_size_text(free)} free): give a smaller --memory-budget, or in a container "
                "run with --ipc=host or a larger --shm-size"
            ) from None
        return mmap.mmap(fd, size)
    except BaseException:
        os.unlink(path)
        raise
    finally:
        os.close(fd)


def _free_bytes() -> int:
    try:
        info = os.statvfs(SHM_DIR)
        return info.f_bavail * info.f_frsize
    except OSError:
        return 0


def _size_text(nbytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} B"


def _unlink(name: str) -> None:
    try:
        os.unlink(os.path.join(SHM_DIR, name))
    except FileNotFoundError:
        pass


def remove_stale_segments() -> list[str]:
    """Unlink this user's slabs left by servers that no longer run; their names."""
    removed = []
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(PREFIX):
            continue
        pid_text = name[len(PREFIX):].split("-", 1)[0]
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        try:
            if os.stat(os.path.join(SHM_DIR, name), follow_symlinks=False).st_uid == os.getuid():
                _unlink(name)
                removed.append(name)
        except OSError:
            continue
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def new_name(tag: str) -> str:
    return f"{PREFIX}{os.getpid()}-{tag}-{secrets.token_hex(6)}"


class HostSlab:
    """Server side: a shared-memory slab of `size` bytes (see the module docstring).

    Raises (constructor):
        MemoryError: `/dev/shm` cannot hold `size` bytes.
    """

    kind = "shm"

    def __init__(self, size: int, tag: str) -> None:
        self.size = size
        self.name = new_name(tag)
        self._map = _create(self.name, size)
        self.tensor = torch.frombuffer(self._map, dtype=torch.uint8)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "size": self.size}

    def view(self, offset: int, nbytes: int) -> torch.Tensor:
        return self.tensor[offset:offset + nbytes]

    def close(self) -> None:
        """Remove the file; mappings (ours, the clients') stay valid until dropped."""
        _unlink(self.name)


class ShmProbe:
    """A tiny slab holding a random token: a client that reads the token back
    shares the server's `/dev/shm`."""

    def __init__(self) -> None:
        self.name = new_name("probe")
        self.token = secrets.token_bytes(16)
        mapping = _create(self.name, mmap.PAGESIZE)
        mapping[:len(self.token)] = self.token
        mapping.close()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "token": self.token}

    def close(self) -> None:
        _unlink(self.name)


def _valid_name(name: Any) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX) and "/" not in name and len(name) < 200


def probe_matches(probe: Any) -> bool:
    """Whether this process sees the server's probe (client side)."""
    if not isinstance(probe, dict) or not _valid_name(probe.get("name")):
        return False
    token = probe.get("token")
    try:
        with open(os.path.join(SHM_DIR, probe["name"]), "rb") as file:
            return isinstance(token, bytes) and file.read(len(token)) == token
    except OSError:
        return False


class HostSlabView:
    """Client side: a server's slab mapped into this process.

    Raises (constructor):
        OSError: the slab cannot be opened or mapped.
        ValueError: not a server slab name.
    """

    def __init__(self, name: str) -> None:
        if not _valid_name(name):
            raise ValueError(f"not a framefeed slab name: {name!r}")
        fd = os.open(os.path.join(SHM_DIR, name), os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            self._map = mmap.mmap(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        self.name = name
        self.size = len(self._map)

    def lease_tensor(self, offset: int, nbytes: int, shape: list[int], strides: list[int],
                     on_free: Callable[[], None], dtype: torch.dtype = torch.uint8,
                     ) -> tuple[torch.Tensor, weakref.finalize]:
        """The slot as a tensor of `dtype` (uint8 or float32) and `shape`/`strides`
        (in elements), and the finalizer that runs `on_free` once no tensor
        uses the slot (call it to release early).

        Raises:
            ValueError: the slot lies outside the slab.
        """
        if not (0 <= offset and nbytes >= 0 and offset + nbytes <= self.size):
            raise ValueError(f"slot [{offset}, {offset + nbytes}) outside the slab of {self.size} bytes")
        # One array per slot: the tensor's storage keeps it alive, so its
        # finalizer runs when the last view of the frames is gone.
        array = np.frombuffer(self._map, dtype=np.uint8, count=nbytes, offset=offset)
        finalizer = weakref.finalize(array, on_free)
        return torch.from_numpy(array).view(dtype).as_strided(shape, strides), finalizer
