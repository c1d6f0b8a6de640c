"""Which files a client may have the server read: only regular files under an
`--allow-root`.

The path is resolved first (symlinks followed, `..` collapsed, by
`os.path.realpath`), then opened, and the file actually opened is checked
again through `/proc/self/fd`, so a symlink swapped in between the check and
the open cannot lead outside a root. The decoder then reads the open file
through `/proc/self/fd/N`, under the client's path as its name in every
message (`VideoSource.description`); the descriptor closes when the request
is done. Only absolute paths are taken: the client and the server may not
share a working directory. Bytes, URLs and file objects never reach the
server (the protocol carries a path string only).

Messages name the client's path only, never what it resolves to: a symlink
must not tell a client what lies outside the roots.

Hard links: a hard link is a file, not a pointer to one, so a hard link
under a root to a file outside it is served like any file under the root.
Whoever can make links under a root decides what it holds; with
`refuse_hard_links` files with more than one link are refused.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass
class OpenedFile:
    """A file under an allowed root, held open by descriptor.

    `source` is what to hand the decoder (`/proc/self/fd/N`); `requested` is
    the client's path, for messages; `real_path` what it resolved to (for
    the server's own use only, never for messages); `size` in bytes.
    """

    fd: int
    requested: str
    real_path: str
    size: int = 0
    source: str = ""

    def __post_init__(self) -> None:
        self.source = self.source or f"/proc/self/fd/{self.fd}"

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class AllowedRoots:
    """The folders whose files clients may read.

    Raises (constructor):
        ValueError: no root, or a root that is not an existing directory.
    """

    def __init__(self, roots: Iterable[str | os.PathLike[str]], *, refuse_hard_links: bool = False) -> None:
        self.refuse_hard_links = refuse_hard_links
        resolved = []
        for root in roots:
            real = os.path.realpath(os.fspath(root))
            if not os.path.isdir(real):
                raise ValueError(f"--allow-root {os.fspath(root)!r} is not an existing directory")
            resolved.append(real)
        if not resolved:
            raise ValueError("give at least one --allow-root DIR: the server reads only files under one")
        self.roots: tuple[str, ...] = tuple(dict.fromkeys(resolved))

    def _inside(self, real: str) -> bool:
        return any(real == root or real.startswith(root.rstrip("/") + "/") for root in self.roots)

    def open(self, path: str) -> OpenedFile:
        """Open `path` for reading if it resolves to a regular file under a root.

        Raises (messages name `path` as given, never what it resolves to):
            PermissionError: relative, outside every root (after resolving
                symlinks and `..`), not a regular file, or (with
                `refuse_hard_links`) a file with other hard links.
            VideoFileNotFoundError: under a root but missing, as `VideoDecoder` says it.
            IsADirectoryError: a folder, as `VideoDecoder` says it.
        """
        from framefeed.errors import VideoFileNotFoundError

        if "\x00" in path or not os.path.isabs(path):
            raise PermissionError(f"the server reads absolute paths only, got {path!r}")
        real = os.path.realpath(path)
        if not self._inside(real):
            raise PermissionError(f"{path!r} is outside the server's --allow-root ({', '.join(self.roots)}), "
                                  "symlinks and '..' resolved")
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            raise VideoFileNotFoundError(2, "Could not open input file: video file not found", path) from None
        except OSError as error:  # ELOOP: a symlink swapped in after resolving
            raise PermissionError(f"cannot open {path!r}: {error.strerror}") from None
        try:
            opened = os.readlink(f"/proc/self/fd/{fd}")
            if not self._inside(opened):
                raise PermissionError(f"{path!r} is outside the server's --allow-root ({', '.join(self.roots)}), "
                                      "symlinks and '..' resolved")
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                raise IsADirectoryError(21, "Expected a video file, got a directory", path)
            if not stat.S_ISREG(info.st_mode):
                raise PermissionError(f"{path!r} is not a regular file")
            if self.refuse_hard_links and info.st_nlink > 1:
                raise PermissionError(f"{path!r} has {info.st_nlink - 1} other hard link(s); this server refuses "
                                      "such files (--refuse-hard-links)")
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return OpenedFile(fd, path, opened, info.st_size)
