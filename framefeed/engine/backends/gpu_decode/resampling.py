"""Decoder transforms as one sampling of the picture: what the fused NVDEC
kernel computes for `Resize`, `CenterCrop` and `RandomCrop`, and its torch reference.

Crops and torch's antialiased bilinear resize are separable linear maps, so
a resolved `TransformPipeline` (crops in the coordinates of the rotated
frame, random crops already drawn), in order, is per axis one linear map
from picture pixels to output pixels: `axis_taps` multiplies the stages out
(float64) into an `AxisTaps` table giving, for each output pixel, its first
picture pixel, its number of taps and their float32 weights. An axis that
no resize touches copies (one tap of weight 1). The kernel reads these
tables, so the kernel and `reference_resampled` use the same weights.

Each output pixel is `sum over row taps of w_row * (sum over column taps of
w_col * RGB(tap))`, RGB being the colour conversion of that picture pixel
exactly as the full-size kernel computes it (uint8), accumulated in float32
from 0 in that order (columns inside, rows outside), then rounded once
(`floor(v + 0.5)`, clamped to [0, 255]). Crops therefore give the converted
pixels themselves.

How this relates to the CPU path (`framefeed.engine.backends.transformed`: full-size
swscale RGB, then crops and torch's uint8 antialiased bilinear resizes, each
a two-pass filter with int16 weights that rounds to uint8 after each pass):

- crops and a single `Resize` (with any crops before and after it) use the
  CPU path's own filter (`resize_rows` is torch's tap and weight formula);
- a sequence with several resizes (`Resize, CenterCrop, Resize`, resizing
  down then up, ...) is their exact composition (the product of the stages'
  weight matrices), not an approximation by one triangle: where the CPU path
  rounds each stage's result to uint8 and filters again, the kernel keeps
  the intermediate exact. (A single triangle with the combined scale's or the
  stages' combined variance's width was tried: it is up to 11 levels off
  after resize-crop-resize and 33 after resizing down then up on the test
  corpus, against 2-3 here.)

So pixels differ from the CPU path by the colour conversion (<= 2 for 8-bit
and 4:4:4, 0 for 10/12-bit 4:2:0, as without transforms) and by rounding once
instead of after every pass: on the corpus (tests/test_gpu_resampling.py),
for every ratio tried (up, down, odd, to 1x1) and every sequence, max 3 and
mean < 0.7 for 8-bit 4:2:0 (mostly the conversion's truncation), max 2 and
mean < 0.35 for full range, 10-bit and 4:4:4.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from framefeed.transforms import CropStep, ResizeStep, TransformPipeline


@dataclass(frozen=True)
class AxisTaps:
    """One output axis as a table over the same axis of the rotated picture:
    output pixel k is `sum(weights[k, t] * picture[first[k] + t] for t < count[k])`
    (float32 weights summing to 1; the rest of the row is 0).

    `spans` is `(size, 2)` int32 holding `(first, count)` per output pixel,
    the layout the kernel reads; `weights` is `(size, max count)` float32."""

    spans: np.ndarray
    weights: np.ndarray

    @property
    def first(self) -> np.ndarray:
        return self.spans[:, 0]

    @property
    def count(self) -> np.ndarray:
        return self.spans[:, 1]

    @property
    def size(self) -> int:
        return int(self.spans.shape[0])


@dataclass(frozen=True)
class Resampling:
    """The whole sampling: the output's `rows` and `cols`, from a rotated
    picture of `input_size` (height, width) to `output_size`."""

    input_size: tuple[int, int]
    output_size: tuple[int, int]
    rows: AxisTaps
    cols: AxisTaps


def resampling_for(pipeline: TransformPipeline) -> Resampling:
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
    return Resampling((int(height), int(width)), (int(pipeline.output_size[0]), int(pipeline.output_size[1])),
                      axis_taps(rows, height), axis_taps(cols, width))


# One output pixel of an axis: (first picture pixel, float64 weights of it and the following ones).
_Row = tuple[int, np.ndarray]


def axis_taps(operations: list[tuple[str, int, int]], input_size: int) -> AxisTaps:
    """Fold `("crop", offset, size)` and `("resize", 0, size)` operations on
    one axis of `input_size` pixels, in order, into its tap table: crops
    select output pixels, each resize is torch's antialiased bilinear filter
    over the current extent (`resize_rows`), composed with what came before
    in float64, then stored as float32.

    Raises:
        ValueError: a crop outside the current extent, a size below 1, or an
            unknown operation.
    """
    size = int(input_size)
    rows: list[_Row] | None = None  # None: the identity (no resize yet)
    offset = 0  # with the identity: picture pixel of current pixel 0
    for kind, start, new_size in operations:
        if new_size < 1:
            raise ValueError(f"{kind} to {new_size} pixels: sizes must be at least 1")
        if kind == "crop":
            if start < 0 or start + new_size > size:
                raise ValueError(f"crop of {new_size} pixels at {start} does not fit in {size}")
            if rows is None:
                offset += start
            else:
                rows = rows[start : start + new_size]
        elif kind == "resize":
            if new_size == size:
                continue  # the same size: torch's filter is then the identity
            stage = resize_rows(size, new_size)
            rows = ([(first + offset, weights) for first, weights in stage] if rows is None
                    else [_compose(row, rows) for row in stage])
        else:
            raise ValueError(f"unknown operation {kind!r}")
        size = new_size
    if rows is None:
        first = np.arange(size, dtype=np.int64) + offset
        return AxisTaps(np.stack([first, np.ones_like(first)], axis=1).astype(np.int32),
                        np.ones((size, 1), dtype=np.float32))
    width = max(len(weights) for _, weights in rows)
    spans = np.zeros((size, 2), dtype=np.int32)
    table = np.zeros((size, width), dtype=np.float32)
    for k, (first, weights) in enumerate(rows):
        spans[k] = (first, len(weights))
        table[k, : len(weights)] = weights
    return AxisTaps(spans, table)


def resize_rows(in_size: int, out_size: int) -> list[_Row]:
    """torch's antialiased bilinear filter from `in_size` to `out_size` pixels
    (`_upsample_bilinear2d_aa`, what torchvision's `Resize` runs): output
    pixel i is centred at `scale * (i + 0.5)`, `scale = in / out`; a triangle
    of half-width `support = max(scale, 1)` weighs the pixels
    `[trunc(centre - support + 0.5), trunc(centre + support + 0.5))` clipped
    to the input, normalised to sum to 1."""
    scale = in_size / out_size
    support = max(scale, 1.0)
    rows = []
    for i in range(out_size):
        centre = scale * (i + 0.5)
        first = max(int(centre - support + 0.5), 0)
        end = min(int(centre + support + 0.5), in_size)
        taps = np.arange(first, end, dtype=np.float64)
        weights = np.maximum(0.0, 1.0 - np.abs(taps - centre + 0.5) / support)
        rows.append((first, weights / weights.sum()))
    return rows


def _compose(outer: _Row, inner: list[_Row]) -> _Row:
    """The picture weights of `outer`, a row over the current pixels, each of
    which is a row of `inner` over the picture; exact zeros at the ends dropped."""
    first_current, weights = outer
    used = inner[first_current : first_current + len(weights)]
    low = min(first for first, _ in used)
    high = max(first + len(w) for first, w in used)
    total = np.zeros(high - low, dtype=np.float64)
    for weight, (first, row) in zip(weights, used, strict=True):
        total[first - low : first - low + len(row)] += weight * row
    nonzero = np.flatnonzero(total)
    return low + int(nonzero[0]), total[nonzero[0] : nonzero[-1] + 1]


# -- the torch reference ---------------------------------------------------------------------


def reference_resampled(picture: torch.Tensor, resampling: Resampling) -> torch.Tensor:
    """`resampling` applied to an upright (rotated) `(H, W, 3)` uint8 picture
    with the kernel's float32 operations in the kernel's order: for each output
    pixel, per row tap the column taps' weighted sum, then the row taps'
    weighted sum of those, then `floor(v + 0.5)` clamped to [0, 255]. A
    float32 picture (float output) gives the weighted sums themselves.

    Raises:
        ValueError: the picture is not `resampling.input_size`.
    """
    if tuple(picture.shape) != (*resampling.input_size, 3):
        raise ValueError(f"picture of shape {tuple(picture.shape)} for a sampling of "
                         f"{resampling.input_size[0]}x{resampling.input_size[1]} pictures")
    row_taps, col_taps = resampling.rows, resampling.cols
    values = picture.to(torch.float32)
    across = _weighted_sum(values, col_taps, dim=1)  # (H, w, 3)
    result = _weighted_sum(across, row_taps, dim=0)  # (h, w, 3)
    if picture.dtype == torch.float32:
        return result
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
