"""Warnings raised while serving a request travel back to its client.

In-process, a decoder's warnings (a damaged file, estimated indices in
approximate mode) reach the caller as Python warnings; through the service
they are raised in the server, so `install` routes each one to the request
it belongs to, and the client raises it again (`framefeed.client`):
- work the service runs on its own threads (opening, planning, reading
  packets) runs inside `capture(sink)`: the thread says whose it is;
- decoding runs on the pool's session threads, which serve one request at a
  time: a warning raised there belongs to the request whose packet bundle
  the raising code is decoding (found on the thread's stack by identity,
  `watch(bundle, sink)`), so it never reaches another client.
A warning that belongs to no request is printed on the server's stderr as
usual. The server shows every warning of a request (the filter for
UserWarning is "always"): which ones a user sees is decided by the
client's own filters, as in-process.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any

_local = threading.local()
_watched: dict[int, tuple[Any, list[tuple[type[Warning], str]]]] = {}
_lock = threading.Lock()
_original_show = warnings.showwarning
_STACK_DEPTH = 64


def install() -> None:
    """Route warnings to their requests (the server process calls this once)."""
    global _original_show
    if warnings.showwarning is not _show:
        _original_show = warnings.showwarning
        warnings.showwarning = _show
    warnings.filterwarnings("always", category=UserWarning)


@contextlib.contextmanager
def capture(sink: list[tuple[type[Warning], str]]) -> Iterator[None]:
    """Warnings raised on this thread inside the block go to `sink`."""
    previous = getattr(_local, "sink", None)
    _local.sink = sink
    try:
        yield
    finally:
        _local.sink = previous


def watch(bundle: Any, sink: list[tuple[type[Warning], str]]) -> None:
    """Warnings raised while any thread decodes `bundle` go to `sink` (until `unwatch`)."""
    with _lock:
        _watched[id(bundle)] = (bundle, sink)


def unwatch(bundle: Any) -> None:
    with _lock:
        _watched.pop(id(bundle), None)


def _show(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None,
          line: str | None = None) -> None:
    sink = getattr(_local, "sink", None)
    if sink is None and _watched:
        sink = _sink_on_stack()
    if sink is not None:
        sink.append((category, str(message)))
        return
    _original_show(message, category, filename, lineno, file, line)


def _sink_on_stack() -> list[tuple[type[Warning], str]] | None:
    frame = sys._getframe(2)
    for _ in range(_STACK_DEPTH):
        if frame is None:
            return None
        for value in list(frame.f_locals.values()):
            try:
                held = getattr(value, "bundle", None)  # a Work or a BundleSource holds its bundle
            except Exception:
                held = None
            for candidate in (value, held):
                if candidate is None:
                    continue
                with _lock:
                    entry = _watched.get(id(candidate))
                if entry is not None and entry[0] is candidate:
                    return entry[1]
        frame = frame.f_back
    return None
