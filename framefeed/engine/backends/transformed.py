"""Backends that apply decoder transforms to every frame they write.

`with_transforms(backend, pipeline)` wraps a decoding backend so that
`write_rgb` produces transformed frames; everything else (packets, frames,
timestamps) passes through, so the decode plan and session are unchanged.

The backend converts the full frame (rotated) into a scratch tensor on its
device, exactly as without transforms; crops are views of it and a Resize is
`torch.nn.functional.interpolate(mode="bilinear", antialias=True)`: on the
CPU torch's uint8 kernel (what torchvision's `Resize` runs on uint8 tensors,
so frames equal torchvision's output on the full frame, and are within a mean
|difference| of 1 of torchcodec's FFmpeg bilinear scaling), on CUDA the float
kernel, rounded (torchvision's CUDA path). NVDEC backends do not come
here: their colour kernel crops and resizes in the same launch
(`gpu_decode.resampling`, `applied_transforms`); this path serves the CPU
backend, including CUDA decoders that fell back to it.

Why not scale inside the swscale call that converts YUV to RGB (one pass,
about as fast)? swscale then filters chroma at chroma resolution: on noisy
content its output differs from torchcodec's and torchvision's (both resize
full-resolution RGB) by a mean of 1.8-2.5 levels, against 0.06-0.85 for this
path.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from framefeed.engine.frame_memory import empty_frames
from framefeed.transforms import CropStep, TransformPipeline


def with_transforms(backend: Any, pipeline: TransformPipeline | None) -> Any:
    """`backend` itself when there is nothing to do (no pipeline, or a backend
    that applies this very pipeline itself: its `applied_transforms`, as NVDEC's
    fused kernel does), else a wrapper applying `pipeline`.

    Raises:
        ValueError: `backend` already applies a different pipeline.
    """
    if not pipeline:
        return backend
    applied = getattr(backend, "applied_transforms", None)
    if applied:
        if applied != pipeline:
            raise ValueError(f"the backend already applies {applied}; cannot also apply {pipeline}")
        return backend
    return TransformedBackend(backend, TorchTransformer(backend, pipeline))


class TransformedBackend:
    """Delegates to `inner`; `write_rgb` writes the transformed frame."""

    def __init__(self, inner: Any, transformer: Any) -> None:
        self._inner = inner
        self._transformer = transformer
        # What this wrapper applies, so `with_transforms` never wraps it twice.
        self.applied_transforms = getattr(transformer, "pipeline", None)
        self.output_device = inner.output_device
        self.channels_first_output = inner.channels_first_output

    def __getattr__(self, name: str) -> Any:  # name, frames_decoded, close, ...
        return getattr(self._inner, name)

    def reset(self) -> None:
        self._inner.reset()

    def send(self, packet: Any) -> Any:
        return self._inner.send(packet)

    def drain(self) -> Any:
        return self._inner.drain()

    def pts_of(self, frame: Any) -> int | None:
        return self._inner.pts_of(frame)

    def duration_of(self, frame: Any) -> int | None:
        return self._inner.duration_of(frame)

    def retain(self, frame: Any) -> Any:
        return self._inner.retain(frame)

    def write_rgb(self, frame: Any, dst: torch.Tensor) -> None:
        self._transformer.write(frame, dst)


class TorchTransformer:
    """Full-size conversion by the backend, then torch crops and resizes on its device."""

    def __init__(self, backend: Any, pipeline: TransformPipeline) -> None:
        self._backend = backend
        self._pipeline = self.pipeline = pipeline
        self._full: dict[torch.dtype, torch.Tensor] = {}  # full-size scratch per output dtype

    def write(self, frame: Any, dst: torch.Tensor) -> None:
        full = self._full.get(dst.dtype)
        if full is None:
            height, width = self._pipeline.input_size
            full = self._full[dst.dtype] = empty_frames((height, width, 3), self._backend.output_device,
                                                        dst.dtype)
        self._backend.write_rgb(frame, full)
        dst.copy_(apply_steps(full, self._pipeline))


def apply_steps(picture: torch.Tensor, pipeline: TransformPipeline) -> torch.Tensor:
    """`pipeline` applied to an `(H, W, 3)` uint8 or float32 picture with torch operations."""
    for step in pipeline.steps:
        if isinstance(step, CropStep):
            picture = picture[step.top : step.top + step.height, step.left : step.left + step.width]
        else:
            picture = torch_resize(picture, step.height, step.width)
    return picture


def torch_resize(picture: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear, antialiased resize of an `(H, W, 3)` picture (what
    torchvision's `Resize` does to uint8 tensors; float32 pictures in [0, 1]
    are resized in float32 and stay in [0, 1], the weights being positive)."""
    if tuple(picture.shape[:2]) == (height, width):
        return picture
    nchw = picture.permute(2, 0, 1).unsqueeze(0)  # channels-last memory: no copy
    if picture.is_floating_point() or picture.device.type == "cpu":
        resized = F.interpolate(nchw, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    else:
        resized = F.interpolate(nchw.float(), size=(height, width), mode="bilinear", antialias=True,
                                align_corners=False).round_().clamp_(0, 255).to(torch.uint8)
    return resized[0].permute(1, 2, 0)
