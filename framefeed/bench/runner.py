"""Runs workloads on clips for each contender: warm-up, then interleaved
timed runs (contenders take turns, in a rotating order, so background load
hits all of them alike), reporting medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from framefeed.bench.clips import Clip
from framefeed.bench.contenders import Contender
from framefeed.bench.workloads import Workload


@dataclass
class Measurement:
    """Timed runs of one contender on one workload and clip."""

    workload: str
    clip: str
    contender: str
    library: str
    device: str
    frames: int
    seconds: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")

    @property
    def fastest(self) -> float:
        return min(self.seconds) if self.seconds else float("nan")

    @property
    def slowest(self) -> float:
        return max(self.seconds) if self.seconds else float("nan")

    @property
    def frames_per_second(self) -> float | None:
        if not self.frames or not self.seconds:
            return None
        return self.frames / self.median


@dataclass
class Skipped:
    contender: str
    reason: str


def run_suite(
    clips: list[Clip],
    workloads: list[Workload],
    contenders: list[Contender],
    *,
    runs: int = 5,
    warmup: int = 1,
    clip_warmup: bool = False,
    on_step: Callable[[str], None] | None = None,
) -> tuple[list[Measurement], list[Skipped]]:
    """Time every (clip, workload, available contender).

    `warmup` untimed rounds precede the timed ones of every workload;
    `clip_warmup` instead (or in addition) gives each contender one untimed
    run of its first workload on each clip (file cache, imports, decoder set-up)
    and leaves first-run effects of the other workloads to the median.
    `on_step` is called once per run with a short label (progress display).
    """
    skipped = [Skipped(c.name, reason) for c in contenders if (reason := c.unavailable_reason())]
    active = [c for c in contenders if c.name not in {s.contender for s in skipped}]
    measurements: list[Measurement] = []
    for clip in clips:
        if clip_warmup:
            for contender in active:
                first = next((w for w in workloads if contender.supports(w.name)), None)
                if first is None:
                    continue
                if on_step:
                    on_step(f"{clip.name} warm-up {contender.name}")
                try:
                    contender.run(first.name, str(clip.path), first.prepare(clip))
                except Exception:  # noqa: S110 - the timed runs record the error
                    pass
        for workload in workloads:
            params = workload.prepare(clip)
            frames = workload.frames(clip, params)
            runners = [c for c in active if c.supports(workload.name)]
            results = {c.name: Measurement(workload.name, clip.name, c.name, c.library, c.device, frames)
                       for c in runners}
            for round_index in range(warmup + runs):
                shift = round_index % max(len(runners), 1)
                for contender in runners[shift:] + runners[:shift]:
                    result = results[contender.name]
                    if result.error:
                        continue
                    if on_step:
                        on_step(f"{clip.name} {workload.name} {contender.name}")
                    try:
                        start = time.perf_counter()
                        produced = contender.run(workload.name, str(clip.path), params)
                        elapsed = time.perf_counter() - start
                    except Exception as error:  # a peer failing must not end the suite
                        result.error = f"{type(error).__name__}: {error}".splitlines()[0][:200]
                        continue
                    if round_index >= warmup:
                        result.seconds.append(elapsed)
                        if frames and produced != frames:
                            result.frames = produced
            measurements.extend(results.values())
    return measurements, skipped


def steps_in_suite(clips: list[Clip], workloads: list[Workload], contenders: list[Contender],
                   runs: int, warmup: int, clip_warmup: bool = False) -> int:
    available = [c for c in contenders if not c.unavailable_reason()]
    per_clip = sum((warmup + runs) * sum(1 for c in available if c.supports(w.name)) for w in workloads)
    if clip_warmup:
        per_clip += sum(1 for c in available if any(c.supports(w.name) for w in workloads))
    return per_clip * len(clips)
