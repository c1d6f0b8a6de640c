"""The test suite treats a DeprecationWarning raised from framefeed's own code
as an error (pyproject's `filterwarnings`), so a deprecated API we call fails
the test that reaches it instead of scrolling past as one of hundreds of
warnings."""

from __future__ import annotations

import warnings

import pytest


def _warn_from(module_name: str) -> None:
    namespace = {"__name__": module_name, "warnings": warnings}
    exec("def call():\n    warnings.warn('old API', DeprecationWarning)\n", namespace)  # noqa: S102
    namespace["call"]()


def test_deprecation_warnings_from_framefeed_modules_are_errors():
    with pytest.raises(DeprecationWarning, match="old API"):
        _warn_from("framefeed.engine.backends.gpu_decode.backend")


def test_deprecation_warnings_from_other_modules_stay_warnings():
    with pytest.warns(DeprecationWarning, match="old API"):
        _warn_from("some_dependency.module")
