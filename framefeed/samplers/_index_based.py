"""Clips whose frames are chosen by index: `clips_at_random_indices` and
`clips_at_regular_indices`.

A clip starting at index `s` holds the frames `s, s + d, s + 2d, ...`
(`d = num_indices_between_frames`), `num_frames_per_clip` of them. Clip starts
are drawn from the half-open range `[sampling_range_start, sampling_range_end)`,
with exactly torchcodec's torch RNG calls so that a seed gives the same clips.
"""

from __future__ import annotations

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
    require_int,
)


@accepts_pooled_videos
@public_api(DecodingError)
def clips_at_random_indices(
    decoder: VideoDecoder,
    *,
    num_clips: int = 1,
    num_frames_per_clip: int = 1,
    num_indices_between_frames: int = 1,
    sampling_range_start: int = 0,
    sampling_range_end: int | None = None,
    policy: Policy = "repeat_last",
) -> FrameBatch:
    """`num_clips` clips starting at uniformly random frame indices.

    Starts are `torch.randint(low=start, high=end, size=(num_clips,))` on
    torch's global RNG (the only randomness used), so `torch.manual_seed(s)`
    reproduces them, and they equal torchcodec's for the same seed.

    Args:
        decoder: the `VideoDecoder` to sample from (exact or approximate mode).
        num_clips: number of clips, > 0.
        num_frames_per_clip: frames in each clip, > 0.
        num_indices_between_frames: index step between consecutive frames of
            a clip ("dilation"), > 0. A clip spans
            `num_indices_between_frames * (num_frames_per_clip - 1) + 1` indices.
        sampling_range_start: first index a clip may start at; negative counts
            from the end. Must lie in `[-len(decoder), len(decoder))`.
        sampling_range_end: exclusive bound on where a clip may *start* (clips
            may extend past it); negative counts from the end, values above
            `len(decoder)` are clamped to it. None: `max(len - span + 1, 1)`,
            the last start whose clip fits in the video.
        policy: how a clip that runs past the last frame is completed:
            "repeat_last" repeats its last index, "wrap" cycles the clip from its
            start, "error" raises ValueError.

    Returns:
        A 5-D `FrameBatch`: data `(num_clips, num_frames_per_clip, C, H, W)`
        (or `H, W, C` per the decoder's `dimension_order`) on the decoder's
        device; `pts_seconds` and `duration_seconds` `(num_clips,
        num_frames_per_clip)` float64 on CPU, in seconds.

    Raises:
        TypeError: arguments of the wrong type (bool is not an int here).
        ValueError: `num_clips`, `num_frames_per_clip` or
            `num_indices_between_frames` <= 0; unknown `policy`; a decoder with no
            frames; `sampling_range_start` outside the video; a range whose start
            is not before its end; a clip past the end with `policy="error"`.
    """
    request = _check_arguments(
        decoder, num_clips, num_frames_per_clip, num_indices_between_frames,
        sampling_range_start, sampling_range_end, policy,
    )
    starts = torch.randint(low=request.start, high=request.end, size=(request.num_clips,))
    return _decode_clips(decoder, request, starts.tolist())


@accepts_pooled_videos
@public_api(DecodingError)
def clips_at_regular_indices(
    decoder: VideoDecoder,
    *,
    num_clips: int = 1,
    num_frames_per_clip: int = 1,
    num_indices_between_frames: int = 1,
    sampling_range_start: int = 0,
    sampling_range_end: int | None = None,
    policy: Policy = "repeat_last",
) -> FrameBatch:
    """`num_clips` clips starting at evenly spaced frame indices.

    Starts are `torch.linspace(start, end - 1, steps=num_clips, dtype=torch.int)`:
    the first at `start`, the last at `end - 1` (with more clips than indices
    in the range, some starts repeat). No randomness is used.

    Arguments, return value and errors are those of `clips_at_random_indices`.
    """
    request = _check_arguments(
        decoder, num_clips, num_frames_per_clip, num_indices_between_frames,
        sampling_range_start, sampling_range_end, policy,
    )
    starts = torch.linspace(
        request.start, request.end - 1, steps=request.num_clips, dtype=torch.int
    )
    return _decode_clips(decoder, request, starts.tolist())


@dataclass(frozen=True)
class _IndexClipRequest:
    """Validated arguments. Clip starts are drawn from `[start, end)`, both
    non-negative indices with `start < end <= num_frames`."""

    num_frames: int
    num_clips: int
    num_frames_per_clip: int
    step: int
    start: int
    end: int
    policy: str

    @property
    def span(self) -> int:
        return clip_span(self.step, self.num_frames_per_clip)


def clip_span(num_indices_between_frames: int, num_frames_per_clip: int) -> int:
    """Indices from a clip's first frame to its last, both included (with
    dilation 2, four frames span 7 indices: f.f.f.f)."""
    return num_indices_between_frames * (num_frames_per_clip - 1) + 1


def _check_arguments(
    decoder: Any, num_clips: Any, num_frames_per_clip: Any, num_indices_between_frames: Any,
    sampling_range_start: Any, sampling_range_end: Any, policy: Any,
) -> _IndexClipRequest:
    # Types first, then values in torchcodec's order.
    count = require_int("num_clips", num_clips)
    step = require_int("num_indices_between_frames", num_indices_between_frames)
    given_start = require_int("sampling_range_start", sampling_range_start)
    given_end = None if sampling_range_end is None else require_int("sampling_range_end", sampling_range_end)
    num_frames, frames_per_clip, policy = check_decoder_and_clip_shape(
        decoder, "get_frames_at", num_frames_per_clip, policy
    )
    count = check_num_clips(count)
    if step <= 0:
        raise ValueError(f"num_indices_between_frames ({step}) must be strictly positive")
    span = clip_span(step, frames_per_clip)
    start, end = _sampling_range(num_frames, span, given_start, given_end)
    return _IndexClipRequest(
        num_frames=num_frames, num_clips=count, num_frames_per_clip=frames_per_clip, step=step,
        start=start, end=end, policy=policy,
    )


def _sampling_range(num_frames: int, span: int, given_start: int, given_end: int | None) -> tuple[int, int]:
    """`[start, end)` as non-negative indices, from the user's bounds.

    Messages open with torchcodec's phrases, which name the bounds after
    negative values are counted from the end (and the end clamped), as
    torchcodec checks them; what the user passed follows the phrase."""
    start = given_start + num_frames if given_start < 0 else given_start
    if start >= num_frames:
        raise ValueError(
            f"sampling_range_start ({start}) must be smaller than the number of frames ({num_frames})."
            + _given(start, given_start, "sampling_range_start")
        )
    if start < 0:
        raise ValueError(
            f"sampling_range_start ({given_start}) must be at least -{num_frames}: negative values count from the "
            f"end of the {num_frames}-frame video."
        )
    if given_end is None:
        # The last start whose whole clip fits; at least 1 so that a video
        # shorter than one clip still yields clips (completed by the policy).
        end = max(num_frames - span + 1, 1)
        if start >= end:
            raise ValueError(
                f"We determined that sampling_range_end should be {end}, but it is smaller than or equal to "
                f"sampling_range_start ({start}). Clips spanning {span} frames of a {num_frames}-frame video "
                f"must start before index {end}." + _given(start, given_start, "sampling_range_start")
            )
        return start, end
    end = given_end + num_frames if given_end < 0 else given_end
    end = min(end, num_frames)
    if start >= end:
        raise ValueError(
            f"sampling_range_start ({start}) must be smaller than sampling_range_end ({end})."
            + _given(start, given_start, "sampling_range_start") + _given(end, given_end, "sampling_range_end")
        )
    return start, end


def _given(resolved: int, given: int, name: str) -> str:
    """After a phrase naming `resolved`: what the user passed, when it differs."""
    if resolved == given:
        return ""
    why = "counted from the end" if given < 0 else "clamped to the number of frames"
    return f" ({name} was given as {given}, {why}.)"


def _decode_clips(decoder: Any, request: _IndexClipRequest, starts: list[int]) -> FrameBatch:
    """Every clip's indices, completed by the policy, decoded in one call
    (which decodes each distinct frame once) and reshaped into clips."""
    indices: list[int] = []
    for start in starts:
        clip = list(range(start, min(start + request.span, request.num_frames), request.step))
        if len(clip) < request.num_frames_per_clip:
            overrun = (
                f"the clip starting at index {start} reaches index {start + request.span - 1}, "
                f"but the last frame is {request.num_frames - 1}"
            )
            clip = complete_short_clip(clip, request.num_frames_per_clip, request.policy, overrun)
        indices.extend(clip)
    return decode_as_clips(decoder, "get_frames_at", indices, len(starts), request.num_frames_per_clip)
