"""The backend registry: which decoder serves which device.

Each backend registers a `BackendSpec`: its name, the device types it
serves, and how to open it for a stream. `open_backend` tries, for the
requested device, every registered backend serving that device type in
registration order and takes the first that opens; when none does, it falls
back to the CPU backend (frames uploaded to the device) and records why in
`CpuFallbackStatus`. A new device is one new module that calls `register`.

Opening takes plain `CodecParameters` (plus the PyAV stream when packets come
from its demuxer), so the same call serves packets shipped from another
process. NVDEC decoders come from an owner (`gpu_decode.NvdecDecoders`)
passed in `BackendContext`; None means the device's default owner.

Decoder transforms travel in `BackendContext.transforms` (a resolved
`TransformPipeline`): the backend `open_backend` returns writes transformed
frames of `transforms.output_size`, whichever backend it is. NVDEC crops and
resizes inside its colour-conversion launch (`gpu_decode.resampling`); any
other backend is wrapped by `_transform_backend.with_transforms` (full-size
conversion, then torch). This is the call a decode pool, a loader worker or a
service makes: `open_backend(params, device, BackendContext(stream=...,
nvdec=owner, transforms=resolve_transforms(transforms, height, width)))`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from framefeed.engine.backends.status import CpuFallbackStatus
from framefeed.engine.backends.transformed import with_transforms
from framefeed.engine.packets import CodecParameters
from framefeed.transforms import TransformPipeline


@dataclass
class BackendContext:
    """What opening a backend may use besides the codec parameters.

    Attributes:
        stream: the PyAV stream whose demuxer supplies packets (its own codec
            context and bitstream filters are used); None for shipped packets.
        num_threads: CPU decoding threads (0: FFmpeg chooses).
        nvdec: the owner of NVDEC decoders; None: the device's default owner.
        transforms: a `TransformPipeline` resolved for the stream's frames
            (after rotation), applied to every frame the backend writes; None
            or an empty pipeline: full frames.
    """

    stream: Any = None
    num_threads: int = 1
    nvdec: Any = None
    transforms: TransformPipeline | None = None


# (params, device, context) -> (backend, "") or (None, why it cannot serve this stream)
Opener = Callable[[CodecParameters, torch.device, BackendContext], tuple[Any, str]]


@dataclass(frozen=True)
class BackendSpec:
    """A registered backend: `name`, the torch device types it serves, and
    `open`, which returns (backend, "") or (None, reason) and never raises for
    a stream or machine it cannot serve."""

    name: str
    device_types: tuple[str, ...]
    open: Opener = field(compare=False)


_REGISTRY: list[BackendSpec] = []


def register(spec: BackendSpec) -> None:
    """Add (or replace, by name) a backend."""
    _REGISTRY[:] = [s for s in _REGISTRY if s.name != spec.name] + [spec]


def registered() -> list[BackendSpec]:
    return list(_REGISTRY)


@dataclass
class BackendSelection:
    backend: Any
    status: CpuFallbackStatus


def open_backend(params: CodecParameters, device: torch.device,
                 context: BackendContext | None = None) -> BackendSelection:
    """The backend that decodes a stream with `params` for `device`, writing
    frames transformed by `context.transforms` (a backend that does not apply
    them itself, see `applied_transforms`, is wrapped)."""
    context = context or BackendContext()
    reasons = []
    for spec in _REGISTRY:
        if device.type not in spec.device_types:
            continue
        backend, reason = spec.open(params, device, context)
        if backend is not None:
            if context.transforms:
                backend = with_transforms(backend, context.transforms)
            fell_back = device.type != "cpu" and "cpu" in spec.device_types and spec.name == "cpu"
            return BackendSelection(backend, CpuFallbackStatus(str(device) if device.type != "cpu" else "cpu",
                                                               fell_back, "; ".join(reasons) if fell_back else ""))
        reasons.append(reason)
    raise ValueError(f"no backend serves device {device}")


def _open_cpu(params: CodecParameters, device: torch.device, context: BackendContext) -> tuple[Any, str]:
    from framefeed.engine.backends.cpu_fallback.backend import CpuBackend

    codec = context.stream.codec_context if context.stream is not None else params.open_codec_context(
        context.num_threads)
    return CpuBackend(codec, rotation_quarter_turns=params.rotation_quarter_turns), ""


def _open_nvdec(params: CodecParameters, device: torch.device, context: BackendContext) -> tuple[Any, str]:
    from framefeed.engine.backends.gpu_decode import (
        open_nvdec_backend,  # lazy: CuPy/PyNvVideoCodec are optional
    )

    return open_nvdec_backend(params, device, owner=context.nvdec, stream=context.stream,
                              transforms=context.transforms or None)


register(BackendSpec("nvdec", ("cuda",), _open_nvdec))
# Last: serves every device, the others' fallback.
register(BackendSpec("cpu", ("cpu", "cuda"), _open_cpu))
