"""`Frame` and `FrameBatch`: decoded pixels with their timestamps.

Pixel data is uint8 RGB on the decoder's device, `(C, H, W)` or `(H, W, C)` per
frame depending on the decoder's `dimension_order`. Timestamps are in seconds:
Python floats in a `Frame`, CPU float64 tensors in a `FrameBatch`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


class _DataShapeError(ValueError, AttributeError):
    """Data (or timestamps) without a shape: torchcodec fails with AttributeError."""


def _shape_of(value: Any, what: str) -> Any:
    shape = getattr(value, "shape", None)
    if shape is None or not hasattr(value, "ndim"):
        raise _DataShapeError(
            f"{what} must be a tensor, got {type(value).__name__} ('{type(value).__name__}' object has no "
            "attribute 'shape')"
        )
    return shape


def _describe(obj: Any) -> str:
    lines = [f"{type(obj).__name__}:"]
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        if field.name == "data":
            lines.append(f"  data (shape): {value.shape}")
        else:
            lines.append(f"  {field.name}: {value}")
    return "\n".join(lines) + "\n"


@dataclass
class Frame:
    """One video frame.

    `data` is 3-D; `pts_seconds` is when the frame starts being displayed and
    `duration_seconds` how long it stays on screen. Iterating yields the three
    fields, so `data, pts, duration = frame` works.

    Inside a function compiled by `torch.compile`, the timestamps stay 0-d
    tensors (converting them to floats would break the graph).

    Raises:
        ValueError: if `data` is not 3-D ("data must be 3-dimensional").
    """

    data: Tensor
    pts_seconds: float
    duration_seconds: float

    def __post_init__(self) -> None:
        shape = _shape_of(self.data, "Frame data")
        if self.data.ndim != 3:
            raise ValueError(
                f"Frame data must be 3-dimensional, got self.data.shape = {shape} "
                "(one frame is (C, H, W) or (H, W, C); FrameBatch holds several)"
            )
        if not torch.compiler.is_compiling():
            self.pts_seconds = float(self.pts_seconds)
            self.duration_seconds = float(self.duration_seconds)

    def __iter__(self) -> Iterator[Any]:
        yield self.data
        yield self.pts_seconds
        yield self.duration_seconds

    def __repr__(self) -> str:
        return _describe(self)


@dataclass
class FrameBatch:
    """Several frames (4-D data) or several clips of frames (5-D data).

    `pts_seconds` and `duration_seconds` are CPU float64 tensors whose shape is
    `data.shape[:-3]`. Indexing with any torch index (int, slice, bool mask,
    index tensor) applies to all three fields and returns a `FrameBatch`;
    `len()` and iteration run over the first dimension.

    Raises:
        ValueError: if `data` has fewer than 3 dimensions ("data must be at
            least 3-dimensional") or the timestamp shapes differ from
            `data.shape[:-3]` ("the leading dimensions of the inputs do not match").
    """

    data: Tensor
    pts_seconds: Tensor
    duration_seconds: Tensor

    def __post_init__(self) -> None:
        shape = _shape_of(self.data, "FrameBatch data")
        if self.data.ndim < 3:
            raise ValueError(
                f"FrameBatch data must be at least 3-dimensional, got self.data.shape = {shape} "
                "(frames are (N, C, H, W) or (N, H, W, C))"
            )
        leading = shape[:-3]
        pts_shape = _shape_of(self.pts_seconds, "FrameBatch pts_seconds")
        dur_shape = _shape_of(self.duration_seconds, "FrameBatch duration_seconds")
        if not (leading == pts_shape == dur_shape):
            raise ValueError(
                "Tried to create a FrameBatch but the leading dimensions of the inputs do not match. "
                f"Got self.data.shape = {shape} so we expected the shape of pts_seconds and duration_seconds "
                f"to be leading_dims = {leading}, but got self.pts_seconds.shape = {pts_shape} and "
                f"self.duration_seconds.shape = {dur_shape}."
            )

    def __getitem__(self, key: Any) -> FrameBatch:
        data = self.data[key]
        pts = self.pts_seconds[key]
        duration = self.duration_seconds[key]
        if data.ndim < 3:  # an int index into a 3-D (single frame) batch
            raise IndexError(f"index {key!r} leaves no frame dimensions in {tuple(self.data.shape)}")
        return FrameBatch(data, pts, duration)

    def __iter__(self) -> Iterator[FrameBatch]:
        for data, pts, duration in zip(self.data, self.pts_seconds, self.duration_seconds, strict=False):
            yield FrameBatch(data, pts, duration)

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        return _describe(self)
