"""The decode plan: which frames to produce, in which order, from where.

User requests (indices or timestamps, any order, duplicates allowed) become
distinct `Target`s sorted by display time, each remembering every output slot
it fills. The targets are then grouped into `Run`s: a run starts with a seek to
the keyframe its first target decodes from (or continues from wherever the
decoder already is) and serves its targets in one forward pass. Both backends
execute the same plan (`framefeed.engine.executor`).

A `DecodePlan` is the whole request as a plain, picklable value: built from
the frame index (exact mode) or the header (approximate mode) alone, with no
demuxer or decoder, so a CUDA-free worker process can build it, ship it with
its packets (`framefeed.engine.bundling`), and another process can execute it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
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
        frame_index: position in the frame index (exact mode); in approximate
            mode on a constant-rate stream, the index a time target stands for
            (the executor then never answers it with an earlier frame).
        slots: output positions this frame fills.
        duration_seconds: the frame's duration from the frame index (exact
            targets); time targets learn it by decoding.
    """

    seconds: float
    pts: int | None = None
    frame_index: int | None = None
    slots: list[int] = field(default_factory=list)
    duration_seconds: float = 0.0


@dataclass
class Run:
    """Targets served by one forward pass. `seek_pts` None: continue from the
    decoder's current position without seeking."""

    seek_pts: int | None
    targets: list[Target]


class Timeline(Protocol):
    """What the planner needs to know about a stream (see `framefeed.engine.timeline`)."""

    def position(self, seconds: float) -> float:
        """Display-order frame number of the frame shown at `seconds` (may be estimated)."""

    def keyframe_position(self, target: Target) -> float:
        """Display-order frame number of the keyframe decoding `target` starts from."""

    def seek_pts(self, target: Target) -> int:
        """Where to seek (stream time base) before decoding forward to `target`."""

    @property
    def facts(self) -> StreamFacts:
        """What executing a plan needs to know about the stream."""


@dataclass(frozen=True)
class StreamFacts:
    """The stream facts an executor needs besides packets: the time base
    (seconds per pts unit), a frame-rate hint for the last frame's duration
    (0 when unknown), and the end the header promises (truncation checks;
    None when it promises nothing)."""

    time_base: Fraction
    fps_hint: float = 0.0
    promised_end_seconds: float | None = None


@dataclass
class DecodePlan:
    """One request as a value: which frames go to which output slots, and how
    to reach them.

    Attributes:
        exact: targets carry the frame index's pts (exact mode); otherwise they
            are times, and the frame displayed at each is found by decoding.
        runs: forward passes, in order; each seeks (`seek_pts`) or continues.
        slot_count: output slots the caller provides (duplicates share a target).
        facts: time base, frame-rate hint, promised end.
        time_range: `(start, stop)` seconds for "every frame displayed in
            [start, stop)" when the frame count is unknown (approximate mode):
            `runs` then holds one run whose single target is `start`, and
            `slot_count` is 0 (the executor allocates as it finds frames).

    The pts worth decoding (exact mode) are the targets' pts (`wanted_pts`)
    plus every picture something references; below `skip_before`, packets
    that nothing references and that are not wanted are left out (only packet
    payloads tell which those are, see `framefeed.engine.demux.disposable`).
    """

    exact: bool
    runs: list[Run]
    slot_count: int
    facts: StreamFacts
    time_range: tuple[float, float] | None = None

    @property
    def targets(self) -> list[Target]:
        return [target for run in self.runs for target in run.targets]

    @property
    def seek_points(self) -> list[int]:
        """pts of every seek the plan starts with (stream time base)."""
        return [run.seek_pts for run in self.runs if run.seek_pts is not None]

    @property
    def wanted_pts(self) -> frozenset[int]:
        return frozenset(t.pts for t in self.targets if t.pts is not None)

    @property
    def skip_before(self) -> int | None:
        wanted = self.wanted_pts
        return max(wanted) if wanted else None


def build_plan(targets: list[Target], timeline: Timeline, slot_count: int,
               cursor_seconds: float | None = None) -> DecodePlan:
    """The plan serving `targets` (sorted, from the timeline's `targets_for_*`).
    `cursor_seconds` as in `plan_runs`: None for a plan that starts from
    nothing (any plan shipped to another process)."""
    runs = plan_runs(targets, timeline, cursor_seconds)
    exact = bool(targets) and targets[0].pts is not None
    return DecodePlan(exact, runs, slot_count, timeline.facts)


def time_range_plan(start: float, stop: float, timeline: Timeline) -> DecodePlan:
    """The plan for every frame displayed in `[start, stop)` seconds, found by
    decoding (approximate mode, where no index counts them)."""
    target = Target(start)
    return DecodePlan(False, [Run(timeline.seek_pts(target), [target])], 0, timeline.facts, (start, stop))


def exact_targets(frame_indices: Iterable[int], pts: list[int], pts_seconds: list[float],
                  durations: list[float]) -> list[Target]:
    """Targets for frame indices (already validated and non-negative), merged
    by index, sorted by display order."""
    by_index: dict[int, Target] = {}
    for slot, index in enumerate(frame_indices):
        target = by_index.get(index)
        if target is None:
            target = by_index[index] = Target(pts_seconds[index], pts[index], index, [], durations[index])
        target.slots.append(slot)
    return sorted(by_index.values(), key=lambda t: t.seconds)


def time_targets(seconds: Iterable[float], indices: Iterable[int] | None = None) -> list[Target]:
    """Targets "frame displayed at t", merged by time, sorted; `indices`, when
    given, are the frame indices the times stand for (`Target.frame_index`)."""
    by_time: dict[float, Target] = {}
    positions = iter(indices) if indices is not None else None
    for slot, when in enumerate(seconds):
        index = next(positions) if positions is not None else None
        target = by_time.get(when)
        if target is None:
            target = by_time[when] = Target(when, frame_index=index)
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
