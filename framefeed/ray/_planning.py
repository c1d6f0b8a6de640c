"""One video's clips as groups of plans plus packets, each small enough to
decode as one unit: what a `read_clips` read task produces for a file.

The sampler runs exactly as `ClipDataset` runs it for a shipped item (the
same `PlanningVideo` stand-in, the same per-item seed), so the clips equal
direct sampling; only the hand-over differs: the sampler's flat selection is
cut into groups of whole clips of at most `max_frames` frames, each planned
and demuxed on its own. Groups let one long file (`sampler="all"`) decode
in several tasks at once and bound the memory of each decoded block.

Where a cut falls inside a keyframe interval, the group after it decodes
from that interval's keyframe again, so among the clip boundaries in the
last third before the cap, the cut goes where the fewest frames would be
decoded twice (a boundary on a keyframe costs nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from framefeed.data._sampling import PlannedClips, PlanningVideo
from framefeed.engine.opening import OpenedStream


@dataclass
class ClipGroup:
    """Clips `[first_clip, first_clip + planned.clip_shape[0])` of one video, planned."""

    first_clip: int
    planned: PlannedClips


class GroupPlanningVideo(PlanningVideo):
    """`PlanningVideo` whose sampler call returns `list[ClipGroup]`."""

    def __init__(self, opened: OpenedStream, max_frames: int) -> None:
        super().__init__(opened)
        self._max_frames = max(int(max_frames), 1)

    def submit_clips(self, method: str, values: list[Any], clip_shape: tuple[int, int]) -> list[ClipGroup]:  # type: ignore[override]
        num_clips, frames_per_clip = clip_shape
        groups = []
        for first, stop in clip_ranges(self._opened.timeline, method, values, num_clips, frames_per_clip,
                                       self._max_frames):
            chunk = values[first * frames_per_clip: stop * frames_per_clip]
            planned = super().submit_clips(method, chunk, (stop - first, frames_per_clip))
            groups.append(ClipGroup(first, planned))
        return groups


def clip_ranges(timeline: Any, method: str, values: list[Any], num_clips: int, frames_per_clip: int,
                max_frames: int) -> list[tuple[int, int]]:
    """Consecutive `[first, stop)` clip ranges covering `num_clips` clips,
    each of at most `max_frames` frames (at least one clip)."""
    per_group = max(max_frames // frames_per_clip, 1)
    if num_clips <= per_group:
        return [(0, num_clips)]
    ranges = []
    first = 0
    while num_clips - first > per_group:
        window = range(first + max(per_group * 2 // 3, 1), first + per_group + 1)
        stop = min(window, key=lambda c: (_recut_cost(timeline, method, values[c * frames_per_clip]), -c))
        ranges.append((first, stop))
        first = stop
    ranges.append((first, num_clips))
    return ranges


def _recut_cost(timeline: Any, method: str, value: Any) -> float:
    """Frames decoded again when a group starts at the frame `value` names:
    those between its keyframe and it, in display order."""
    targets = timeline.targets_for_indices([value]) if method == "get_frames_at" else timeline.targets_for_times(
        [value])
    target = targets[0]
    position = target.frame_index if target.frame_index is not None else timeline.position(target.seconds)
    return max(float(position) - timeline.keyframe_position(target), 0.0)
