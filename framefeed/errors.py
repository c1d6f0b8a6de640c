"""Exception types.

framefeed raises the built-in exception types torchcodec users already catch;
where torchcodec raises a different type than the contract asks for, the
exception inherits from both so either `except` clause works.

Only these leave the public API: `VideoOpenError` (and `VideoFileNotFoundError`),
`DecodingError` (and `FrameSizeChangedError`), `FrameTimeOutOfRangeError`,
`CudaUnavailableError`, and the
argument errors `TypeError`, `ValueError` and `IndexError`. `public_api`
enforces it at the boundary.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


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
    """A requested frame could not be produced from the data.

    Policy for damaged streams: framefeed returns a requested frame whenever
    FFmpeg outputs it (decoding from the frame's keyframe), and raises this
    when FFmpeg does not output it (its packets are damaged or missing), never
    returning a neighbouring frame in its place. Also raised when a file-like
    source fails to read, and for a time past the end of a truncated file
    whose header promises more.
    """


class FrameSizeChangedError(DecodingError):
    """A decoded frame's size differs from the stream's: its frame size changed
    mid-stream (a splice, an adaptive-bitrate switch). framefeed decodes a
    stream at the one size its metadata reports and writes nothing for such a
    frame; the message names the frame and both sizes.

    Attributes:
        frame_size: (width, height) of the decoded frame, after rotation.
        stream_size: (width, height) the stream's frames have.
    """

    def __init__(self, message: str, frame_size: tuple[int, int], stream_size: tuple[int, int]) -> None:
        super().__init__(message)
        self.frame_size = frame_size
        self.stream_size = stream_size

    def __reduce__(self) -> tuple:  # crosses process boundaries (pool, loader workers)
        return type(self), (str(self), self.frame_size, self.stream_size)


class CudaUnavailableError(RuntimeError):
    """A CUDA device was requested but cannot be used."""


# -- the public boundary -------------------------------------------------------------

_DOCUMENTED = (VideoOpenError, DecodingError, FrameTimeOutOfRangeError, CudaUnavailableError)
_CLOSED_MESSAGE = "This VideoDecoder is closed"


def ffmpeg_reason(error: BaseException) -> str:
    """FFmpeg's reason for a PyAV error, worded for a user.

    Many FFmpeg functions fail with the bare code -1, which reads as errno
    EPERM ("Operation not permitted") once converted: say what it is instead.
    """
    if _from_ffmpeg(error) and getattr(error, "errno", None) == 1:
        return "FFmpeg failed with its generic error code -1"
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


def _from_ffmpeg(error: BaseException) -> bool:
    return type(error).__module__.split(".")[0] == "av"


def _is_argument_error(error: BaseException) -> bool:
    """An argument error framefeed raised on purpose (as opposed to one leaking
    from numpy, torch or FFmpeg internals)."""
    if _from_ffmpeg(error):
        return False  # e.g. av.error.InvalidDataError is a ValueError: it is about the data
    if isinstance(error, IndexError):
        # framefeed's own index errors keep torchcodec's phrases ("Invalid frame
        # index", "Invalid pts in seconds"); numpy's "index 0 is out of bounds" is a bug.
        return str(error).startswith("Invalid")
    if isinstance(error, IsADirectoryError):
        return True  # a path source that names a directory
    return isinstance(error, (TypeError, ValueError))


def documented_error(error: Exception, failure: type[Exception], action: str) -> Exception | None:
    """None when `error` may leave the public API as it is; otherwise a
    `failure` (VideoOpenError or DecodingError) that says what went wrong,
    for the caller to raise `from error`."""
    if isinstance(error, _DOCUMENTED) and not _from_ffmpeg(error):
        if failure is VideoOpenError and isinstance(error, DecodingError):
            return VideoOpenError(f"{action} failed: {error}")  # data unreadable at open time
        return None
    if _is_argument_error(error):
        return None
    if type(error) is RuntimeError and str(error).startswith(_CLOSED_MESSAGE):
        return None
    if isinstance(error, MemoryError):
        return failure(f"{action} ran out of memory: {ffmpeg_reason(error)} (damaged or hostile input?)")
    if _from_ffmpeg(error):
        return failure(f"{action} failed: {ffmpeg_reason(error)} ({type(error).__name__} from FFmpeg)")
    return failure(f"{action} failed with an internal {type(error).__name__}: {error} (damaged input?)")


def public_api(failure: type[Exception]) -> Callable[[F], F]:
    """Decorator for public functions and methods: only documented exception
    types leave them (see `documented_error`); anything else becomes
    `failure`, the original chained as `__cause__`. A safety net: each known
    leak is also fixed where it arises. Generator functions are covered too."""

    def decorate(function: F) -> F:
        action = function.__qualname__.replace(".__init__", "")
        if inspect.isgeneratorfunction(function):

            @functools.wraps(function)
            def generator_wrapper(*args: Any, **kwargs: Any) -> Any:
                try:
                    yield from function(*args, **kwargs)
                except Exception as error:
                    replacement = documented_error(error, failure, action)
                    if replacement is None:
                        raise
                    raise replacement from error

            return generator_wrapper  # type: ignore[return-value]

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except Exception as error:
                replacement = documented_error(error, failure, action)
                if replacement is None:
                    raise
                raise replacement from error

        return wrapper  # type: ignore[return-value]

    return decorate
