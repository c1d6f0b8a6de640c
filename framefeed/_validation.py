"""Argument checks shared by the decoder and the samplers."""

from __future__ import annotations

import math
import numbers
from typing import Any


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
