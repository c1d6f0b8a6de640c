"""Argument checks shared by the decoder and the samplers."""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any

import torch


def require_int(name: str, value: Any) -> int:
    """`value` as an int. bool is refused although Python counts it as an int:
    `num_clips=True` is a mistake, not a request for one clip.

    Raises:
        TypeError: not an integer.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        # One-element integer tensors (and other __index__ types) count, as in torchcodec.
        if not isinstance(value, bool) and hasattr(type(value), "__index__"):
            try:
                return operator.index(value)
            except TypeError:
                pass
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    return int(value)


def require_seconds(name: str, value: Any) -> float:
    """`value` (seconds) as a float.

    Raises:
        TypeError: not a real number (bool refused).
        ValueError: NaN, since no comparison with it holds.
    """
    if isinstance(value, torch.Tensor) and value.numel() == 1 and (value.is_floating_point() or _is_int(value)):
        value = value.item()  # a one-element tensor, as torchcodec accepts
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number of seconds, got {value!r} ({type(value).__name__})")
    seconds = float(value)
    if math.isnan(seconds):
        raise ValueError(f"Invalid {name}: NaN ({name} ({value}) must be a number, not NaN)")
    return seconds


def _is_int(tensor: torch.Tensor) -> bool:
    return not tensor.is_floating_point() and not tensor.is_complex() and tensor.dtype != torch.bool
