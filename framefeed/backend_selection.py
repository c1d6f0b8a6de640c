"""Choosing the backend for a decoder: the device the user asked for, and
what that device can decode.

CPU devices get `cpu_fallback.CpuBackend`. CUDA devices get NVDEC
(`gpu_decode`) when it can decode the stream exactly, and otherwise the CPU
backend, with frames uploaded to the device and the reason recorded in
`CpuFallbackStatus`. The choice is made once, at construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from framefeed.cpu_fallback.backend import CpuBackend
from framefeed.decoders._cpu_fallback_status import CpuFallbackStatus
from framefeed.demux.demuxer import Demuxer
from framefeed.demux.metadata import VideoStreamMetadata
from framefeed.errors import CudaUnavailableError


@dataclass
class BackendSelection:
    backend: Any
    status: CpuFallbackStatus


def resolve_device(device: Any) -> torch.device:
    """`None` -> torch's default device; strings and `torch.device`s validated.

    Raises:
        ValueError: not a CPU or CUDA device.
        TypeError: not a str, torch.device or None.
        CudaUnavailableError: a CUDA device while torch sees no usable GPU.
    """
    if device is None:
        device = torch.get_default_device()
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be None, a str or a torch.device, got {type(device).__name__}")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"Invalid device {device!r}: expected 'cpu', 'cuda' or 'cuda:N'") from error
    if resolved.type == "cpu":
        return torch.device("cpu")
    if resolved.type != "cuda":
        raise ValueError(f"Invalid device {device!r}: framefeed decodes on 'cpu' or 'cuda[:N]'")
    if not torch.cuda.is_available():
        raise CudaUnavailableError(
            f"device={str(device)!r} was requested but torch sees no usable CUDA GPU "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); use device='cpu'"
        )
    index = resolved.index if resolved.index is not None else torch.cuda.current_device()
    if not 0 <= index < torch.cuda.device_count():
        raise ValueError(
            f"Invalid device {device!r}: there are {torch.cuda.device_count()} CUDA devices "
            f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})"
        )
    return torch.device("cuda", index)


def open_backend(
    demuxer: Demuxer,
    metadata: VideoStreamMetadata,
    device: torch.device,
    *,
    rotation_quarter_turns: int,
    nvdec_cache: Any = None,
) -> BackendSelection:
    """The backend that decodes `demuxer`'s stream for `device`. NVDEC
    decoders come from `nvdec_cache` (a `gpu_decode.DecoderCache`; None: the
    device's process-wide cache)."""
    if device.type == "cuda":
        from framefeed.gpu_decode import (
            open_nvdec_backend,  # lazy: CuPy/PyNvVideoCodec are optional
        )

        backend, reason = open_nvdec_backend(demuxer, metadata, device, rotation_quarter_turns, nvdec_cache)
        if backend is not None:
            return BackendSelection(backend, CpuFallbackStatus(str(device)))
        cpu = CpuBackend(demuxer.stream, rotation_quarter_turns=rotation_quarter_turns)
        return BackendSelection(cpu, CpuFallbackStatus(str(device), True, reason))
    cpu = CpuBackend(demuxer.stream, rotation_quarter_turns=rotation_quarter_turns)
    return BackendSelection(cpu, CpuFallbackStatus("cpu"))
