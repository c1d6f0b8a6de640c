"""Normalising the decoding methods' arguments the way torchcodec accepts them.

Each helper takes what a torchcodec user may pass (ints, numpy scalars, 0-d
tensors, tensors of any integer or floating dtype, lists, `None` for a slice
bound) and returns plain Python values, or raises the exception type
torchcodec raises for the same call, with its phrase plus the bad value and
the valid range. Where torchcodec's type comes from an implementation detail
(a RuntimeError from its C++ operator dispatcher where Python code would
raise TypeError), the exception inherits from both types, so either
`except` clause catches it.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from framefeed.errors import FrameTimeOutOfRangeError


class ArgumentTypeError(TypeError, RuntimeError):
    """An argument of the wrong type (torchcodec's operators raise RuntimeError)."""


class ArgumentValueTypeError(TypeError, ValueError):
    """An argument of the wrong type where torchcodec raises ValueError."""


class ArgumentValueError(ValueError, RuntimeError):
    """A bad value torchcodec's C++ checks reject with RuntimeError (e.g. fps <= 0)."""


class UnsupportedDeviceError(ValueError, RuntimeError):
    """A device framefeed cannot decode on (torchcodec: RuntimeError "Unknown device type")."""


# -- frame indices ------------------------------------------------------------------


def frame_index(value: Any, num_frames: int) -> int:
    """The non-negative position of frame `value` (negative counts from the end).

    Accepts ints (bool included, as Python counts it), numpy integers, and
    one-element tensors of any integer or floating dtype holding a whole number.

    Raises:
        ArgumentTypeError (TypeError, RuntimeError): not an integer.
        IndexError: outside `[-num_frames, num_frames)`.
    """
    if isinstance(value, Tensor):
        index = _whole_tensor_values(value.reshape(-1), "frame_index")[0] if value.numel() == 1 else None
        if index is None:
            raise ArgumentTypeError(
                f"Expected a value of type 'int' for argument 'frame_index' but instead found a tensor "
                f"of shape {tuple(value.shape)}: pass one index"
            )
        return check_frame_index(index, num_frames)
    try:
        index = operator.index(value)
    except TypeError:
        raise ArgumentTypeError(
            f"Expected a value of type 'int' for argument 'frame_index' but instead found type "
            f"'{type(value).__name__}' ({value!r})"
        ) from None
    return check_frame_index(index, num_frames)


def check_frame_index(index: int, num_frames: int) -> int:
    """`index` made non-negative, or IndexError with torchcodec's phrase and the valid range."""
    if 0 <= index < num_frames:
        return index
    if -num_frames <= index < 0:
        return index + num_frames
    if index < 0:
        raise IndexError(
            f"Invalid frame index={index}; negative indices must have an absolute value less than the "
            f"number of frames ({num_frames}): valid indices are in [-{num_frames}, {num_frames})"
        )
    raise IndexError(
        f"Invalid frame index={index}; must be less than {num_frames}: valid indices are in "
        f"[-{num_frames}, {num_frames})"
    )


def frame_indices(values: Any, num_frames: int) -> list[int]:
    """Positions of the frames at `values`, in order (duplicates kept).

    Accepts a tensor or numpy array of any integer or floating dtype (whole
    values; any shape, read flattened), a sequence of integers (or one-element
    integer tensors), or a single integer (one frame).

    Raises:
        ArgumentTypeError (TypeError, RuntimeError): floats in a list, strings,
            boolean or complex tensors, fractional values.
        IndexError: an index outside `[-num_frames, num_frames)`.
    """
    if isinstance(values, np.ndarray):
        values = torch.from_numpy(np.ascontiguousarray(values)) if values.dtype != object else values.tolist()
    if isinstance(values, Tensor):
        indices = _whole_tensor_values(values.reshape(-1), "indices")
        if indices and (min(indices) < -num_frames or max(indices) >= num_frames):
            for index in indices:
                check_frame_index(index, num_frames)
        return [i + num_frames if i < 0 else i for i in indices]
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, range)):
        if isinstance(values, numbers.Integral):
            return [frame_index(values, num_frames)]
        raise ArgumentTypeError(
            f"indices must be a list of ints or a tensor of indices, got {type(values).__name__} ({values!r})"
        )
    positions = []
    for value in values:
        if isinstance(value, Tensor) and value.numel() == 1 and not value.is_floating_point():
            value = value.item()
        if isinstance(value, float) or isinstance(value, np.floating):
            raise ArgumentTypeError(
                f"indices must be integers: expected scalar type Long but found Float ({value!r} in the list; "
                "torchcodec 0.17: expected scalar type torch::headeronly::ScalarType::Long but found Float); "
                "pass ints, or a tensor"
            )
        positions.append(frame_index(value, num_frames))
    return positions


def _whole_tensor_values(flat: Tensor, name: str) -> list[int]:
    """The values of a 1-D integer or floating tensor as ints; floats must be whole."""
    if flat.dtype == torch.bool or flat.is_complex() or not (flat.is_floating_point() or _is_integer_dtype(flat)):
        raise ArgumentTypeError(
            f"{name} must be an integer or floating tensor of frame indices, got dtype {flat.dtype}"
            + (" (a boolean mask is not a list of indices: use mask.nonzero())" if flat.dtype == torch.bool else "")
        )
    if flat.is_floating_point():
        values = flat.to(torch.float64).tolist()
        bad = [v for v in values if not (math.isfinite(v) and v == int(v))]
        if bad:
            raise ArgumentTypeError(f"{name} must hold whole numbers, got {bad[0]!r} in a tensor of {flat.dtype}")
        return [int(v) for v in values]
    return flat.tolist()


def _is_integer_dtype(tensor: Tensor) -> bool:
    return not tensor.is_floating_point() and not tensor.is_complex() and tensor.dtype != torch.bool


def index_range(start: Any, stop: Any, step: Any, num_frames: int) -> range:
    """Positions `start, start + step, ...` before `stop`, with Python slice
    semantics: None means the natural end, bounds are clamped, negative
    values count from the end.

    Raises:
        TypeError: a bound that is not an integer or None.
        ValueError: `step` is 0.
    """
    try:
        return range(*slice(start, stop, step).indices(num_frames))
    except (TypeError, ValueError) as error:
        raise type(error)(f"{error} (got start={start!r}, stop={stop!r}, step={step!r})") from None


# -- seconds ----------------------------------------------------------------------------


def seconds_scalar(value: Any, name: str) -> float:
    """A time in seconds: a real number or a one-element numeric tensor.
    NaN passes through (the range check then rejects it, as torchcodec does).

    Raises:
        TypeError: anything else.
    """
    if isinstance(value, Tensor) and value.numel() == 1 and value.dtype != torch.bool and not value.is_complex():
        return float(value.item())
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number of seconds, got {value!r} ({type(value).__name__})")
    return float(value)


def seconds_list(values: Any) -> list[float]:
    """Times in seconds from a numeric tensor or array of any dtype and shape
    (read flattened), a sequence of numbers, or a single number.

    Raises:
        ArgumentValueTypeError (TypeError, ValueError): values that are not
            numbers ("Couldn't convert timestamps input to a tensor").
    """
    if isinstance(values, np.ndarray) and values.dtype != object:
        values = torch.from_numpy(np.ascontiguousarray(values))
    if isinstance(values, Tensor):
        if values.dtype == torch.bool or values.is_complex():
            raise ArgumentValueTypeError(f"seconds must be a real-valued tensor, got dtype {values.dtype}")
        return values.reshape(-1).to(torch.float64).tolist()
    if isinstance(values, numbers.Real) and not isinstance(values, bool):
        return [float(values)]
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, range)):
        raise ArgumentValueTypeError(
            f"Couldn't convert timestamps input to a tensor: expected a list of seconds or a tensor, "
            f"got {type(values).__name__} ({values!r})"
        )
    try:
        return [seconds_scalar(v, "seconds") for v in values]
    except TypeError as error:
        raise ArgumentValueTypeError(f"Couldn't convert timestamps input to a tensor: {error}") from None


def check_played_time(when: float, begin: float, end: float, *, batch: bool) -> float:
    """`when` if a frame is displayed then, i.e. `begin <= when < end`.

    Raises:
        IndexError (single-frame methods), or FrameTimeOutOfRangeError (an
        IndexError and RuntimeError, what torchcodec's batch method raises).
    """
    if begin <= when < end:
        return when
    message = f"Invalid pts in seconds: {when}. It must be greater than or equal to {begin} and less than {end}."
    if batch:
        bound = f"greater than or equal to {begin:f}" if not when >= begin else f"less than {end:f}"
        raise FrameTimeOutOfRangeError(f"{message} (frame pts is {when:f}; must be {bound}.)")
    raise IndexError(message)


# -- constructor arguments --------------------------------------------------------------


def thread_count(value: Any) -> int:
    """`num_ffmpeg_threads`: an int >= 0 (bool counts as an int, as in torchcodec).

    Raises:
        ArgumentValueTypeError: None (torchcodec: ValueError).
        ArgumentTypeError: another non-integer (torchcodec: RuntimeError).
        ValueError: a negative count.
    """
    if value is None:
        raise ArgumentValueTypeError("num_ffmpeg_threads = None should be an int. Use 0 to let FFmpeg choose.")
    try:
        count = operator.index(value)
    except TypeError:
        raise ArgumentTypeError(
            f"Expected a value of type 'Optional[int]' for argument 'num_threads' but instead found type "
            f"'{type(value).__name__}': num_ffmpeg_threads must be an int, got {value!r}"
        ) from None
    if count < 0:
        raise ValueError(f"Invalid num_ffmpeg_threads ({count}): use 0 (FFmpeg chooses) or more")
    return count


def check_device_type(device: Any) -> None:
    """Refuse devices framefeed cannot decode on, with torchcodec's phrase.
    (What the device resolves to is `backend_selection.resolve_device`'s job.)

    Raises:
        ArgumentTypeError: not None, a str or a torch.device.
        UnsupportedDeviceError (ValueError, RuntimeError): not a CPU or CUDA device.
    """
    if device is None or isinstance(device, torch.device):
        kind = None if device is None else device.type
    elif isinstance(device, str):
        kind = device.split(":", 1)[0].strip()
    else:
        # torchcodec 0.13's phrase, then 0.17's (which reads the value as a device name).
        raise ArgumentTypeError(
            f"Expected a value of type 'str' for argument 'device' but instead found type "
            f"'{type(device).__name__}' (Unknown device type: {device}): device must be None, a str or a "
            f"torch.device, got {device!r}"
        )
    if kind is not None and kind not in ("cpu", "cuda"):
        raise UnsupportedDeviceError(
            f"Unknown device type: {kind}. Invalid device {device!r}: framefeed decodes on 'cpu', 'cuda' or 'cuda:N'"
        )


# -- output dtype -------------------------------------------------------------------------

OUTPUT_DTYPES = ("uint8", "float32", "auto")
"""The `output_dtype` values as plain names (how the service and Ray carry them)."""

_DTYPE_NAMES = {torch.uint8: "uint8", torch.float32: "float32"}
_NAMED_DTYPES = {"uint8": torch.uint8, "float32": torch.float32}


def output_dtype(value: Any) -> torch.dtype | str:
    """torchcodec 0.17's `output_dtype`: `torch.uint8` (values in [0, 255], the
    default), `torch.float32` (values in [0, 1]) or `"auto"` (uint8 for SDR
    content, float32 for HDR: see `resolve_output_dtype`). Returned as given.

    Raises:
        ValueError: anything else, naming the value and the allowed ones
            (torchcodec's phrase "Invalid output_dtype (...)").
    """
    if isinstance(value, str):
        if value == "auto":
            return value
    elif isinstance(value, torch.dtype) and value in _DTYPE_NAMES:
        return value
    raise ValueError(
        f"Invalid output_dtype ({value}). Supported values are torch.uint8, torch.float32, and 'auto'."
    )


def output_dtype_name(value: Any) -> str:
    """`output_dtype` (as `output_dtype` accepts it, or one of `OUTPUT_DTYPES`)
    as a plain name: "uint8", "float32" or "auto"."""
    if isinstance(value, str) and value in OUTPUT_DTYPES:
        return value
    checked = output_dtype(value)
    return checked if isinstance(checked, str) else _DTYPE_NAMES[checked]


def output_dtype_from_name(name: Any) -> torch.dtype | str:
    """The inverse of `output_dtype_name` (also accepts what `output_dtype` does).

    Raises:
        ValueError: not one of `OUTPUT_DTYPES` (nor a valid `output_dtype`).
    """
    if isinstance(name, str) and name in _NAMED_DTYPES:
        return _NAMED_DTYPES[name]
    return output_dtype(name)


def resolve_output_dtype(requested: torch.dtype | str, pixel_format: str | None) -> torch.dtype:
    """The dtype frames of a stream with `pixel_format` (FFmpeg's name, as the
    container declares it) are returned in. `"auto"` decides as torchcodec
    0.17 does: float32 when the format's first component (luma) has more than
    8 bits (10- and 12-bit HDR sources), else uint8 (also for an unknown format).
    """
    if requested != "auto":
        return requested  # type: ignore[return-value]
    return torch.float32 if pixel_format_bits(pixel_format) > 8 else torch.uint8


def pixel_format_bits(pixel_format: str | None) -> int:
    """Bits of the first component of `pixel_format` (0 when unknown)."""
    if not pixel_format:
        return 0
    import av  # the argument helpers stay importable without PyAV's codecs loaded

    try:
        components = av.VideoFormat(pixel_format).components
    except (ValueError, av.error.FFmpegError):
        return 0
    return int(components[0].bits) if components else 0
