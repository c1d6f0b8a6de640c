"""Video sources: turn what the user passed into something PyAV can open.

Supported kinds: a `str` path or URL, a `pathlib.Path`, `bytes`/`bytearray`/
`memoryview`, a contiguous uint8 CPU `torch.Tensor` of file bytes, and a binary
file-like object with `read(size)` and `seek(offset, whence)`.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch

from framefeed.errors import VideoFileNotFoundError

SUPPORTED_KINDS = (
    "str path or URL, pathlib.Path, bytes, a contiguous uint8 torch.Tensor of file bytes, "
    "or a binary file-like object with read() and seek()"
)

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class _MemoryReader(io.RawIOBase):
    """A seekable read-only stream over a buffer, without copying it."""

    def __init__(self, buffer: memoryview) -> None:
        super().__init__()
        # The memoryview keeps its exporter (bytes, or a tensor's numpy view) alive.
        self._buffer = buffer.cast("B") if buffer.format != "B" or buffer.ndim != 1 else buffer
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        view = memoryview(target).cast("B")
        chunk = self._buffer[self._pos : self._pos + len(view)]
        view[: len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)

    def read(self, size: int = -1) -> bytes:
        end = len(self._buffer) if size is None or size < 0 else min(self._pos + size, len(self._buffer))
        data = self._buffer[self._pos : end].tobytes()
        self._pos = max(self._pos, end)
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            self._pos = offset
        elif whence == io.SEEK_CUR:
            self._pos += offset
        elif whence == io.SEEK_END:
            self._pos = len(self._buffer) + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        self._pos = max(self._pos, 0)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def size(self) -> int:
        return len(self._buffer)


@dataclass
class VideoSource:
    """A resolved source.

    `description` names the source in error messages. `open_for_av()` returns
    what `av.open` takes; `open_reader()` a seekable binary reader for parsing
    container headers ourselves, or None where that is not possible (URLs).
    """

    kind: str
    description: str
    _target: Any
    _size: int | None = None

    def open_for_av(self) -> Any:
        if self.kind in ("path", "url"):
            return self._target
        if self.kind == "memory":
            return _MemoryReader(self._target)
        return _FileLikeGuard(self._target)

    def open_reader(self) -> BinaryIO | None:
        if self.kind == "path":
            return open(self._target, "rb")  # noqa: SIM115 - caller closes
        if self.kind == "memory":
            return _MemoryReader(self._target)  # type: ignore[return-value]
        if self.kind == "filelike":
            return _FileLikeGuard(self._target)  # type: ignore[return-value]
        return None

    @property
    def size(self) -> int | None:
        """Total size in bytes when it can be known without reading, else None."""
        return self._size


class _FileLikeGuard(io.RawIOBase):
    """Wraps a user's file object. Positions are absolute (the video starts at
    offset 0 of the object, whatever its current position), and `close()` is
    hidden so PyAV closing a container never closes the user's file."""

    def __init__(self, fileobj: Any) -> None:
        super().__init__()
        self._f = fileobj

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._f.read(size)

    def readinto(self, target: Any) -> int:
        data = self._f.read(len(memoryview(target)))
        memoryview(target).cast("B")[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        result = self._f.seek(offset, whence)
        return self._f.tell() if result is None else result

    def tell(self) -> int:
        # Only read/seek are required of the user's object: ask seek for the position.
        position = self._f.seek(0, io.SEEK_CUR)
        return self._f.tell() if position is None else position

    def close(self) -> None:  # the user owns the file
        pass


def resolve_source(source: Any) -> VideoSource:
    """Validate `source` and describe how to open it.

    Raises:
        TypeError: for unsupported kinds, text-mode files and tensors that are not uint8.
        ValueError: for tensors that are not contiguous, empty or not on the CPU.
        FileNotFoundError (`VideoFileNotFoundError`): for a local path that does not exist.
    """
    if isinstance(source, Path) or isinstance(source, str):
        text = str(source)
        if isinstance(source, str) and _URL.match(text) and not text.startswith("file://"):
            return VideoSource("url", repr(text), text)
        path = text[len("file://") :] if text.startswith("file://") else text
        if not os.path.exists(path):
            raise VideoFileNotFoundError(2, "Could not open input file: video file not found", path)
        if os.path.isdir(path):
            raise IsADirectoryError(21, "Expected a video file, got a directory", path)
        return VideoSource("path", repr(path), path, os.path.getsize(path))
    if isinstance(source, (bytes, bytearray, memoryview)):
        view = memoryview(source)
        if view.nbytes == 0:
            raise ValueError("Empty bytes: the source holds 0 bytes, expected the bytes of a video file")
        return VideoSource("memory", f"bytes ({view.nbytes} bytes)", view, view.nbytes)
    if isinstance(source, torch.Tensor):
        return _tensor_source(source)
    if isinstance(source, io.TextIOBase) or _is_text_file(source):
        raise TypeError(
            "source is for reading text, likely from open(..., 'r'). Try with 'rb' for binary reading? "
            f"The file object {source!r} is open in text mode; read() must return bytes"
        )
    if callable(getattr(source, "read", None)) and callable(getattr(source, "seek", None)):
        return VideoSource("filelike", f"file-like object {type(source).__name__}", source)
    raise TypeError(f"Unknown source type: {type(source)}. Supported types are a {SUPPORTED_KINDS}")


def _is_text_file(obj: Any) -> bool:
    mode = getattr(obj, "mode", None)
    return isinstance(mode, str) and "b" not in mode and callable(getattr(obj, "read", None))


class _TensorSourceTypeError(TypeError, RuntimeError):
    """A tensor source of another dtype than uint8 (torchcodec raises RuntimeError)."""


def _tensor_source(tensor: torch.Tensor) -> VideoSource:
    if tensor.dtype != torch.uint8:
        raise _TensorSourceTypeError(
            f"video_tensor must be kUInt8: a tensor source must have dtype torch.uint8 (the file's bytes), "
            f"got {tensor.dtype}"
        )
    if tensor.device.type != "cpu":
        raise ValueError(f"A tensor source must be on the CPU, got a tensor on {tensor.device}")
    if not tensor.is_contiguous():
        raise ValueError("A tensor source must be contiguous; call .contiguous() first")
    if tensor.numel() == 0:
        raise ValueError("Empty tensor: the source holds 0 bytes, expected the bytes of a video file")
    flat = tensor.reshape(-1)
    view = memoryview(flat.numpy())
    return VideoSource("memory", f"tensor ({flat.numel()} bytes)", view, flat.numel())
