"""Warnings attributed to the user's line, not to framefeed's internals."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# Frames of these files are plumbing between framefeed's own frames.
_PASS_THROUGH = {os.path.abspath(contextlib.__file__)}


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """`warnings.warn` with the stack level of the first caller outside framefeed."""
    level = 2  # stacklevel 2 is warn_user's caller
    frame = sys._getframe(1)
    while frame is not None and (
        os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR)
        or os.path.abspath(frame.f_code.co_filename) in _PASS_THROUGH
    ):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
