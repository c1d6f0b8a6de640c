"""Runs workloads on clips for each contender: warm-up, then interleaved
timed runs (contenders take turns, in a rotating order, so background load
hits all of them alike), reporting medians.

Every contender runs in its own process (`isolation.ContenderProcess`): one
that crashes or hangs costs its own measurements, which say so
(`Measurement.status`), and the suite goes on."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from framefeed.bench.clips import Clip
from framefeed.bench.contenders import Contender
from framefeed.bench.isolation import DEFAULT_TIMEOUT_SECONDS, ContenderProcess, RunOutcome
from framefeed.bench.workloads import Workload

# Measurement.status values.
OK, ERROR, CRASHED, TIMED_OUT, NOT_RUN = "ok", "error", "crashed", "timed out", "not run"


@dataclass
class Measurement:
    """Timed runs of one contender on one workload and clip.

    `status` is "ok", "error" (the contender raised; `error` says what),
    "crashed" (its process died: `signal` is the signal number when one killed
    it), "timed out" (killed after the per-run timeout) or "not run" (the
    contender had timed out earlier). `nvdec_percent` holds NVML's mean
    decoder utilisation of each timed run on a CUDA device, when available.
    """

    workload: str
    clip: str
    contender: str
    library: str
    device: str
    frames: int
    seconds: list[float] = field(default_factory=list)
    error: str | None = None
    status: str = OK
    signal: int | None = None
    nvdec_percent: list[float] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.status != OK

    @property
    def nvdec_utilisation(self) -> float | None:
        """Mean NVDEC utilisation (percent) over the timed runs, or None."""
        return sum(self.nvdec_percent) / len(self.nvdec_percent) if self.nvdec_percent else None

    def record_failure(self, outcome: RunOutcome) -> None:
        self.status = outcome.status
        self.error = outcome.error or outcome.status
        self.signal = outcome.signal

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
    on_total: Callable[[int], None] | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> tuple[list[Measurement], list[Skipped]]:
    """Time every (clip, workload, available contender), each contender in its
    own process.

    `warmup` untimed rounds precede the timed ones of every workload;
    `clip_warmup` instead (or in addition) gives each contender one untimed
    run of its first workload on each clip (file cache, imports, decoder set-up)
    and leaves first-run effects of the other workloads to the median.
    `on_total` is called once, after the contenders' processes said what they
    can run, with the number of runs to come; `on_step` once per run with a
    short label (progress display). `timeout` bounds one run of one contender
    in seconds: past it the contender's process is killed, that measurement
    says "timed out" and the contender's later ones "not run".
    """
    processes = {c.name: ContenderProcess(type(c).__module__, type(c).__qualname__, c.device, c.threads, timeout)
                 for c in contenders}
    try:
        skipped, supported = _probe(contenders, workloads, processes)
        active = [c for c in contenders if c.name in supported]
        if on_total:
            on_total(_count_runs(clips, workloads, active, supported, runs, warmup, clip_warmup))
        # Contenders that timed out, and the (clip, workload) they timed out on: not run again.
        stopped: dict[str, tuple[str, str]] = {}
        measurements: list[Measurement] = []
        for clip in clips:
            if clip_warmup:
                _warm_up(clip, workloads, active, supported, processes, stopped, on_step)
            for workload in workloads:
                measurements += _measure(clip, workload, [c for c in active if workload.name in supported[c.name]],
                                         processes, stopped, runs, warmup, on_step)
        return measurements, skipped
    finally:
        for process in processes.values():
            process.close()


def _probe(contenders: list[Contender], workloads: list[Workload], processes: dict[str, ContenderProcess]
           ) -> tuple[list[Skipped], dict[str, set[str]]]:
    """Start every contender's process: who cannot run (and why), and what the others support."""
    skipped: list[Skipped] = []
    supported: dict[str, set[str]] = {}
    for contender in contenders:
        processes[contender.name].launch()  # start-ups overlap
    for contender in contenders:
        reason, names = processes[contender.name].probe([w.name for w in workloads])
        if reason:
            skipped.append(Skipped(contender.name, reason))
            processes[contender.name].close()
        else:
            supported[contender.name] = set(names)
    return skipped, supported


def _count_runs(clips: list[Clip], workloads: list[Workload], active: list[Contender],
                supported: dict[str, set[str]], runs: int, warmup: int, clip_warmup: bool) -> int:
    per_clip = sum((warmup + runs) * sum(1 for c in active if w.name in supported[c.name]) for w in workloads)
    if clip_warmup:
        per_clip += sum(1 for c in active if any(w.name in supported[c.name] for w in workloads))
    return per_clip * len(clips)


def _warm_up(clip: Clip, workloads: list[Workload], active: list[Contender], supported: dict[str, set[str]],
             processes: dict[str, ContenderProcess], stopped: dict[str, tuple[str, str]],
             on_step: Callable[[str], None] | None) -> None:
    for contender in active:
        first = next((w for w in workloads if w.name in supported[contender.name]), None)
        if first is None:
            continue
        if on_step:
            on_step(f"{clip.name} warm-up {contender.name}")
        if contender.name in stopped:
            continue
        outcome = processes[contender.name].run(first.name, str(clip.path), first.prepare(clip))
        # Errors and crashes are left to the timed runs (a fresh process retries);
        # a hang would only hang again.
        if outcome.status == TIMED_OUT:
            stopped[contender.name] = (clip.name, first.name)


def _measure(clip: Clip, workload: Workload, runners: list[Contender], processes: dict[str, ContenderProcess],
             stopped: dict[str, tuple[str, str]], runs: int, warmup: int, on_step: Callable[[str], None] | None
             ) -> list[Measurement]:
    params = workload.prepare(clip)
    frames = workload.frames(clip, params)
    results = {c.name: Measurement(workload.name, clip.name, c.name, c.library, c.device, frames) for c in runners}
    for contender in runners:
        if contender.name in stopped:
            if stopped[contender.name] == (clip.name, workload.name):  # it hung in this one's warm-up
                outcome = RunOutcome(TIMED_OUT, error=f"timed out (warm-up run, after {processes[contender.name].timeout:g} s)")
            else:
                outcome = RunOutcome(NOT_RUN, error="not run: the contender timed out earlier")
            results[contender.name].record_failure(outcome)
    for round_index in range(warmup + runs):
        shift = round_index % max(len(runners), 1)
        for contender in runners[shift:] + runners[:shift]:
            result = results[contender.name]
            if on_step:
                on_step(f"{clip.name} {workload.name} {contender.name}")
            if result.failed:
                continue
            outcome = processes[contender.name].run(workload.name, str(clip.path), params)
            if not outcome.ok:  # a peer failing must not end the suite
                result.record_failure(outcome)
                if outcome.status == TIMED_OUT:
                    stopped[contender.name] = (clip.name, workload.name)
                continue
            if round_index >= warmup:
                result.seconds.append(outcome.seconds)
                if outcome.nvdec_percent is not None:
                    result.nvdec_percent.append(float(outcome.nvdec_percent))
                if frames and outcome.frames != frames:
                    result.frames = outcome.frames
    return list(results.values())
