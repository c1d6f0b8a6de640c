"""`DecodeRequest`: one video and which of its frames to decode, as a value.

A request names its frames one of four ways, exactly as the `VideoDecoder`
method it stands for:

- `indices`: `get_frames_at(indices)` (any order, duplicates allowed);
- `seconds`: `get_frames_played_at(seconds)`;
- `start` / `stop` / `step`: `get_frames_in_range(start, stop, step)`
  (half-open, Python slice clamping; a missing `start` is 0, a missing
  `stop` the frame count);
- none of these: `get_all_frames()`.

Argument types and the choice of kind are checked when the request is made
(in the caller's thread); whether the frames exist is checked against the
file when the pool opens it, and fails that request's future alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from framefeed._validation import require_int
from framefeed.decoders._video_decoder import (  # VideoDecoder's own checks
    _as_float_list,
    _as_int_list,
)

SEEK_MODES = ("exact", "approximate")
DIMENSION_ORDERS = ("NCHW", "NHWC")


@dataclass(frozen=True)
class DecodeRequest:
    """What to decode from one video (see the module docstring for the kinds).

    Attributes:
        source: anything `VideoDecoder` opens (path, URL, bytes, tensor, file object).
        indices: frame indices, negative counting from the end.
        seconds: display times in seconds.
        start, stop, step: an index range (`step` != 0).
        seek_mode: "exact" or "approximate", as for `VideoDecoder`.
        dimension_order: "NCHW" or "NHWC".
        transforms: callables applied in order to the batch's 4-D uint8 pixel
            tensor (in `dimension_order`, on the pool's device) after decoding,
            each returning the new pixel tensor; the frame count must not change.
        stream_index: the video stream, None for the best one.

    Raises (at construction):
        TypeError: indices or bounds that are not ints, seconds that are not
            numbers, transforms that are not callable.
        ValueError: more than one kind given, `step` 0, unknown `seek_mode` or
            `dimension_order`.
    """

    source: Any
    indices: tuple[int, ...] | None = None
    seconds: tuple[float, ...] | None = None
    start: int | None = None
    stop: int | None = None
    step: int = 1
    seek_mode: Literal["exact", "approximate"] = "exact"
    dimension_order: Literal["NCHW", "NHWC"] = "NCHW"
    transforms: tuple[Callable[[Any], Any], ...] = field(default=())
    stream_index: int | None = None

    def __post_init__(self) -> None:
        if self.seek_mode not in SEEK_MODES:
            raise ValueError(f"Invalid seek mode ({self.seek_mode!r}). Supported values are {', '.join(SEEK_MODES)}.")
        if self.dimension_order not in DIMENSION_ORDERS:
            raise ValueError(
                f"Invalid dimension order ({self.dimension_order!r}). "
                f"Supported values are {', '.join(DIMENSION_ORDERS)}."
            )
        is_range = self.start is not None or self.stop is not None or self.step != 1
        given = [name for name, present in (("indices", self.indices is not None),
                                            ("seconds", self.seconds is not None),
                                            ("start/stop/step", is_range)) if present]
        if len(given) > 1:
            raise ValueError(f"A request takes one of indices, seconds or start/stop/step, got {' and '.join(given)}")
        if self.indices is not None:
            object.__setattr__(self, "indices", tuple(_as_int_list(self.indices, "indices")))
        if self.seconds is not None:
            object.__setattr__(self, "seconds", tuple(_as_float_list(self.seconds, "seconds")))
        for name in ("start", "stop"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, require_int(name, value))
        object.__setattr__(self, "step", require_int("step", self.step))
        if self.step == 0:
            raise ValueError("Invalid step 0: step must be a non-zero int")
        transforms = () if self.transforms is None else self.transforms
        if callable(transforms):
            transforms = (transforms,)
        if not isinstance(transforms, Sequence):
            raise TypeError(f"transforms must be a sequence of callables, got {type(transforms).__name__}")
        for transform in transforms:
            if not callable(transform):
                raise TypeError(f"transforms must be callables, got {transform!r}")
        object.__setattr__(self, "transforms", tuple(transforms))

    @property
    def kind(self) -> Literal["indices", "seconds", "range", "all"]:
        """Which `VideoDecoder` method the request stands for."""
        if self.indices is not None:
            return "indices"
        if self.seconds is not None:
            return "seconds"
        if self.start is not None or self.stop is not None or self.step != 1:
            return "range"
        return "all"


def as_request(item: Any) -> DecodeRequest:
    """`item` if it is a `DecodeRequest`, else a whole-file request for it as a source."""
    return item if isinstance(item, DecodeRequest) else DecodeRequest(item)
