"""What the four samplers share: argument checks, the policies that complete
clips running past the end of the video, and the reshape of the one flat
batch each sampler decodes into `(num_clips, num_frames_per_clip, ...)`.

Error messages keep torchcodec's wording (user code matches on it) and add
the values involved.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from framefeed._validation import require_int, require_seconds
from framefeed.frames import FrameBatch

Policy = Literal["repeat_last", "wrap", "error"]
POLICIES: tuple[str, ...] = ("repeat_last", "wrap", "error")

_Value = TypeVar("_Value", int, float)
_Sampler = TypeVar("_Sampler", bound=Callable[..., Any])


# -- many videos at once ----------------------------------------------------------


def accepts_pooled_videos(sampler: _Sampler) -> _Sampler:
    """Let `sampler` take a `DecodePool.videos(...)` target as its decoder: it
    then runs once per source, in order, on the caller's thread (so torch's
    RNG is drawn exactly as a loop of per-decoder calls draws it) and returns
    a list with one `Future` of clips per source (see `framefeed.pool`)."""

    @functools.wraps(sampler)
    def run(decoder: Any, **kwargs: Any) -> Any:
        sample_each = getattr(decoder, "sample_each", None)
        if sample_each is not None:
            return sample_each(sampler, kwargs)
        return sampler(decoder, **kwargs)

    return run  # type: ignore[return-value]


# -- argument types -------------------------------------------------------------


def require_positive_spacing(name: str, value: Any) -> float:
    """A spacing in seconds: finite and > 0. An infinite one would put
    `0 * inf = NaN` into the first clip timestamp."""
    seconds = require_seconds(name, value)
    if not 0 < seconds < math.inf:
        raise ValueError(f"{name} ({value}) must be > 0 and finite")
    return seconds


# -- checks every sampler makes ---------------------------------------------------


def check_decoder_and_clip_shape(
    decoder: Any, decode_method: str, num_frames_per_clip: Any, policy: Any
) -> tuple[int, int, str]:
    """Checks shared by all samplers, in torchcodec's order (so a call with
    several mistakes reports the same one): the decoder has frames,
    `num_frames_per_clip` is positive, `policy` is known.

    Returns `(len(decoder), num_frames_per_clip, policy)`.

    Raises:
        TypeError: `decoder` lacks what the samplers use (`len()`, `metadata`,
            `decode_method`); `num_frames_per_clip` is not an int; `policy` is
            not a str.
        ValueError: no frames, `num_frames_per_clip <= 0`, unknown policy.
    """
    if not (
        hasattr(type(decoder), "__len__")
        and hasattr(decoder, "metadata")
        and callable(getattr(decoder, decode_method, None))
    ):
        raise TypeError(f"decoder must be a framefeed VideoDecoder, got {type(decoder).__name__}")
    frames_per_clip = require_int("num_frames_per_clip", num_frames_per_clip)
    if not isinstance(policy, str):
        raise TypeError(f"policy must be a str, one of {POLICIES}, got {policy!r} ({type(policy).__name__})")

    num_frames = len(decoder)
    if num_frames < 1:
        raise ValueError(f"Decoder must have at least one frame, found {num_frames} frames.")
    if frames_per_clip <= 0:
        raise ValueError(f"num_frames_per_clip ({frames_per_clip}) must be strictly positive")
    if policy not in POLICIES:
        raise ValueError(f"Invalid policy ({policy}). Supported values are {', '.join(POLICIES)}.")
    return num_frames, frames_per_clip, policy


def check_num_clips(value: Any) -> int:
    num_clips = require_int("num_clips", value)
    if num_clips <= 0:
        raise ValueError(f"num_clips ({num_clips}) must be > 0")
    return num_clips


# -- short clips ----------------------------------------------------------------------


def complete_short_clip(clip: list[_Value], num_frames_per_clip: int, policy: str, overrun: str) -> list[_Value]:
    """Pad `clip` (non-empty, shorter than `num_frames_per_clip` because it
    runs past the end of the video) as `policy` says.

    `"repeat_last"` repeats its last element, `"wrap"` cycles it from its
    start, `"error"` raises a ValueError that explains `overrun` (which clip,
    how far it reaches).
    """
    if policy == "repeat_last":
        return clip + [clip[-1]] * (num_frames_per_clip - len(clip))
    if policy == "wrap":
        return [clip[i % len(clip)] for i in range(num_frames_per_clip)]
    raise ValueError(
        "You set the 'error' policy, and the sampler tried to decode a frame that is beyond "
        f"the number of frames in the video: {overrun}. Try to leave sampling_range_end to its "
        "default value? (The default keeps every clip inside the video.)"
    )


# -- output -----------------------------------------------------------------------------


def decode_as_clips(decoder: Any, method: str, values: list[Any], num_clips: int, num_frames_per_clip: int) -> Any:
    """`decoder.<method>(values)` reshaped by `as_clips`. A pooled video
    (`framefeed.pool`) takes the frames as one request instead and returns a
    future of the clips."""
    submit_clips = getattr(decoder, "submit_clips", None)
    if submit_clips is not None:
        return submit_clips(method, values, (num_clips, num_frames_per_clip))
    return as_clips(getattr(decoder, method)(values), num_clips, num_frames_per_clip)


def as_clips(frames: FrameBatch, num_clips: int, num_frames_per_clip: int) -> FrameBatch:
    """The flat batch of `num_clips * num_frames_per_clip` frames, clip after
    clip, as a 5-D batch. Splitting the leading dimension is a view whatever
    the strides of the pixels (either channel order), so nothing is copied
    and the data stays on the decoder's device."""
    clip_shape = (num_clips, num_frames_per_clip)
    return FrameBatch(
        frames.data.unflatten(0, clip_shape),
        frames.pts_seconds.unflatten(0, clip_shape),
        frames.duration_seconds.unflatten(0, clip_shape),
    )
