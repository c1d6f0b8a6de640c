"""Which files `read_clips` reads: what the user named, expanded into video
files with their sizes, and how a read task opens one.

A source entry is a local path, a directory (every video file below it), a
glob pattern (`*`, `?`, `[...]`, and `**` for any number of directories),
or a URI that `pyarrow.fs` opens (`s3://bucket/videos/`, `gs://...`,
`file:///...`), each of which may again be a file, directory or pattern.
Listing happens once, on the driver; sizes come from the listing's metadata
(no file is opened), so read tasks can be balanced before anything is read.

Plain local paths are opened by FFmpeg itself in the read task (they must
exist on every node: a shared file system). Everything reached through
`pyarrow.fs` is read into memory when it is at most `WHOLE_FILE_LIMIT`
bytes (one request instead of many small ranged reads), else handed to
framefeed as a seekable file object.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# What a directory or `**` pattern picks up when no `file_extensions` are given.
VIDEO_EXTENSIONS = ("mp4", "m4v", "mov", "mkv", "webm", "avi", "ts", "mts", "m2ts", "mpg", "mpeg", "flv", "3gp")
# Files reached through pyarrow.fs up to this size are read whole into memory.
WHOLE_FILE_LIMIT = 1 << 30

_GLOB_CHARS = re.compile(r"[*?\[]")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class VideoFile:
    """One file to read.

    Attributes:
        path: the local path, or the path inside `filesystem`.
        size: bytes, from the listing (-1 when unknown).
        entry: the position of the source entry it came from (for its label).
        filesystem: the `pyarrow.fs.FileSystem` to open it with; None for a
            local path FFmpeg opens directly.
        name: how rows and messages name it (the path or URI as given, expanded).
    """

    path: str
    size: int
    entry: int
    filesystem: Any = None
    name: str = ""

    def open(self) -> Any:
        """What framefeed opens: the local path, the file's bytes, or a seekable
        file object (close it with `close_opened`)."""
        if self.filesystem is None:
            return self.path
        handle = self.filesystem.open_input_file(self.path)
        if 0 <= self.size <= WHOLE_FILE_LIMIT:
            try:
                return handle.read()
            finally:
                handle.close()
        return handle


def close_opened(opened: Any) -> None:
    close = getattr(opened, "close", None)
    if callable(close) and not isinstance(opened, (str, bytes)):
        close()


def expand_sources(sources: Any, filesystem: Any = None,
                   file_extensions: tuple[str, ...] | None = VIDEO_EXTENSIONS,
                   on_missing: Callable[[str, FileNotFoundError], None] | None = None) -> list[VideoFile]:
    """Every video file the source entries name, entry after entry; files of
    one directory or pattern in sorted order.

    `filesystem`: a `pyarrow.fs.FileSystem` every entry is a path in (then
    entries are not URIs). `file_extensions`: what directories and patterns
    keep (case-insensitive, without the dot); None keeps every file. A file
    named directly is kept whatever its extension. `on_missing(entry,
    error)`: called instead of raising for an entry that names nothing (the
    entry is then left out).

    Raises:
        TypeError: `sources` is not a path, URI or sequence of them.
        FileNotFoundError: an entry names nothing, or a directory or pattern
            matches no file (the message names it), without `on_missing`.
    """
    entries = _entries(sources)
    keep = None if file_extensions is None else tuple(e.lower().lstrip(".") for e in file_extensions)
    files: list[VideoFile] = []
    for position, entry in enumerate(entries):
        try:
            found = _expand_entry(entry, position, filesystem, keep)
            if not found:
                what = "a directory" if not _GLOB_CHARS.search(entry) else "a pattern"
                kinds = ", ".join(keep) if keep else "any"
                raise FileNotFoundError(f"No video files found for {entry!r} ({what} holding no file with "
                                        f"extension {kinds}; set file_extensions to read others)")
        except FileNotFoundError as error:
            if on_missing is None:
                raise
            on_missing(entry, error)
            continue
        files.extend(found)
    return files


def _entries(sources: Any) -> list[str]:
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    if isinstance(sources, (bytes, bytearray)) or not hasattr(sources, "__iter__"):
        raise TypeError(f"sources must be a path, URI or directory (or a list of them), got {type(sources).__name__}")
    entries = []
    for source in sources:
        if not isinstance(source, (str, os.PathLike)):
            raise TypeError(f"each source must be a str or os.PathLike path or URI, got {type(source).__name__}: "
                            f"{source!r}")
        entries.append(os.fspath(source))
    if not entries:
        raise ValueError("sources is empty: give at least one path, directory, pattern or URI")
    return entries


def _expand_entry(entry: str, position: int, filesystem: Any, keep: tuple[str, ...] | None) -> list[VideoFile]:
    if filesystem is None and not _URI.match(entry):
        return _expand_local(entry, position, keep)
    if filesystem is None:
        filesystem, path = _resolve_uri(entry)
        prefix = entry[: entry.index("://") + 3]
    else:
        path, prefix = entry, ""
    return _expand_arrow(filesystem, path, prefix, position, keep)


def _resolve_uri(uri: str) -> tuple[Any, str]:
    """(filesystem, path in it) for a URI that may hold glob characters
    (pyarrow resolves only the directory above the first of them)."""
    import pyarrow.fs as pafs

    match = _GLOB_CHARS.search(uri)
    if match is None:
        return pafs.FileSystem.from_uri(uri)
    cut = uri.rfind("/", 0, match.start())
    filesystem, directory = pafs.FileSystem.from_uri(uri[:cut])
    return filesystem, directory.rstrip("/") + uri[cut:]


def _expand_local(entry: str, position: int, keep: tuple[str, ...] | None) -> list[VideoFile]:
    path = os.path.expanduser(entry)
    if _GLOB_CHARS.search(path):
        base = _glob_base(path)
        matcher = _compile_glob(os.path.abspath(path))
        candidates = [p for p in _walk_local(base) if matcher.match(os.path.abspath(p))]
        return [_local_file(p, position) for p in sorted(candidates) if _kept(p, keep)]
    if os.path.isdir(path):
        return [_local_file(p, position) for p in sorted(_walk_local(path)) if _kept(p, keep)]
    if not os.path.exists(path):
        raise FileNotFoundError(2, "Video file not found", entry)
    return [_local_file(path, position)]


def _local_file(path: str, position: int) -> VideoFile:
    return VideoFile(path, os.path.getsize(path), position, None, path)


def _walk_local(root: str) -> list[str]:
    """Every file below `root` ("" is the working directory: names stay relative)."""
    found = []
    for directory, _, names in os.walk(root or "."):
        found.extend(os.path.join(directory, name) for name in names)
    return found if root else [os.path.relpath(path) for path in found]


def _expand_arrow(filesystem: Any, path: str, prefix: str, position: int,
                  keep: tuple[str, ...] | None) -> list[VideoFile]:
    import pyarrow.fs as pafs

    def named(info: Any) -> VideoFile:
        return VideoFile(info.path, int(info.size if info.size is not None else -1), position, filesystem,
                         prefix + info.path)

    if _GLOB_CHARS.search(path):
        base = _glob_base(path)
        matcher = _compile_glob(path)
        infos = filesystem.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        return [named(i) for i in sorted(infos, key=lambda i: i.path)
                if i.type == pafs.FileType.File and matcher.match(i.path) and _kept(i.path, keep)]
    info = filesystem.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(2, "Video file not found", prefix + path)
    if info.type == pafs.FileType.Directory:
        infos = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
        return [named(i) for i in sorted(infos, key=lambda i: i.path)
                if i.type == pafs.FileType.File and _kept(i.path, keep)]
    return [named(info)]


def _kept(path: str, keep: tuple[str, ...] | None) -> bool:
    if keep is None:
        return True
    return path.rsplit(".", 1)[-1].lower() in keep if "." in os.path.basename(path) else False


def _glob_base(pattern: str) -> str:
    """The directory above the first component holding a glob character."""
    head = pattern[: _GLOB_CHARS.search(pattern).start()]  # type: ignore[union-attr]
    return head.rsplit("/", 1)[0] if "/" in head else ""


def _compile_glob(pattern: str) -> re.Pattern[str]:
    """A pattern over whole paths: `*`, `?` and `[...]` stay within one
    directory level; `**` spans any number of them (`a/**/b` matches `a/b`)."""
    parts: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            parts.append("(?:[^/]*/)*")
            i += 3
        elif pattern.startswith("**", i):
            parts.append(".*")
            i += 2
        elif pattern[i] == "*":
            parts.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            parts.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.find("]", i + 2)
            if end < 0:
                parts.append(re.escape("["))
                i += 1
            else:
                parts.append(fnmatch.translate(pattern[i:end + 1])[4:-3])  # the class alone
                i = end + 1
        else:
            parts.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(parts) + r"\Z")
