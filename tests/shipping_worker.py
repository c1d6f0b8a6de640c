"""Runs in a `spawn` subprocess for tests/test_shipping.py: plans and demuxes
requests the way a DataLoader worker would, and reports whether any CUDA
module was imported (none may be)."""

from __future__ import annotations

import sys
from typing import Any

CUDA_MODULES = ("framefeed.engine.backends.gpu_decode", "cupy", "PyNvVideoCodec")


def ship(path: str, seek_mode: str, requests: list[dict[str, Any]]) -> tuple[list[Any], list[str]]:
    from framefeed.engine.bundling import ship_request

    shipped = [ship_request(path, seek_mode, **request) for request in requests]
    return shipped, [name for name in CUDA_MODULES if name in sys.modules]
