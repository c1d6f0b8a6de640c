"""Exception types.

framefeed raises the built-in exception types torchcodec users already catch;
where torchcodec raises a different type than the contract asks for, the
exception inherits from both so either `except` clause works.
"""

from __future__ import annotations


class FrameTimeOutOfRangeError(IndexError, RuntimeError):
    """A requested timestamp lies outside `[begin_stream_seconds, end_stream_seconds)`.

    Both an `IndexError` (the contract) and a `RuntimeError` (what torchcodec
    raises for `get_frames_played_at`).
    """


class VideoOpenError(ValueError, RuntimeError):
    """The source could not be opened or holds no decodable video.

    A `ValueError` (bad input value) and a `RuntimeError` (what torchcodec
    raises when FFmpeg cannot open the input).
    """


class VideoFileNotFoundError(FileNotFoundError, VideoOpenError):
    """A path source that does not exist."""


class DecodingError(RuntimeError):
    """The stream could not be decoded (corrupt or truncated data)."""


class CudaUnavailableError(RuntimeError):
    """A CUDA device was requested but cannot be used."""
