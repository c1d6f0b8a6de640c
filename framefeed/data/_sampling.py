"""Which clips a `ClipDataset` item holds: the samplers by name, their
arguments checked up front, and a decoder stand-in that turns a sampler's
frames into a plan and its packets instead of pixels.

The samplers choose frames from `len(decoder)` and `decoder.metadata` with
torch's global RNG, then hand the whole selection to one decoder call. The
stand-in (`PlanningVideo`) has the same length and metadata as a
`VideoDecoder` of the same source and seek mode, so a seeded sampler picks
the same frames whether the item is decoded here or shipped as packets.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from framefeed.engine.bundling import build_bundle
from framefeed.engine.demux.metadata import VideoStreamMetadata
from framefeed.engine.opening import OpenedStream
from framefeed.engine.packets import PacketBundle
from framefeed.engine.plan import DecodePlan, build_plan
from framefeed.samplers import (
    clips_at_random_indices,
    clips_at_random_timestamps,
    clips_at_regular_indices,
    clips_at_regular_timestamps,
)
from framefeed.samplers._common import (
    check_decoder_and_clip_shape,
    complete_short_clip,
    decode_as_clips,
)
from framefeed.transforms import TransformPipeline


def clips_of_all_frames(decoder: Any, *, num_frames_per_clip: int = 1, policy: str = "repeat_last") -> Any:
    """Every frame, in consecutive clips of `num_frames_per_clip` (the
    `sampler="all"` of `ClipDataset`): clip k holds frames
    `[k * T, (k + 1) * T)`; a last clip cut short by the end of the video is
    completed by `policy` as in the other samplers ("repeat_last", "wrap",
    "error"). No randomness is used.

    Raises:
        TypeError, ValueError: as the other samplers for `num_frames_per_clip`
            and `policy`; a last clip cut short with `policy="error"`.
    """
    num_frames, frames_per_clip, policy = check_decoder_and_clip_shape(
        decoder, "get_frames_at", num_frames_per_clip, policy)
    indices: list[int] = []
    starts = range(0, num_frames, frames_per_clip)
    for start in starts:
        clip = list(range(start, min(start + frames_per_clip, num_frames)))
        if len(clip) < frames_per_clip:
            overrun = (f"the last clip starts at index {start} and needs {frames_per_clip} frames, "
                       f"but the last frame is {num_frames - 1}")
            clip = complete_short_clip(clip, frames_per_clip, policy, overrun)
        indices.extend(clip)
    return decode_as_clips(decoder, "get_frames_at", indices, len(starts), frames_per_clip)


SAMPLERS: dict[str, Callable[..., Any]] = {
    "random_indices": clips_at_random_indices,
    "regular_indices": clips_at_regular_indices,
    "random_timestamps": clips_at_random_timestamps,
    "regular_timestamps": clips_at_regular_timestamps,
    "all": clips_of_all_frames,
}


def resolve_sampler(name: Any, arguments: dict[str, Any]) -> Callable[..., Any]:
    """The sampler called `name`, after checking that it takes `arguments`
    (values are checked by the sampler itself, against each video).

    Raises:
        ValueError: an unknown sampler name.
        TypeError: a keyword the sampler does not take, or a missing required one.
    """
    if not isinstance(name, str) or name not in SAMPLERS:
        raise ValueError(f"Invalid sampler ({name!r}). Supported values are {', '.join(SAMPLERS)}.")
    sampler = SAMPLERS[name]
    parameters = dict(inspect.signature(sampler).parameters)
    parameters.pop("decoder")
    unknown = sorted(set(arguments) - set(parameters))
    if unknown:
        raise TypeError(f"sampler {name!r} takes no argument {', '.join(unknown)}; "
                        f"its arguments are {', '.join(parameters)}")
    missing = [p for p, spec in parameters.items() if spec.default is inspect.Parameter.empty and p not in arguments]
    if missing:
        raise TypeError(f"sampler {name!r} needs {', '.join(missing)}")
    return sampler


@dataclass
class PlannedClips:
    """A sampler's clips as a plan and its packets, not yet decoded (picklable).

    Attributes:
        plan: the decode plan; slot `k * T + t` is frame t of clip k.
        bundle: the compressed packets the plan needs, and the codec parameters
            (None when the plan is decoded from the open file instead).
        clip_shape: `(num_clips, num_frames_per_clip)`.
        frame_shape: `(height, width)` of a decoded frame (after rotation,
            before transforms).
        transforms: the decoder transforms resolved for `frame_shape` (crop
            windows drawn), None for none.
    """

    plan: DecodePlan
    bundle: PacketBundle | None
    clip_shape: tuple[int, int]
    frame_shape: tuple[int, int]
    transforms: TransformPipeline | None = None


class PlanningVideo:
    """An opened stream as the samplers see a decoder (length, metadata, one
    batched request), whose request becomes `PlannedClips` (see module
    docstring); with `read_packets=False` the plan only, for decoding from
    the open stream."""

    def __init__(self, opened: OpenedStream, read_packets: bool = True) -> None:
        self._opened = opened
        self._read_packets = read_packets

    @property
    def metadata(self) -> VideoStreamMetadata:
        return self._opened.metadata

    def __len__(self) -> int:
        return int(self._opened.metadata.num_frames or 0)

    def get_frames_at(self, indices: list[int]) -> PlannedClips:
        return self.submit_clips("get_frames_at", list(indices), (1, len(indices)))

    def get_frames_played_at(self, seconds: list[float]) -> PlannedClips:
        return self.submit_clips("get_frames_played_at", list(seconds), (1, len(seconds)))

    def submit_clips(self, method: str, values: list[Any], clip_shape: tuple[int, int]) -> PlannedClips:
        """Plan the sampler's flat selection (valid indices or in-stream times,
        as the samplers make them) and read its packets."""
        opened = self._opened
        timeline = opened.timeline
        if method == "get_frames_at":
            targets = timeline.targets_for_indices(values) if values else []
        else:
            targets = timeline.targets_for_times(values) if values else []
        plan = build_plan(targets, timeline, len(values))
        bundle = None
        if self._read_packets:
            bundle = build_bundle(plan, opened.demuxer, opened.params, opened.disposable if plan.exact else None)
        height, width = int(opened.metadata.height or 0), int(opened.metadata.width or 0)
        return PlannedClips(plan, bundle, clip_shape, (height, width))
