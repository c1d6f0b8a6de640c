"""The decode plan: which frames to produce, in which order, from where.

User requests (indices or timestamps, any order, duplicates allowed) become
distinct `Target`s sorted by display time, each remembering every output slot
it fills. The targets are then grouped into `Run`s: a run starts with a seek to
the keyframe its first target decodes from (or continues from wherever the
decoder already is) and serves its targets in one forward pass. Both backends
execute the same plan (`framefeed.session`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

# Continuing to decode forward beats seeking when the target's keyframe is at
# most this many frames past the decoder's position: a seek restarts the
# decoder's reorder pipeline, which costs about as much as a few frames.
CONTINUE_SLACK_FRAMES = 3.0


@dataclass
class Target:
    """One distinct frame to produce.

    Attributes:
        seconds: display time used for ordering. Exact targets: the frame's pts
            in seconds. Time targets: the requested time.
        pts: the frame's pts in stream time base when the frame index knows it
            (exact mode); None means "the frame displayed at `seconds`".
        frame_index: position in the frame index (exact mode only).
        slots: output positions this frame fills.
    """

    seconds: float
    pts: int | None = None
    frame_index: int | None = None
    slots: list[int] = field(default_factory=list)


@dataclass
class Run:
    """Targets served by one forward pass. `seek_pts` None: continue from the
    decoder's current position without seeking."""

    seek_pts: int | None
    targets: list[Target]


class Timeline(Protocol):
    """What the planner needs to know about a stream (see `framefeed.timeline`)."""

    def position(self, seconds: float) -> float:
        """Display-order frame number of the frame shown at `seconds` (may be estimated)."""

    def keyframe_position(self, target: Target) -> float:
        """Display-order frame number of the keyframe decoding `target` starts from."""

    def seek_pts(self, target: Target) -> int:
        """Where to seek (stream time base) before decoding forward to `target`."""


def exact_targets(frame_indices: Iterable[int], pts: list[int], pts_seconds: list[float]) -> list[Target]:
    """Targets for frame indices (already validated and non-negative), merged
    by index, sorted by display order."""
    by_index: dict[int, Target] = {}
    for slot, index in enumerate(frame_indices):
        target = by_index.get(index)
        if target is None:
            target = by_index[index] = Target(pts_seconds[index], pts[index], index)
        target.slots.append(slot)
    return sorted(by_index.values(), key=lambda t: t.seconds)


def time_targets(seconds: Iterable[float]) -> list[Target]:
    """Targets "frame displayed at t", merged by time, sorted."""
    by_time: dict[float, Target] = {}
    for slot, when in enumerate(seconds):
        target = by_time.get(when)
        if target is None:
            target = by_time[when] = Target(when)
        target.slots.append(slot)
    return sorted(by_time.values(), key=lambda t: t.seconds)


def plan_runs(targets: list[Target], timeline: Timeline, cursor_seconds: float | None) -> list[Run]:
    """Group sorted targets into runs.

    `cursor_seconds` is the display time of the last frame the decoder handed
    out, or None when it is not positioned (fresh, after end of stream, or
    after an error). A target continues the current pass when it lies after
    that frame and its keyframe is not far ahead of it; otherwise it starts a
    new run with a seek.
    """
    runs: list[Run] = []
    last = cursor_seconds
    for target in targets:
        continues = (
            last is not None
            and target.seconds > last
            and timeline.keyframe_position(target) <= timeline.position(last) + CONTINUE_SLACK_FRAMES
        )
        if continues and runs:
            runs[-1].targets.append(target)
        elif continues:
            runs.append(Run(None, [target]))
        else:
            runs.append(Run(timeline.seek_pts(target), [target]))
        last = target.seconds
    return runs
