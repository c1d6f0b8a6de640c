"""Decoding through torch custom operators, so `torch.compile(fullgraph=True)`
can trace functions that call the decoding methods.

Under `torch.compile` the decoding methods call the operators below instead
of running their Python body (eager calls never come here: the check is one
`torch.compiler.is_compiling()` call). An operator finds its decoder in a
registry keyed by an int id (`decoder._op_id`, a constant in the traced
graph), runs the eager method, and returns the pixels in the decoder's
native buffer layout plus CPU float64 timestamps. The fake (meta)
implementations give the same shapes, dtypes, devices and strides: frame
size and channel layout come from the registered decoder; batch sizes from
the index/time tensors, or a dynamic size where only decoding knows it.

Inside a compiled graph, `Frame.pts_seconds` and `Frame.duration_seconds` are
0-d float64 tensors (a Python float would force a graph break).
"""

from __future__ import annotations

import itertools
import weakref
from typing import Any

import torch
from torch import Tensor

from framefeed.frames import Frame, FrameBatch

_DECODERS: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
_NEXT_ID = itertools.count(1)

_Outputs = tuple[Tensor, Tensor, Tensor]


def register(decoder: Any) -> int:
    """A new id under which the operators find `decoder` (held weakly)."""
    decoder_id = next(_NEXT_ID)
    _DECODERS[decoder_id] = decoder
    return decoder_id


def _decoder(decoder_id: int) -> Any:
    decoder = _DECODERS.get(decoder_id)
    if decoder is None:
        raise RuntimeError(f"The framefeed VideoDecoder with id {decoder_id} no longer exists")
    return decoder


def _hwc_buffer_behind_nchw(decoder: Any) -> bool:
    """Whether the decoder's NCHW output is a channels-last buffer seen through
    a permutation (the CPU backend's native layout)."""
    return decoder._dimension_order == "NCHW" and not decoder._backend.channels_first_output


def _native(decoder: Any, data: Tensor) -> Tensor:
    """The eager output in its buffer's own (contiguous) layout."""
    if _hwc_buffer_behind_nchw(decoder):
        data = data.movedim(-3, -1)
    return data.contiguous()


def _ordered(decoder: Any, data: Tensor) -> Tensor:
    """Native layout -> the decoder's `dimension_order` (a view)."""
    return data.movedim(-1, -3) if _hwc_buffer_behind_nchw(decoder) else data


def _fake_pixels(decoder: Any, count: Any | None) -> Tensor:
    height, width = decoder._height, decoder._width
    frame_shape = (3, height, width) if not _hwc_buffer_behind_nchw(decoder) and decoder._dimension_order == "NCHW" \
        else (height, width, 3)
    shape = frame_shape if count is None else (count, *frame_shape)
    return torch.empty(shape, dtype=decoder._output_dtype, device=decoder._device)


def _fake_times(count: Any | None) -> tuple[Tensor, Tensor]:
    shape = () if count is None else (count,)
    return torch.empty(shape, dtype=torch.float64), torch.empty(shape, dtype=torch.float64)


def _frame_outputs(decoder: Any, frame: Frame) -> _Outputs:
    return (
        _native(decoder, frame.data),
        torch.tensor(frame.pts_seconds, dtype=torch.float64),
        torch.tensor(frame.duration_seconds, dtype=torch.float64),
    )


def _batch_outputs(decoder: Any, batch: FrameBatch) -> _Outputs:
    return _native(decoder, batch.data), batch.pts_seconds.clone(), batch.duration_seconds.clone()


def _dynamic_count() -> Any:
    return torch.library.get_ctx().new_dynamic_size()


# -- operators ------------------------------------------------------------------------


@torch.library.custom_op("framefeed::get_frame_at", mutates_args=())
def _get_frame_at(decoder_id: int, index: int) -> _Outputs:
    decoder = _decoder(decoder_id)
    return _frame_outputs(decoder, decoder.get_frame_at(index))


@_get_frame_at.register_fake
def _(decoder_id: int, index: int) -> _Outputs:
    return (_fake_pixels(_decoder(decoder_id), None), *_fake_times(None))


@torch.library.custom_op("framefeed::get_frame_played_at", mutates_args=())
def _get_frame_played_at(decoder_id: int, seconds: float) -> _Outputs:
    decoder = _decoder(decoder_id)
    return _frame_outputs(decoder, decoder.get_frame_played_at(seconds))


@_get_frame_played_at.register_fake
def _(decoder_id: int, seconds: float) -> _Outputs:
    return (_fake_pixels(_decoder(decoder_id), None), *_fake_times(None))


@torch.library.custom_op("framefeed::get_frames_at", mutates_args=())
def _get_frames_at(decoder_id: int, indices: Tensor) -> _Outputs:
    decoder = _decoder(decoder_id)
    return _batch_outputs(decoder, decoder.get_frames_at(indices))


@_get_frames_at.register_fake
def _(decoder_id: int, indices: Tensor) -> _Outputs:
    count = indices.numel()
    return (_fake_pixels(_decoder(decoder_id), count), *_fake_times(count))


@torch.library.custom_op("framefeed::get_frames_played_at", mutates_args=())
def _get_frames_played_at(decoder_id: int, seconds: Tensor) -> _Outputs:
    decoder = _decoder(decoder_id)
    return _batch_outputs(decoder, decoder.get_frames_played_at(seconds))


@_get_frames_played_at.register_fake
def _(decoder_id: int, seconds: Tensor) -> _Outputs:
    count = seconds.numel()
    return (_fake_pixels(_decoder(decoder_id), count), *_fake_times(count))


@torch.library.custom_op("framefeed::get_frames_in_range", mutates_args=())
def _get_frames_in_range(decoder_id: int, start: int | None, stop: int | None, step: int | None) -> _Outputs:
    decoder = _decoder(decoder_id)
    return _batch_outputs(decoder, decoder.get_frames_in_range(start, stop, step))


@_get_frames_in_range.register_fake
def _(decoder_id: int, start: int | None, stop: int | None, step: int | None) -> _Outputs:
    decoder = _decoder(decoder_id)
    bounds = (start, stop, step)
    if all(value is None or type(value) is int for value in bounds) and step != 0:
        count: Any = len(range(*slice(*bounds).indices(len(decoder))))
    else:
        count = _dynamic_count()
    return (_fake_pixels(decoder, count), *_fake_times(count))


@torch.library.custom_op("framefeed::get_frames_played_in_range", mutates_args=())
def _get_frames_played_in_range(decoder_id: int, start: float, stop: float, fps: float | None) -> _Outputs:
    decoder = _decoder(decoder_id)
    return _batch_outputs(decoder, decoder.get_frames_played_in_range(start, stop, fps))


@_get_frames_played_in_range.register_fake
def _(decoder_id: int, start: float, stop: float, fps: float | None) -> _Outputs:
    count = _dynamic_count()
    return (_fake_pixels(_decoder(decoder_id), count), *_fake_times(count))


@torch.library.custom_op("framefeed::get_all_frames", mutates_args=())
def _get_all_frames(decoder_id: int, fps: float | None) -> _Outputs:
    decoder = _decoder(decoder_id)
    return _batch_outputs(decoder, decoder.get_all_frames(fps))


@_get_all_frames.register_fake
def _(decoder_id: int, fps: float | None) -> _Outputs:
    decoder = _decoder(decoder_id)
    count = len(decoder) if fps is None and decoder._timeline.exact else _dynamic_count()
    return (_fake_pixels(decoder, count), *_fake_times(count))


# -- what the decoding methods call while being compiled ----------------------------------


def frame_at(decoder: Any, index: int) -> Frame:
    data, pts, duration = torch.ops.framefeed.get_frame_at(decoder._op_id, index)
    return Frame(_ordered(decoder, data), pts, duration)


def frame_played_at(decoder: Any, seconds: float) -> Frame:
    data, pts, duration = torch.ops.framefeed.get_frame_played_at(decoder._op_id, seconds)
    return Frame(_ordered(decoder, data), pts, duration)


def getitem(decoder: Any, key: Any) -> Tensor:
    if isinstance(key, slice):
        return frames_in_range(decoder, key.start, key.stop, key.step).data
    return frame_at(decoder, key).data


def _batch(decoder: Any, outputs: _Outputs) -> FrameBatch:
    data, pts, duration = outputs
    return FrameBatch(_ordered(decoder, data), pts, duration)


def frames_at(decoder: Any, indices: Any) -> FrameBatch:
    if not isinstance(indices, Tensor):
        indices = torch.tensor(indices, dtype=torch.int64)
    return _batch(decoder, torch.ops.framefeed.get_frames_at(decoder._op_id, indices))


def frames_played_at(decoder: Any, seconds: Any) -> FrameBatch:
    if not isinstance(seconds, Tensor):
        seconds = torch.tensor(seconds, dtype=torch.float64)
    return _batch(decoder, torch.ops.framefeed.get_frames_played_at(decoder._op_id, seconds))


def frames_in_range(decoder: Any, start: Any, stop: Any, step: Any) -> FrameBatch:
    return _batch(decoder, torch.ops.framefeed.get_frames_in_range(decoder._op_id, start, stop, step))


def frames_played_in_range(decoder: Any, start: float, stop: float, fps: float | None) -> FrameBatch:
    return _batch(decoder, torch.ops.framefeed.get_frames_played_in_range(decoder._op_id, start, stop, fps))


def all_frames(decoder: Any, fps: float | None) -> FrameBatch:
    return _batch(decoder, torch.ops.framefeed.get_all_frames(decoder._op_id, fps))
