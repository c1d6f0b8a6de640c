"""NVDEC decoding through PyNvVideoCodec, with our own colour conversion.

`NvdecDecoders` (`owner.py`) owns a device's decoders and decides, once per
stream, whether NVDEC decodes it exactly as the CPU path would
(`capabilities`); it returns an `NvdecBackend` or the reason it did not,
which becomes `VideoDecoder.cpu_fallback`. The backend registry
(`framefeed.engine.backends.registry`) calls it for CUDA devices.

Each decoder runs on a CUDA stream of its own (`streams.OwnedStream`, the
ordering rules in `streams.py`; callers hand frames over with
`framefeed.engine.backends.ordering.producing`), is reused by size bucket
(`decoder_cache.py`) and is destroyed on a reaper thread (`reaper.py`).

PyNvVideoCodec and CuPy are optional and imported lazily, the first time a
CUDA decoder is opened; `import framefeed` never imports them.
"""

from __future__ import annotations

from typing import Any

import torch

from framefeed.engine.backends.gpu_decode.backend import NvdecBackend
from framefeed.engine.backends.gpu_decode.owner import (
    NvdecDecoders,
    NvdecRuntime,
    cuda_runtime,
    default_decoders,
    load_cupy,
    load_pynvvideocodec,
)
from framefeed.engine.packets import CodecParameters
from framefeed.transforms import TransformPipeline

__all__ = ["NvdecBackend", "NvdecDecoders", "NvdecRuntime", "default_decoders", "open_nvdec_backend",
           "nvdec_unavailable_reason", "load_cupy", "load_pynvvideocodec"]


def nvdec_unavailable_reason() -> str:
    """Why no stream can be decoded on NVDEC in this process ("" if it might be)."""
    return cuda_runtime()[1]


def open_nvdec_backend(params: CodecParameters, device: torch.device, *, owner: NvdecDecoders | None = None,
                       stream: Any = None, transforms: TransformPipeline | None = None
                       ) -> tuple[NvdecBackend | None, str]:
    """(backend, "") when NVDEC can decode the stream exactly, else (None, reason),
    with decoders from `owner` (default: the device's default owner).
    `transforms` are applied by the colour kernel (`NvdecDecoders.open_backend`)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    owner = owner if owner is not None else default_decoders(index)
    return owner.open_backend(params, stream=stream, transforms=transforms)
