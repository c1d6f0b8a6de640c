"""Whose folder a server's socket (and token file) lives in.

A Unix socket is only as private as its folder: whoever may write the folder
may remove the server's socket and listen in its place, and whoever made
the folder decides who may write it. So:

- the server refuses a folder that belongs to another user (neither its
  own user nor root), or that anyone else may write, and creates a missing
  one itself, mode 0700 (0711 when other users are allowed in: they may
  pass through to the socket, not list or change the folder). A folder
  others may read or pass through but not write (0755, e.g. a root-owned
  `/run/framefeed` volume) is accepted: nobody can replace the socket in
  it, and the socket's own mode and the peer credentials keep them out;
- every folder above it must be owned by root or the server's user, and
  if others may write it, carry the sticky bit (like /tmp: nobody may then
  rename or remove what another user made there);
- a client checks the same before it connects: the socket's folder belongs
  to the user it expects the server to run as (itself by default, or root).

The checks open each folder with O_NOFOLLOW and look at what was opened
(`fstat`), so a symlink swapped in between two steps cannot redirect them.
"""

from __future__ import annotations

import contextlib
import os
import stat

_WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH
# O_PATH: a handle to check and walk through, needing no read permission (a 0711 folder).
_OPEN_DIRECTORY = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UntrustedFolderError(PermissionError):
    """A socket or token folder that another user could take over."""


def _mode(st: os.stat_result) -> str:
    return oct(stat.S_IMODE(st.st_mode))


def _check_ancestor(path: str, st: os.stat_result, owners: set[int]) -> None:
    if st.st_uid not in owners:
        raise UntrustedFolderError(
            f"{path} belongs to uid {st.st_uid}: the folders above a server's socket must belong to root or "
            f"uid {max(owners)} (another user could move the socket folder away)")
    if st.st_mode & _WRITABLE_BY_OTHERS and not st.st_mode & stat.S_ISVTX:
        raise UntrustedFolderError(
            f"{path} (mode {_mode(st)}) may be written by other users and has no sticky bit: they could "
            "replace the socket folder inside it; choose a folder under a private or sticky (/tmp-like) one")


def open_trusted_parent(folder: str, owner: int) -> int:
    """A descriptor of `folder`'s parent, after checking every folder from
    `/` down to it (see the module docstring). The caller closes it.

    Raises:
        UntrustedFolderError: a folder on the way that another user could change.
        OSError: a folder on the way is missing or is not a folder.
    """
    parent = os.path.dirname(os.path.abspath(folder))
    real = os.path.realpath(parent)  # a symlinked ancestor (/var/run -> /run) is judged where it leads
    owners = {0, owner}
    fd = os.open("/", _OPEN_DIRECTORY)
    try:
        _check_ancestor("/", os.fstat(fd), owners)
        walked = ""
        for name in [part for part in real.split("/") if part]:
            walked += "/" + name
            child = os.open(name, _OPEN_DIRECTORY, dir_fd=fd)  # ELOOP if swapped for a symlink since
            os.close(fd)
            fd = child
            _check_ancestor(walked, os.fstat(fd), owners)
        return fd
    except BaseException:
        os.close(fd)
        raise


def prepare_socket_folder(folder: str, *, shared: bool) -> None:
    """Make sure nobody but the server's user (or root) can change `folder`:
    create it (0700, or 0711 when other users are allowed in), or check that
    it belongs to this process's user or root and nobody else may write it.

    Raises:
        UntrustedFolderError: it belongs to someone else, or others may write it.
        OSError: it cannot be created.
    """
    owner = os.geteuid()
    name = os.path.basename(os.path.abspath(folder))
    parent = open_trusted_parent(folder, owner)
    try:
        created = False
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=parent)
            created = True
        try:
            fd = os.open(name, _OPEN_DIRECTORY, dir_fd=parent)
        except OSError as error:
            raise UntrustedFolderError(f"the socket folder {folder} is not a folder (or is a symlink): "
                                       f"{error.strerror}; remove it or choose another --socket") from None
        try:
            st = os.fstat(fd)
            if created and st.st_uid == owner:  # through the handle: the folder just checked, not a name
                os.chmod(f"/proc/self/fd/{fd}", 0o711 if shared else 0o700)
                st = os.fstat(fd)
            check_socket_folder_stat(folder, st, owner)
        finally:
            os.close(fd)
    finally:
        os.close(parent)


def check_socket_folder_stat(folder: str, st: os.stat_result, owner: int) -> None:
    """Raise UntrustedFolderError unless `st` (the socket folder's) belongs
    to `owner` or root and nobody else may write it."""
    if st.st_uid not in (owner, 0):
        raise UntrustedFolderError(
            f"refusing the socket folder {folder}: it belongs to uid {st.st_uid}, not to this server's uid "
            f"{owner}. Another user may have made it to take the server's place; remove it or choose "
            "another --socket")
    if st.st_mode & _WRITABLE_BY_OTHERS:
        raise UntrustedFolderError(
            f"refusing the socket folder {folder}: mode {_mode(st)} lets other users replace the socket in it; "
            f"run `chmod go-w {folder}` or choose another --socket")


def check_client_side(socket_path: str, server_uid: int) -> None:
    """Before connecting: the socket's folder and the socket belong to
    `server_uid` (or root) and nobody else may write the folder, so whoever
    listens there is the server's user.

    Raises:
        UntrustedFolderError: they belong to another user, or others may write the folder.
        OSError: the folder is missing or not a folder.
    """
    folder = os.path.dirname(os.path.abspath(socket_path))
    parent = open_trusted_parent(folder, server_uid)
    try:
        fd = os.open(os.path.basename(folder), _OPEN_DIRECTORY, dir_fd=parent)
    finally:
        os.close(parent)
    try:
        st = os.fstat(fd)
        if st.st_uid not in (server_uid, 0):
            raise UntrustedFolderError(
                f"the server's socket folder {folder} belongs to uid {st.st_uid}, not to uid {server_uid} the "
                "server should run as: another user may be impersonating the server. Pass server_uid= if "
                "you trust that user")
        if st.st_mode & _WRITABLE_BY_OTHERS:
            raise UntrustedFolderError(
                f"the server's socket folder {folder} (mode {_mode(st)}) may be written by other users, who "
                "could replace the socket: refusing to connect")
        with contextlib.suppress(FileNotFoundError):  # missing: the connection attempt says so
            sock = os.stat(os.path.basename(socket_path), dir_fd=fd, follow_symlinks=False)
            if not stat.S_ISSOCK(sock.st_mode) or sock.st_uid not in (server_uid, 0):
                raise UntrustedFolderError(
                    f"{socket_path} is not a socket of uid {server_uid} (owner uid {sock.st_uid}): refusing "
                    "to connect")
    finally:
        os.close(fd)
