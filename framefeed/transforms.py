"""Decoder transforms: applied by the decoder to every frame it returns.

`VideoDecoder(source, transforms=[...])` takes a sequence of these (or of the
torchvision v2 transforms of the same names, converted), applied in order,
after the stream's rotation, so sizes and crop positions are in the
coordinates of the frames the decoder returns. `decoder.metadata` keeps the
stream's own size; decoded frames have the transformed size.

- `Resize(size)`: bilinear with antialiasing (a triangle filter as wide as the
  scale factor when shrinking, like `torch.nn.functional.interpolate(...,
  mode="bilinear", antialias=True)` and FFmpeg's swscale `SWS_BILINEAR`).
- `CenterCrop(size)`: the centred window; offsets `round((in - out) / 2)`,
  halves rounded to even, as torchvision and FFmpeg's crop filter do.
- `RandomCrop(size)`: a window at a random position drawn once, when the
  decoder is created, from torch's global RNG (`top` then `left`, each with
  `torch.randint(0, in - out + 1, size=())`, as torchvision and torchcodec do),
  so `torch.manual_seed(s)` reproduces it; every frame of that decoder is
  cropped at the same place.

Sizes are `(height, width)`. On the CPU, frames are converted to RGB at full
size as without transforms, then cropped (views) and resized with torch's
antialiased bilinear interpolation (`framefeed.engine.backends.transformed`): the
result equals torchvision's `Resize` applied to the full frame. On NVDEC the
colour kernel applies the resolved pipeline in the launch that converts each
picture, writing only the output size (`framefeed.engine.backends.gpu_decode.resampling`).
Backends receive the resolved pipeline in `backends.BackendContext.transforms`.
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["CenterCrop", "DecoderTransform", "RandomCrop", "Resize"]


class DecoderTransform(ABC):  # noqa: B024 - a marker base, as in torchcodec
    """Base class of the transforms `VideoDecoder(transforms=...)` applies."""

    size: Sequence[int]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={tuple(self.size)!r})"


def _check_pair(kind: str, size: Any) -> Sequence[int]:
    if len(size) != 2:
        raise ValueError(f"{kind} transform must have a (height, width) pair for the size, got {size}.")
    return size


class Resize(DecoderTransform):
    """Resize frames to `size = (height, width)`: bilinear, antialiased.

    Raises:
        ValueError: `size` is not a (height, width) pair. Sizes that are not
            positive integers are refused when the decoder is created.
    """

    def __init__(self, size: Sequence[int]) -> None:
        self.size = _check_pair("Resize", size)


class CenterCrop(DecoderTransform):
    """Crop the centred `size = (height, width)` window.

    Raises:
        ValueError: `size` is not a (height, width) pair; at decoder creation,
            a window larger than the frame.
    """

    def __init__(self, size: Sequence[int]) -> None:
        self.size = _check_pair("CenterCrop", size)


class RandomCrop(DecoderTransform):
    """Crop a `size = (height, width)` window at a position drawn once per
    decoder from torch's global RNG. No padding of any kind.

    Raises:
        ValueError: `size` is not a (height, width) pair; at decoder creation,
            a window larger than the frame.
    """

    def __init__(self, size: Sequence[int]) -> None:
        self.size = _check_pair("RandomCrop", size)


# -- resolution: what a decoder actually does -------------------------------------------


class TransformSizeError(ValueError, RuntimeError):
    """A transform that cannot apply to the frames it gets (torchcodec raises
    RuntimeError from its C++ checks)."""


@dataclass(frozen=True)
class ResizeStep:
    height: int
    width: int


@dataclass(frozen=True)
class CropStep:
    top: int
    left: int
    height: int
    width: int


Step = ResizeStep | CropStep


@dataclass(frozen=True)
class TransformPipeline:
    """Concrete steps for frames of `input_size` (after rotation), producing
    frames of `output_size`. RandomCrop positions are already drawn."""

    steps: tuple[Step, ...]
    input_size: tuple[int, int]
    output_size: tuple[int, int]

    def __bool__(self) -> bool:
        return bool(self.steps)


def resolve_transforms(transforms: Any, height: int, width: int,
                       generator: torch.Generator | None = None) -> TransformPipeline:
    """Turn the user's `transforms` into concrete steps for `height x width`
    frames: converts torchvision (and torchcodec) objects, checks sizes, and
    draws RandomCrop positions from torch's global RNG (or `generator`), in
    list order.

    Raises:
        TypeError: `transforms` is not iterable.
        ValueError: an unsupported transform, a torchvision option that cannot
            apply (e.g. padding), a size that is not a pair of positive integers,
            a crop larger than its input.
    """
    steps: list[Step] = []
    current = (int(height), int(width))
    if transforms is None:
        return TransformPipeline((), current, current)
    for transform in transforms:
        transform = _as_decoder_transform(transform)
        size = _positive_size(transform.size)
        if isinstance(transform, Resize):
            steps.append(ResizeStep(*size))
        else:
            _check_crop_fits(transform, size, current)
            if isinstance(transform, CenterCrop):
                top, left = round((current[0] - size[0]) / 2), round((current[1] - size[1]) / 2)
            else:
                top = int(torch.randint(0, current[0] - size[0] + 1, size=(), generator=generator).item())
                left = int(torch.randint(0, current[1] - size[1] + 1, size=(), generator=generator).item())
            steps.append(CropStep(top, left, *size))
        current = size
    return TransformPipeline(tuple(steps), (int(height), int(width)), current)


def _positive_size(size: Sequence[Any]) -> tuple[int, int]:
    values = []
    for value in size:
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = -1.0
        if not (number > 0 and number == int(number)):
            raise TransformSizeError(
                f"String must be a positive integer: {value}. Transform sizes must be positive integers "
                f"(height, width), got {tuple(size)}"
            )
        values.append(int(number))
    return values[0], values[1]


def _check_crop_fits(transform: DecoderTransform, size: tuple[int, int], current: tuple[int, int]) -> None:
    if isinstance(transform, RandomCrop):
        if current[0] < size[0] or current[1] < size[1]:
            raise ValueError(f"Input dimensions {current} are smaller than the crop size {tuple(transform.size)}.")
        return
    for axis, name in ((0, "height"), (1, "width")):
        if size[axis] > current[axis]:
            raise TransformSizeError(
                f"Crop output {name} ({size[axis]}) is greater than input {name} ({current[axis]}): "
                f"CenterCrop{tuple(size)} does not fit in {current[0]}x{current[1]} frames"
            )


_NAMES = {"Resize": Resize, "CenterCrop": CenterCrop, "RandomCrop": RandomCrop}


def _as_decoder_transform(transform: Any) -> DecoderTransform:
    """A framefeed transform for `transform`: itself, or the conversion of a
    torchvision v2 (or torchcodec) transform of the same name. Recognised by
    module and class name, so torchvision is never imported here."""
    if isinstance(transform, DecoderTransform):
        return transform
    module = type(transform).__module__ or ""
    name = type(transform).__name__
    if module.startswith("torchcodec.transforms") and name in _NAMES:
        return _NAMES[name](transform.size)
    if module.startswith("torchvision.transforms"):
        if name == "Resize":
            return _from_torchvision_resize(transform)
        if name == "CenterCrop":
            return CenterCrop(_torchvision_pair("CenterCrop", transform.size))
        if name == "RandomCrop":
            return _from_torchvision_random_crop(transform)
    raise ValueError(
        f"Unsupported transform: {transform}. Transforms must be either a framefeed DecoderTransform "
        "(framefeed.transforms.Resize, CenterCrop, RandomCrop) or a TorchVision v2 transform of one of "
        "those names."
    )


def _torchvision_pair(kind: str, size: Any) -> Sequence[int]:
    if size is None or len(size) != 2:
        raise ValueError(f"TorchVision {kind} transform must have a (height, width) pair for the size, got {size}.")
    return size


def _from_torchvision_resize(transform: Any) -> Resize:
    interpolation = getattr(transform, "interpolation", "bilinear")
    if getattr(interpolation, "value", interpolation) != "bilinear":
        raise ValueError(
            f"TorchVision Resize transform must use bilinear interpolation, got {interpolation}."
        )
    if getattr(transform, "antialias", True) is False:
        raise ValueError("TorchVision Resize transform must have antialias enabled.")
    if getattr(transform, "size", None) is None:
        raise ValueError("TorchVision Resize transform must have a size specified.")
    if getattr(transform, "max_size", None) is not None:
        raise ValueError(f"TorchVision Resize transform must not specify max_size, got {transform.max_size}.")
    return Resize(_torchvision_pair("Resize", transform.size))


def _from_torchvision_random_crop(transform: Any) -> RandomCrop:
    if getattr(transform, "padding", None) is not None:
        raise ValueError(f"TorchVision RandomCrop transform must not specify padding, got {transform.padding}.")
    if getattr(transform, "pad_if_needed", False) is True:
        raise ValueError("TorchVision RandomCrop transform must not specify pad_if_needed.")
    fill = getattr(transform, "fill", 0)
    if not _is_zero_fill(fill):
        raise ValueError(f"TorchVision RandomCrop fill must be 0, got {fill}.")
    mode = getattr(transform, "padding_mode", "constant")
    if getattr(mode, "value", mode) != "constant":
        raise ValueError(f"TorchVision RandomCrop padding_mode must be constant, got {mode}.")
    return RandomCrop(_torchvision_pair("RandomCrop", transform.size))


def _is_zero_fill(fill: Any) -> bool:
    # torchvision v2 stores fill as a per-type dict ({type: 0}) after construction.
    if isinstance(fill, dict):
        return all(_is_zero_fill(value) for value in fill.values())
    if isinstance(fill, (list, tuple)):
        return all(_is_zero_fill(value) for value in fill)
    return fill is None or fill == 0
