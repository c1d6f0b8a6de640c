"""Argument checks shared by the decoder and the samplers."""

from __future__ import annotations

import math
import numbers
from typing import Any


def require_int(name: str, value: Any) -> int:
    """`value` as an int. bool is refused although Python counts it as an int:
    `num_clips=True` is a mistake, not a request for one clip.

    Raises:
        TypeError: not an integer.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    return int(value)


def require_seconds(name: str, value: Any) -> float:
    """`value` (seconds) as a float.

    Raises:
        TypeError: not a real number (bool refused).
        ValueError: NaN, since no comparison with it holds.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number of seconds, got {value!r} ({type(value).__name__})")
    seconds = float(value)
    if math.isnan(seconds):
        raise ValueError(f"Invalid {name}: NaN ({name} ({value}) must be a number, not NaN)")
    return seconds
