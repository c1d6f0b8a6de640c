"""Decoder transforms as one sampling of the picture: what the fused NVDEC
kernel computes for `Resize`, `CenterCrop` and `RandomCrop`, and its torch reference.

A resolved `TransformPipeline` (crops in the coordinates of the rotated
frame, random crops already drawn) is folded, per axis, into an
`AxisSampling`: output pixel `k` of that axis is a triangle-filtered
(antialiased bilinear) average of picture pixels around the centre
`origin + step * (k + 0.5)`, taps clipped to `[low, high)`; an axis with no
resize is a plain copy (one tap of weight 1). `AxisTaps` tabulates it: for
each output pixel, the first tap, the number of taps and their normalised
float32 weights. The kernel reads those tables, so the kernel and
`reference_resampled` use the same weights.

Each output pixel is `sum over row taps of w_row * (sum over column taps of
w_col * RGB(tap))`, RGB being the colour conversion of that picture pixel
exactly as the full-size kernel computes it (uint8), accumulated in float32
in that order (columns inside, rows outside), then rounded once
(`floor(v + 0.5)`, clamped). Crops therefore give the converted pixels
themselves.

How close to the CPU path (`framefeed._transform_backend`: full-size
swscale RGB, then crops and torch's uint8 antialiased bilinear resize, a
two-pass filter with int16 weights that rounds to uint8 between passes):

- crops alone and a single `Resize` (with any crops before and after it)
  use exactly the CPU path's filter (torch's `_upsample_bilinear2d_aa`
  taps and weights: centre `scale * (i + 0.5)`, half-width `max(scale, 1)`,
  taps clipped to the resized region); pixels differ only by the colour
  conversion (<= 2, 0 for 10/12-bit 4:2:0) and by rounding once instead of
  twice.
- two or more resizes (`Resize, CenterCrop, Resize`, ...) cannot be one
  triangle filter exactly: the CPU path filters the filtered picture. They
  are composed into one sampling from the first resize's input region to
  the final size, whose triangle has the variance of the stages' triangles
  together: half-width `sqrt(sum of each stage's half-width**2)`, each in
  picture pixels (`COMPOSITE_SUPPORT`). Measured against the CPU path on
  corpus frames (tests/test_gpu_resampling.py) this stays within a mean
  |difference| of 1; using the combined scale's half-width instead
  (`"scale"`) is kept for comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import numpy as np
import torch

from framefeed.transforms import CropStep, ResizeStep, TransformPipeline

CompositeSupport = Literal["variance", "scale"]
COMPOSITE_SUPPORT: CompositeSupport = "variance"


@dataclass(frozen=True)
class AxisSampling:
    """How one axis of the output samples the same axis of the rotated picture.

    Coordinates are continuous picture coordinates: pixel `j` spans `[j, j + 1)`.

    Attributes:
        size: output pixels along the axis.
        origin: where output pixel 0's leading edge falls in the picture.
        step: picture pixels per output pixel.
        support: half-width of the triangle filter in picture pixels; 0 for an
            axis that no resize touches (output pixel k copies picture pixel
            `origin + k`).
        low, high: taps are clipped to picture pixels `[low, high)` (the region
            the first resize reads).
    """

    size: int
    origin: Fraction
    step: Fraction
    support: float
    low: int
    high: int

    @property
    def copies(self) -> bool:
        return self.support == 0.0


@dataclass(frozen=True)
class AxisTaps:
    """`AxisSampling` as tables: output pixel k reads picture pixels
    `first[k] .. first[k] + count[k] - 1` with weights `weights[k, :count[k]]`
    (float32, summing to 1; the rest of the row is 0).

    `spans` is `(size, 2)` int32 holding `(first, count)` per output pixel,
    the layout the kernel reads."""

    spans: np.ndarray
    weights: np.ndarray

    @property
    def first(self) -> np.ndarray:
        return self.spans[:, 0]

    @property
    def count(self) -> np.ndarray:
        return self.spans[:, 1]


@dataclass(frozen=True)
class Resampling:
    """The whole sampling: `rows` and `cols` of the output, from a rotated
    picture of `input_size` (height, width) to `output_size`."""

    input_size: tuple[int, int]
    output_size: tuple[int, int]
    rows: AxisSampling
    cols: AxisSampling

    def taps(self) -> tuple[AxisTaps, AxisTaps]:
        """(row taps, column taps)."""
        return axis_taps(self.rows), axis_taps(self.cols)


def resampling_for(pipeline: TransformPipeline, composite: CompositeSupport = COMPOSITE_SUPPORT) -> Resampling:
    """The sampling that performs `pipeline` (see the module docstring)."""
    height, width = pipeline.input_size
    rows: list[tuple[str, int, int]] = []
    cols: list[tuple[str, int, int]] = []
    for step in pipeline.steps:
        if isinstance(step, CropStep):
            rows.append(("crop", step.top, step.height))
            cols.append(("crop", step.left, step.width))
        elif isinstance(step, ResizeStep):
            rows.append(("resize", 0, step.height))
            cols.append(("resize", 0, step.width))
        else:  # pragma: no cover - TransformPipeline holds only these
            raise TypeError(f"unknown transform step {step!r}")
    return Resampling((height, width), tuple(pipeline.output_size),
                      compose_axis(rows, height, composite), compose_axis(cols, width, composite))


def compose_axis(operations: list[tuple[str, int, int]], input_size: int,
                 composite: CompositeSupport = COMPOSITE_SUPPORT) -> AxisSampling:
    """Fold `("crop", offset, size)` and `("resize", 0, size)` operations on
    one axis of `input_size` pixels, in order, into one `AxisSampling`.

    Raises:
        ValueError: a crop outside the current extent, a size below 1, or an
            unknown `composite`.
    """
    if composite not in ("variance", "scale"):
        raise ValueError(f"composite must be 'variance' or 'scale', got {composite!r}")
    origin, step, size = Fraction(0), Fraction(1), int(input_size)
    low, high = 0, size
    half_widths: list[Fraction] = []  # each resize's triangle half-width, in picture pixels
    for kind, offset, new_size in operations:
        if new_size < 1:
            raise ValueError(f"{kind} to {new_size} pixels: sizes must be at least 1")
        if kind == "crop":
            if offset < 0 or offset + new_size > size:
                raise ValueError(f"crop of {new_size} pixels at {offset} does not fit in {size}")
            origin += step * offset
            if not half_widths:  # before any resize a crop is the region resizes read
                low, high = int(origin), int(origin) + new_size
        elif kind == "resize":
            if new_size == size:
                continue  # the same size: torch's filter is then the identity
            ratio = Fraction(size, new_size)
            half_widths.append(max(ratio, Fraction(1)) * step)
            step *= ratio
        else:
            raise ValueError(f"unknown operation {kind!r}")
        size = new_size
    if not half_widths:
        support = 0.0
    elif len(half_widths) == 1:
        support = float(half_widths[0])
    elif composite == "variance":
        support = math.sqrt(float(sum(h * h for h in half_widths)))
    else:
        support = float(max(step, Fraction(1)))
    return AxisSampling(size, origin, step, support, low, high)


def axis_taps(axis: AxisSampling) -> AxisTaps:
    """The tables of `axis` (weights computed in float64, stored as float32)."""
    if axis.copies:
        first = np.arange(axis.size, dtype=np.int64) + int(axis.origin)
        spans = np.stack([first, np.ones_like(first)], axis=1).astype(np.int32)
        return AxisTaps(spans, np.ones((axis.size, 1), dtype=np.float32))
    support = axis.support
    centres = [float(axis.origin + axis.step * Fraction(2 * k + 1, 2)) for k in range(axis.size)]
    rows: list[np.ndarray] = []
    spans = np.zeros((axis.size, 2), dtype=np.int32)
    for k, centre in enumerate(centres):
        # torch's taps: [trunc(c - support + 0.5), trunc(c + support + 0.5)), clipped to the region
        first = max(math.floor(centre - support + 0.5), axis.low)
        end = min(math.floor(centre + support + 0.5), axis.high)
        taps = np.arange(first, end, dtype=np.float64)
        weights = np.maximum(0.0, 1.0 - np.abs(taps + 0.5 - centre) / support)  # support >= 1 here
        total = weights.sum()
        rows.append(weights / total)
        spans[k] = (first, end - first)
    width = max(int(spans[:, 1].max()), 1)
    table = np.zeros((axis.size, width), dtype=np.float32)
    for k, weights in enumerate(rows):
        table[k, : len(weights)] = weights
    return AxisTaps(spans, table)


# -- the torch reference ---------------------------------------------------------------------


def reference_resampled(picture: torch.Tensor, resampling: Resampling) -> torch.Tensor:
    """`resampling` applied to an upright (rotated) `(H, W, 3)` uint8 picture
    with the kernel's float32 operations in the kernel's order: for each output
    pixel, per row tap the column taps' weighted sum, then the row taps'
    weighted sum of those, then `floor(v + 0.5)` clamped to [0, 255].

    Raises:
        ValueError: the picture is not `resampling.input_size`.
    """
    if tuple(picture.shape) != (*resampling.input_size, 3):
        raise ValueError(f"picture of shape {tuple(picture.shape)} for a sampling of "
                         f"{resampling.input_size[0]}x{resampling.input_size[1]} pictures")
    row_taps, col_taps = resampling.taps()
    values = picture.to(torch.float32)
    across = _weighted_sum(values, col_taps, dim=1)  # (H, w, 3)
    result = _weighted_sum(across, row_taps, dim=0)  # (h, w, 3)
    return result.add_(0.5).clamp_(0.0, 255.0).to(torch.uint8)  # in range: the cast truncates


def _weighted_sum(values: torch.Tensor, taps: AxisTaps, dim: int) -> torch.Tensor:
    """sum_k weights[:, k] * values[first + k] along `dim`, accumulated from 0
    in tap order (padding taps have weight 0 and add exactly 0)."""
    first = torch.from_numpy(taps.first.astype(np.int64))
    weights = torch.from_numpy(taps.weights)
    last = values.shape[dim] - 1
    shape = [1, 1, 1]
    shape[dim] = -1
    out_shape = list(values.shape)
    out_shape[dim] = len(first)
    total = torch.zeros(out_shape, dtype=torch.float32)
    for k in range(weights.shape[1]):
        picked = values.index_select(dim, (first + k).clamp_(max=last))
        total = total + weights[:, k].reshape(shape) * picked
    return total


def picture_to_source(quarter_turns: int, width: int, height: int) -> tuple[int, int, int, int, int, int]:
    """Where pixel (i, j) of the picture turned `quarter_turns` counter-clockwise
    (`torch.rot90(source, quarter_turns)`) comes from in the `width x height`
    source: `(r0, r_i, r_j, c0, c_i, c_j)` with `row = r0 + r_i * i + r_j * j`
    and `col = c0 + c_i * i + c_j * j`."""
    turns = quarter_turns % 4
    if turns == 0:
        return 0, 1, 0, 0, 0, 1
    if turns == 1:
        return 0, 0, 1, width - 1, -1, 0
    if turns == 2:
        return height - 1, -1, 0, width - 1, 0, -1
    return height - 1, 0, -1, 0, 1, 0


def rotated_size(quarter_turns: int, width: int, height: int) -> tuple[int, int]:
    """(height, width) of a `width x height` picture after the turns."""
    return (width, height) if quarter_turns % 2 else (height, width)
