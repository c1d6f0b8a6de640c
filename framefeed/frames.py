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

from torch import Tensor


def _describe(obj: Any) -> str:
    lines = [f"{type(obj).__name__}:"]
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        if field.name == "data":
            lines.append(f"  data (shape): {tuple(value.shape)}")
        else:
            lines.append(f"  {field.name}: {value}")
    return "\n".join(lines) + "\n"


@dataclass
class Frame:
    """One video frame.

    `data` is 3-D; `pts_seconds` is when the frame starts being displayed and
    `duration_seconds` how long it stays on screen. Iterating yields the three
    fields, so `data, pts, duration = frame` works.

    Raises:
        ValueError: if `data` is not 3-D.
    """

    data: Tensor
    pts_seconds: float
    duration_seconds: float

    def __post_init__(self) -> None:
        if not isinstance(self.data, Tensor) or self.data.ndim != 3:
            shape = getattr(self.data, "shape", type(self.data).__name__)
            raise ValueError(f"Frame data must be a 3-D tensor, got shape {shape}")
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
        ValueError: if `data` has fewer than 3 dimensions or the timestamp
            shapes differ from `data.shape[:-3]`.
    """

    data: Tensor
    pts_seconds: Tensor
    duration_seconds: Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.data, Tensor) or self.data.ndim < 3:
            shape = getattr(self.data, "shape", type(self.data).__name__)
            raise ValueError(f"FrameBatch data must be at least 3-D, got shape {shape}")
        leading = tuple(self.data.shape[:-3])
        pts_shape = tuple(getattr(self.pts_seconds, "shape", ()))
        dur_shape = tuple(getattr(self.duration_seconds, "shape", ()))
        if not (leading == pts_shape == dur_shape):
            raise ValueError(
                "FrameBatch leading dimensions do not match: data.shape[:-3] is "
                f"{leading} but pts_seconds has shape {pts_shape} and duration_seconds "
                f"has shape {dur_shape}"
            )

    def __getitem__(self, key: Any) -> FrameBatch:
        data = self.data[key]
        pts = self.pts_seconds[key]
        duration = self.duration_seconds[key]
        if data.ndim < 3:  # an int index into a 3-D (single frame) batch
            raise IndexError(f"index {key!r} leaves no frame dimensions in {tuple(self.data.shape)}")
        return FrameBatch(data, pts, duration)

    def __iter__(self) -> Iterator[FrameBatch]:
        for i in range(len(self)):
            yield self[i]

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        return _describe(self)
