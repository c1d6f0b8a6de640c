"""`DecodeRequest`: one video and which of its frames to decode, as a value.

A request names its frames one of four ways, exactly as the `VideoDecoder`
method it stands for:

- `indices`: `get_frames_at(indices)` (any order, duplicates allowed);
- `seconds`: `get_frames_played_at(seconds)`;
- `start` / `stop` / `step`: `get_frames_in_range(start, stop, step)`
  (half-open, Python slice semantics: a missing bound is the natural end);
- none of these: `get_all_frames()`.

Argument types and the choice of kind are checked when the request is made
(in the caller's thread), with `VideoDecoder`'s checks and messages; whether
the frames exist is checked against the file when the pool opens it, and
fails that request's future alone.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from framefeed import _arguments as args
from framefeed.engine.demux.custom_frame_mappings import resolve_seek_mode
from framefeed.transforms import RandomCrop, _as_decoder_transform

DIMENSION_ORDERS = ("NCHW", "NHWC")
# Stands in for the frame count when only argument types are checked.
_ANY_COUNT = 1 << 62

# The VideoDecoder method each kind of request stands for (errors name it).
METHODS = {"indices": "get_frames_at", "seconds": "get_frames_played_at", "range": "get_frames_in_range",
           "all": "get_all_frames"}


@dataclass(frozen=True)
class DecodeRequest:
    """What to decode from one video (see the module docstring for the kinds).

    Attributes:
        source: anything `VideoDecoder` opens (path, URL, bytes, tensor, file object).
        indices: frame indices (ints, or an integer/whole-valued tensor or
            array), negative counting from the end; stored as a tuple of ints.
        seconds: display times in seconds; stored as a tuple of floats.
        start, stop, step: an index range (`step` != 0; None bounds as in a slice).
        seek_mode: "exact" or "approximate", as for `VideoDecoder`.
        dimension_order: "NCHW" or "NHWC".
        transforms: `VideoDecoder`'s decoder transforms (`framefeed.transforms`
            `Resize`, `CenterCrop`, `RandomCrop`, or the torchvision v2 classes
            of those names), applied to every frame. A `RandomCrop` window is
            drawn per request from a generator seeded from torch's global RNG
            when the request is submitted, so `torch.manual_seed` reproduces it.
        stream_index: the video stream, None for the best one.
        output_dtype: `torch.uint8` (default), `torch.float32` (values in
            [0, 1]) or `"auto"` (float32 for sources with more than 8 bits per
            sample), as for `VideoDecoder`.

    Raises (at construction):
        TypeError: indices, seconds or bounds of the wrong type.
        ValueError: more than one kind given, `step` 0, an unknown `seek_mode`,
            `dimension_order`, `output_dtype` or transform.
    """

    source: Any
    indices: tuple[int, ...] | None = None
    seconds: tuple[float, ...] | None = None
    start: int | None = None
    stop: int | None = None
    step: int | None = 1
    seek_mode: Literal["exact", "approximate"] = "exact"
    dimension_order: Literal["NCHW", "NHWC"] = "NCHW"
    transforms: tuple[Any, ...] = field(default=())
    stream_index: int | None = None
    output_dtype: torch.dtype | str = torch.uint8

    def __post_init__(self) -> None:
        seek_mode, _ = resolve_seek_mode(self.seek_mode, None)
        object.__setattr__(self, "seek_mode", seek_mode)
        if self.dimension_order not in DIMENSION_ORDERS:
            raise ValueError(
                f"Invalid dimension order ({self.dimension_order}). "
                f"Supported values are {', '.join(DIMENSION_ORDERS)}."
            )
        is_range = self.start is not None or self.stop is not None or self.step != 1
        given = [name for name, present in (("indices", self.indices is not None),
                                            ("seconds", self.seconds is not None),
                                            ("start/stop/step", is_range)) if present]
        if len(given) > 1:
            raise ValueError(f"A request takes one of indices, seconds or start/stop/step, got {' and '.join(given)}")
        if self.indices is not None:
            object.__setattr__(self, "indices", _plain_indices(self.indices))
        if self.seconds is not None:
            object.__setattr__(self, "seconds", tuple(args.seconds_list(self.seconds)))
        if is_range:
            args.index_range(self.start, self.stop, self.step, 1)  # types and step 0, as the decoder checks them
        transforms = () if self.transforms is None else self.transforms
        if isinstance(transforms, (str, bytes)) or not isinstance(transforms, Sequence):
            raise TypeError(f"transforms must be a sequence of decoder transforms, got {type(transforms).__name__}")
        for transform in transforms:
            _as_decoder_transform(transform)  # ValueError for what VideoDecoder would refuse
        object.__setattr__(self, "transforms", tuple(transforms))
        args.output_dtype(self.output_dtype)

    @property
    def kind(self) -> Literal["indices", "seconds", "range", "all"]:
        """Which `VideoDecoder` method the request stands for (see `METHODS`)."""
        if self.indices is not None:
            return "indices"
        if self.seconds is not None:
            return "seconds"
        if self.start is not None or self.stop is not None or self.step != 1:
            return "range"
        return "all"

    @property
    def draws_crops(self) -> bool:
        """Whether resolving the transforms draws random crop windows."""
        return any(isinstance(_as_decoder_transform(t), RandomCrop) for t in self.transforms)


def _plain_indices(values: Any) -> tuple[int, ...]:
    """The indices as ints, type-checked as `VideoDecoder.get_frames_at` checks
    them (the range is checked against the file later)."""
    args.frame_indices(values, _ANY_COUNT)  # raises the decoder's TypeError for bad values
    if isinstance(values, np.ndarray):
        values = torch.from_numpy(np.ascontiguousarray(values)) if values.dtype != object else values.tolist()
    if isinstance(values, Tensor):
        return tuple(int(v) for v in values.reshape(-1).tolist())
    if not isinstance(values, (Sequence, range)):
        return (operator.index(values),)
    return tuple(int(v.item()) if isinstance(v, Tensor) else operator.index(v) for v in values)


def as_request(item: Any, output_dtype: torch.dtype | str = torch.uint8) -> DecodeRequest:
    """`item` if it is a `DecodeRequest`, else a whole-file request for it as
    a source, in `output_dtype`."""
    return item if isinstance(item, DecodeRequest) else DecodeRequest(item, output_dtype=output_dtype)
