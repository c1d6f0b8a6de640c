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

Ownership: a server holds an exclusive `flock` on each of its slab files
for as long as it runs; the kernel drops it when the server exits, however
it exits. At startup a server removes this user's slabs that nobody holds
locked (left by servers that were SIGKILLed). A lock, unlike a PID test,
means the same in every PID namespace: a server in a container never takes
a live host server's slab for a dead one. A slab appears in `/dev/shm`
already locked and sized (made unnamed with O_TMPFILE, then linked in).

Clients map a slab privately from a read-only descriptor (copy-on-write):
they read the server's frames without a copy, may even write into their
own batches, but never change the slab that other clients' frames lie in.
When a slot returns, the client drops whatever private copies its writes
made of those pages (`discard`), so the slot's next frames show through.
Names are `framefeed-serve-<pid>-<tag>-<random>`. The pid decides nothing
on its own: it only keeps an unlocked slab whose pid runs in this PID
namespace (a server of an older framefeed, which took no lock). `ShmProbe` lets a client check that it sees
the server's `/dev/shm` (same host, same IPC namespace) before choosing
this transport.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import secrets
import stat
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

SHM_DIR = "/dev/shm"
PREFIX = "framefeed-serve-"


def _create(name: str, size: int) -> tuple[int, mmap.mmap]:
    """A locked, fully reserved slab file named `name`: (its descriptor,
    which holds the lock while open, and its mapping)."""
    path = os.path.join(SHM_DIR, name)
    linked = False
    try:
        fd = os.open(SHM_DIR, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except (OSError, AttributeError):  # no O_TMPFILE here: create it named and lock it at once (a
        # cleanup that wins the lock in between makes this start fail loudly, never a live slab vanish)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        linked = True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as error:
            free = _free_bytes()
            raise MemoryError(
                f"cannot reserve {_size_text(size)} of shared memory in {SHM_DIR} ({error.strerror}; "
                f"{_size_text(free)} free): give a smaller --memory-budget, or in a container "
                "run with --ipc=host or a larger --shm-size"
            ) from None
        if not linked:  # appears under its name locked and sized
            folder = os.open(SHM_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:  # a dir_fd makes os.link call linkat(..., AT_SYMLINK_FOLLOW), which follows /proc's link
                os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=folder, follow_symlinks=True)
            finally:
                os.close(folder)
            linked = True
        return fd, mmap.mmap(fd, size)
    except BaseException:
        if linked:
            _unlink(name)
        os.close(fd)
        raise


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
    """Unlink this user's slabs that no live server holds locked; their names."""
    removed = []
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return removed
    for name in names:
        if name.startswith(PREFIX) and _remove_if_stale(name):
            removed.append(name)
    return removed


def _remove_if_stale(name: str) -> bool:
    path = os.path.join(SHM_DIR, name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # EWOULDBLOCK: a live server holds it
            return False
        if _named_pid_alive(name):
            # Unlocked, yet its server's pid runs here: a server of an older framefeed that
            # took no lock. Only ever a reason to keep a slab, never to remove one.
            return False
        try:
            now = os.stat(path, follow_symlinks=False)
        except OSError:
            return False
        if (now.st_dev, now.st_ino) != (info.st_dev, info.st_ino):
            return False  # replaced meanwhile: not the file we found unlocked
        _unlink(name)
        return True
    finally:
        os.close(fd)


def _named_pid_alive(name: str) -> bool:
    pid_text = name[len(PREFIX):].split("-", 1)[0]
    if not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except OSError:
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
        self._fd, self._map = _create(self.name, size)
        self.tensor = torch.frombuffer(self._map, dtype=torch.uint8)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "size": self.size}

    def view(self, offset: int, nbytes: int) -> torch.Tensor:
        return self.tensor[offset:offset + nbytes]

    def close(self) -> None:
        """Remove the file and give up its lock; mappings (ours, the clients')
        stay valid until dropped."""
        _unlink(self.name)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class ShmProbe:
    """A tiny slab holding a random token: a client that reads the token back
    shares the server's `/dev/shm`."""

    def __init__(self) -> None:
        self.name = new_name("probe")
        self.token = secrets.token_bytes(16)
        self._fd, mapping = _create(self.name, mmap.PAGESIZE)
        mapping[:len(self.token)] = self.token
        mapping.close()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "token": self.token}

    def close(self) -> None:
        _unlink(self.name)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


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
    """Client side: a server's slab mapped privately into this process (see
    the module docstring).

    Raises (constructor):
        OSError: the slab cannot be opened or mapped.
        PermissionError: the file is not a regular file of `owner` (when given).
        ValueError: not a server slab name.
    """

    def __init__(self, name: str, owner: int | None = None) -> None:
        if not _valid_name(name):
            raise ValueError(f"not a framefeed slab name: {name!r}")
        fd = os.open(os.path.join(SHM_DIR, name), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or (owner is not None and info.st_uid not in (owner, 0)):
                raise PermissionError(f"{SHM_DIR}/{name} is not a slab of the server's uid {owner}")
            self._map = mmap.mmap(fd, info.st_size, access=mmap.ACCESS_COPY)
        finally:
            os.close(fd)
        self.name = name
        self.size = len(self._map)

    def lease_tensor(self, offset: int, nbytes: int, shape: list[int], strides: list[int],
                     on_free: Callable[[], None], dtype: torch.dtype = torch.uint8,
                     ) -> tuple[torch.Tensor, weakref.finalize]:
        """The slot as a tensor of `dtype` (uint8 or float32) and `shape`/`strides`
        (in elements), and the finalizer that, once no tensor uses the slot (or
        when called, to release early), drops this process's private copies of
        its pages and runs `on_free`.

        Raises:
            ValueError: the slot lies outside the slab.
        """
        if not (0 <= offset and nbytes >= 0 and offset + nbytes <= self.size):
            raise ValueError(f"slot [{offset}, {offset + nbytes}) outside the slab of {self.size} bytes")
        # One array per slot: the tensor's storage keeps it alive, so its
        # finalizer runs when the last view of the frames is gone.
        array = np.frombuffer(self._map, dtype=np.uint8, count=nbytes, offset=offset)
        finalizer = weakref.finalize(array, self._returned, offset, nbytes, on_free)
        return torch.from_numpy(array).view(dtype).as_strided(shape, strides), finalizer

    def _returned(self, offset: int, nbytes: int, on_free: Callable[[], None]) -> None:
        try:
            self.discard(offset, nbytes)
        finally:
            on_free()

    def discard(self, offset: int, nbytes: int) -> None:
        """Drop private copies of the pages of `[offset, offset + nbytes)`
        (made by writes into a batch): they show the slab again."""
        page = mmap.PAGESIZE
        start = offset - offset % page
        end = min(-(-(offset + nbytes) // page) * page, self.size)
        if end > start:
            with contextlib.suppress(ValueError, OSError):  # the mapping is closed: nothing to drop
                self._map.madvise(mmap.MADV_DONTNEED, start, end - start)
