"""NVDEC decoding through PyNvVideoCodec (see issue: gpu_decode)."""

from __future__ import annotations

from typing import Any


def open_nvdec_backend(demuxer: Any, metadata: Any, device: Any, rotation_quarter_turns: int) -> tuple[Any, str]:
    """(backend, "") when NVDEC can decode the stream exactly, else (None, reason)."""
    return None, "the NVDEC backend is not available in this build"
