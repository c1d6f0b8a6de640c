"""Clips whose frames are chosen by display time: `clips_at_random_timestamps`
and `clips_at_regular_timestamps`.

A clip starting at `s` seconds samples the times `s, s + dt, s + 2 dt, ...`
(`dt = seconds_between_frames`) and holds the frame *displayed* at each, as
`VideoDecoder.get_frames_played_at` finds it. Frames are chosen by their
timestamps, never by an index computed from a frame rate, so clips are right
on variable-frame-rate streams and in approximate seek mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from framefeed.decoders import VideoDecoder
from framefeed.errors import DecodingError, public_api
from framefeed.frames import FrameBatch
from framefeed.samplers._common import (
    Policy,
    accepts_pooled_videos,
    check_decoder_and_clip_shape,
    check_num_clips,
    complete_short_clip,
    decode_as_clips,
    require_positive_spacing,
    require_seconds,
)


@accepts_pooled_videos
@public_api(DecodingError)
def clips_at_random_timestamps(
    decoder: VideoDecoder,
    *,
    num_clips: int = 1,
    num_frames_per_clip: int = 1,
    seconds_between_frames: float | None = None,
    sampling_range_start: float | None = None,
    sampling_range_end: float | None = None,
    policy: Policy = "repeat_last",
) -> FrameBatch:
    """`num_clips` clips starting at uniformly random times.

    Starts are `torch.rand(num_clips, dtype=torch.float64) * (end - start) + start`
    on torch's global RNG (the only randomness used), so `torch.manual_seed(s)`
    reproduces them, and they equal torchcodec's for the same seed.

    Args:
        decoder: the `VideoDecoder` to sample from (exact or approximate mode).
        num_clips: number of clips, > 0.
        num_frames_per_clip: frames in each clip, > 0.
        seconds_between_frames: time between the sampling points of a clip,
            > 0. None: `1 / metadata.average_fps`, the average frame duration.
        sampling_range_start: earliest time (seconds) a clip may start at; in
            `[begin_stream_seconds, end_stream_seconds)`. None: `begin_stream_seconds`
            (not 0: some streams start elsewhere).
        sampling_range_end: exclusive bound on when a clip may *start* (clips
            may extend past it), clamped to `end_stream_seconds`. None:
            `end_stream_seconds - (num_frames_per_clip - 1) * seconds_between_frames`,
            so that every sampling time of every clip lies inside the stream.
        policy: how a clip whose sampling times reach `end_stream_seconds` is
            completed: "repeat_last" repeats its last in-stream time, "wrap"
            cycles the clip from its start, "error" raises ValueError.

    Returns:
        A 5-D `FrameBatch`: data `(num_clips, num_frames_per_clip, C, H, W)`
        (or `H, W, C` per the decoder's `dimension_order`) on the decoder's
        device; `pts_seconds` and `duration_seconds` `(num_clips,
        num_frames_per_clip)` float64 on CPU: the pts and duration of the frames
        displayed at the sampling times (not the sampling times themselves).

    Raises:
        TypeError: arguments of the wrong type (bool is not a number here).
        ValueError: `num_clips` or `num_frames_per_clip` <= 0; a spacing that is
            not a finite positive number; unknown `policy`; a decoder with no
            frames, or without the average frame rate the default spacing needs;
            `sampling_range_start` outside the stream; a range whose start is not
            before its end; a clip past the end with `policy="error"`.
    """
    _, frames_per_clip, policy = check_decoder_and_clip_shape(
        decoder, "get_frames_played_at", num_frames_per_clip, policy
    )
    count = check_num_clips(num_clips)
    request = _clip_request(
        decoder, frames_per_clip, policy, seconds_between_frames, sampling_range_start, sampling_range_end
    )
    width = request.end - request.start
    starts = torch.rand(count, dtype=torch.float64) * width + request.start
    return _decode_clips(decoder, request, starts.tolist())


@accepts_pooled_videos
@public_api(DecodingError)
def clips_at_regular_timestamps(
    decoder: VideoDecoder,
    *,
    seconds_between_clip_starts: float,
    num_frames_per_clip: int = 1,
    seconds_between_frames: float | None = None,
    sampling_range_start: float | None = None,
    sampling_range_end: float | None = None,
    policy: Policy = "repeat_last",
) -> FrameBatch:
    """Clips starting every `seconds_between_clip_starts` seconds.

    Starts are `torch.arange(start, end, seconds_between_clip_starts,
    dtype=torch.float64)`, keeping only values `< end` (arange may round one
    onto `end`); their number is the number of clips. No randomness is used.

    Args:
        seconds_between_clip_starts: time between consecutive clip starts, > 0.
        The others: as in `clips_at_random_timestamps`.

    Returns:
        As `clips_at_random_timestamps`; when no start fits in the range, an
        empty 5-D batch `(0, num_frames_per_clip, ...)`.

    Raises:
        As `clips_at_random_timestamps`, with `seconds_between_clip_starts` in
        place of `num_clips`.
    """
    _, frames_per_clip, policy = check_decoder_and_clip_shape(
        decoder, "get_frames_played_at", num_frames_per_clip, policy
    )
    spacing = require_positive_spacing("seconds_between_clip_starts", seconds_between_clip_starts)
    request = _clip_request(
        decoder, frames_per_clip, policy, seconds_between_frames, sampling_range_start, sampling_range_end
    )
    starts = torch.arange(request.start, request.end, spacing, dtype=torch.float64)
    starts = starts[starts < request.end]
    return _decode_clips(decoder, request, starts.tolist())


@dataclass(frozen=True)
class _TimeClipRequest:
    """Validated arguments, in seconds. Clip starts are drawn from `[start, end)`
    with `begin_stream_seconds <= start < end <= end_stream_seconds`."""

    num_frames_per_clip: int
    seconds_between_frames: float
    start: float
    end: float
    end_stream: float
    policy: str


def _clip_request(
    decoder: Any, num_frames_per_clip: int, policy: str, seconds_between_frames: Any,
    sampling_range_start: Any, sampling_range_end: Any,
) -> _TimeClipRequest:
    """Checks the remaining arguments against the decoder's metadata and
    resolves the defaults."""
    frame_spacing = (
        None
        if seconds_between_frames is None
        else require_positive_spacing("seconds_between_frames", seconds_between_frames)
    )
    given_start = None if sampling_range_start is None else require_seconds("sampling_range_start", sampling_range_start)
    given_end = None if sampling_range_end is None else require_seconds("sampling_range_end", sampling_range_end)

    metadata = decoder.metadata
    end_stream = metadata.end_stream_seconds
    if end_stream is None:
        raise ValueError(
            "Could not infer stream end from video metadata. Try using an index-based sampler instead."
        )
    end_stream = float(end_stream)
    # torchcodec treats a missing begin as 0 as well.
    begin_stream = float(metadata.begin_stream_seconds or 0.0)

    if frame_spacing is None:
        average_fps = metadata.average_fps
        if not average_fps or not 0 < average_fps < math.inf:
            raise ValueError(
                f"Could not infer average fps from video metadata (average_fps is {average_fps}). "
                "Pass seconds_between_frames, or try using an index-based sampler instead."
            )
        frame_spacing = 1 / average_fps

    start, end = _sampling_range(
        begin_stream, end_stream, given_start, given_end, num_frames_per_clip, frame_spacing,
        _as_given(sampling_range_start), _as_given(sampling_range_end),
    )
    return _TimeClipRequest(num_frames_per_clip, frame_spacing, start, end, end_stream, policy)


def _sampling_range(
    begin_stream: float, end_stream: float, given_start: float | None, given_end: float | None,
    num_frames_per_clip: int, seconds_between_frames: float, shown_start: Any = None, shown_end: Any = None,
) -> tuple[float, float]:
    """`[start, end)` in seconds. Messages show the bounds as the user gave
    them (`shown_start`, `shown_end`: `1000`, not `1000.0`), inside torchcodec's phrases."""
    shown_start = given_start if shown_start is None else shown_start
    shown_end = given_end if shown_end is None else shown_end
    if given_start is None:
        start = begin_stream
        shown_start = begin_stream
    elif given_start < begin_stream:
        raise ValueError(
            f"sampling_range_start ({shown_start}) must be at least {begin_stream} "
            "(begin_stream_seconds): it is before the start of the stream."
        )
    elif given_start >= end_stream:
        raise ValueError(
            f"sampling_range_start ({shown_start}) must be smaller than {end_stream} "
            "(end_stream_seconds): it is past the end of the stream."
        )
    else:
        start = given_start

    if given_end is None:
        # The latest start whose last sampling time is still inside the stream.
        end = end_stream - (num_frames_per_clip - 1) * seconds_between_frames
        shown_end = end
        why = (
            f" (the default: end_stream_seconds {end_stream} - (num_frames_per_clip - 1) * "
            f"seconds_between_frames {seconds_between_frames}; a clip that long does not fit after the start)"
        )
    elif given_end <= begin_stream:
        raise ValueError(
            f"sampling_range_end ({shown_end}) must be at least {begin_stream} (begin_stream_seconds): "
            "no clip could start before it."
        )
    else:
        end = given_end
        why = ""
    if start >= end:
        raise ValueError(
            f"sampling_range_start ({shown_start}) must be smaller than sampling_range_end ({shown_end}){why}."
        )
    return start, min(end, end_stream)


def _as_given(value: Any) -> Any:
    """A bound as the user wrote it, for messages (a one-element tensor as its number)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return value


def _decode_clips(decoder: Any, request: _TimeClipRequest, starts: list[float]) -> FrameBatch:
    """Every clip's sampling times, completed by the policy, decoded in one call
    (which decodes each distinct frame once) and reshaped into clips."""
    frames_per_clip = request.num_frames_per_clip
    spacing = request.seconds_between_frames
    times: list[float] = []
    for start in starts:
        # Python float arithmetic rounds exactly as torchcodec's float64 tensor
        # arithmetic does, so the sampling times match bit for bit.
        clip = [t for t in (start + i * spacing for i in range(frames_per_clip)) if t < request.end_stream]
        if len(clip) < frames_per_clip:
            overrun = (
                f"the clip starting at {start} s samples up to {start + (frames_per_clip - 1) * spacing} s, "
                f"but the stream ends at {request.end_stream} s"
            )
            clip = complete_short_clip(clip, frames_per_clip, request.policy, overrun)
        times.extend(clip)
    return decode_as_clips(decoder, "get_frames_played_at", times, len(starts), frames_per_clip)
