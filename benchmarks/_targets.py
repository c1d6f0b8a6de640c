"""Shared by the benchmark scripts: run a suite on given clips, check the
issue's speed targets as ratios between contenders measured in the same run,
and write JSON plus a Markdown table under benchmarks/results/.

Every figure is reported per round (`RoundRatios`): contenders run back to
back in each round, so a round's contenders share the machine's load, and
the ratio within a round is the measurement. A target passes on the median
of those per-round ratios; their min-max says how far a single round strays.
The ratio of the medians is printed beside it for comparison with older
results."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from framefeed.bench.clips import Clip
from framefeed.bench.contenders import Contender, Framefeed, PyAV, Torchcodec
from framefeed.bench.report import to_json, write_json
from framefeed.bench.runner import Measurement, run_suite
from framefeed.bench.workloads import WORKLOADS

RESULTS = Path(__file__).resolve().parent / "results"

# The table header every script's targets use (then one `RoundRatios.row` per target).
TARGET_HEADER = ["| target | per-round ratio: median (min-max) | ratio of medians | limit | result |",
                 "| --- | --- | --- | --- | --- |"]


@dataclass(frozen=True)
class RoundRatios:
    """One figure, ours against theirs, as the ratio within each round.

    `kind` "time": ratio = our time / their time (lower is better, passes
    when the median ratio <= limit). "rate": ratio = our work per second /
    their work per second (higher is better, passes when >= limit).
    """

    kind: str
    ratios: tuple[float, ...]
    ratio_of_medians: float

    @classmethod
    def of(cls, kind: str, ours_seconds: Sequence[float], theirs_seconds: Sequence[float],
           ours_work: float = 1.0, theirs_work: float = 1.0) -> RoundRatios:
        """From the seconds of each round (index i of both lists: the same
        round), and the work (frames, clips) each contender did per run."""
        if kind not in ("time", "rate"):
            raise ValueError(f"kind must be 'time' or 'rate', got {kind!r}")
        if len(ours_seconds) != len(theirs_seconds) or not ours_seconds:
            raise ValueError(f"need the same number of rounds on both sides, got {len(ours_seconds)} and "
                             f"{len(theirs_seconds)}")

        def ratio(ours: float, theirs: float) -> float:
            if kind == "time":
                return ours / theirs
            return (ours_work / ours) / (theirs_work / theirs)

        rounds = tuple(ratio(o, t) for o, t in zip(ours_seconds, theirs_seconds, strict=True))
        return cls(kind, rounds, ratio(statistics.median(ours_seconds), statistics.median(theirs_seconds)))

    @property
    def median(self) -> float:
        return statistics.median(self.ratios)

    @property
    def low(self) -> float:
        return min(self.ratios)

    @property
    def high(self) -> float:
        return max(self.ratios)

    def passes(self, limit: float) -> bool:
        return self.median <= limit if self.kind == "time" else self.median >= limit

    def text(self) -> str:
        """e.g. "1.12x (0.95-1.30)": the median per-round ratio and its min-max."""
        return f"{self.median:.2f}x ({self.low:.2f}-{self.high:.2f})"

    def row(self, description: str, limit: float) -> str:
        """A row under `TARGET_HEADER`."""
        relation = "<=" if self.kind == "time" else ">="
        return (f"| {description} | {self.text()} | {self.ratio_of_medians:.2f}x | {relation} {limit}x | "
                f"{'pass' if self.passes(limit) else 'FAIL'} |")

    def as_json(self, limit: float | None = None) -> dict:
        document = {"kind": self.kind, "per_round_ratios": list(self.ratios), "median_ratio": self.median,
                    "min_ratio": self.low, "max_ratio": self.high, "ratio_of_medians": self.ratio_of_medians}
        if limit is not None:
            document |= {"limit": limit, "pass": self.passes(limit)}
        return document


@dataclass
class Target:
    """`ours` time (or frames/s) against `theirs`, for one clip and workload.

    `kind` "time": pass when ours_median / theirs_median <= limit.
    `kind` "fps": pass when ours_fps / theirs_fps >= limit.
    """

    description: str
    clip: str
    workload: str
    ours: str
    theirs: str
    kind: str
    limit: float

    def evaluate(self, measurements: list[Measurement]) -> RoundRatios | None:
        """The per-round ratios of ours against theirs, or None when either
        was not measured. Rounds pair up by position: `run_suite` runs the
        contenders of a workload one after another in each round."""
        def find(contender: str) -> Measurement | None:
            return next((m for m in measurements if m.clip == self.clip and m.workload == self.workload
                         and m.contender == contender and m.seconds and not m.failed), None)

        ours, theirs = find(self.ours), find(self.theirs)
        if ours is None or theirs is None:
            return None
        kind = "time" if self.kind == "time" else "rate"
        return RoundRatios.of(kind, ours.seconds, theirs.seconds, ours.frames or 1, theirs.frames or 1)


def cpu_peers() -> list[Contender]:
    """The contenders of the CPU target benchmarks."""
    return [Framefeed("cpu"), Torchcodec("cpu"), PyAV("cpu")]


def run_groups(groups: list[tuple[Clip, list[str]]], contenders: list[Contender], runs: int, warmup: int):
    """Run each (clip, workload names) group; all measurements and skip notes."""
    measurements, skipped = [], []
    for clip, names in groups:
        found, missing = run_suite([clip], [WORKLOADS[n] for n in names], contenders, runs=runs, warmup=warmup)
        measurements += found
        skipped += [s for s in missing if s not in skipped]
    return measurements, skipped


def parse_args(doc: str):
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    return parser.parse_args()


def machine_line() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{datetime.date.today().isoformat()}, {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}, {gpu}")


def write_results(name: str, title: str, clips, measurements, skipped, targets: list[Target],
                  runs: int, warmup: int, devices: list[str]) -> str:
    RESULTS.mkdir(parents=True, exist_ok=True)
    document = to_json(clips, measurements, skipped, runs=runs, warmup=warmup, devices=devices)
    for clip in document["clips"]:
        clip["path"] = Path(clip["path"]).name  # no machine paths in committed results
    document["targets"] = []
    for target in targets:
        figure = target.evaluate(measurements)
        document["targets"].append({"description": target.description,
                                    **(figure.as_json(target.limit) if figure else {"limit": target.limit})})
    write_json(document, RESULTS / f"{name}.json")
    counts = sorted({len(m.seconds) for m in measurements if m.seconds})
    run_text = " or ".join(str(c) for c in counts) if counts else str(runs)
    lines = [f"# {title}", "", f"Measured {machine_line()}; {run_text} interleaved runs after "
             f"{warmup} warm-up run(s). Each ratio is taken within a round (contenders run back to back); "
             "a target passes on the median of those per-round ratios.", "", "## Targets", "", *TARGET_HEADER]
    for target in targets:
        figure = target.evaluate(measurements)
        relation = "<=" if target.kind == "time" else ">="
        if figure is None:
            lines.append(f"| {target.description} | - | - | {relation} {target.limit}x | - |")
        else:
            lines.append(figure.row(target.description, target.limit))
    lines += ["", "## All measurements", "", "| clip | workload | contender | median | min | max | frames/s |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for m in measurements:
        if m.failed:
            text = f"error: {m.error}" if m.status == "error" else m.error
            lines.append(f"| {m.clip} | {m.workload} | {m.contender} | {text} | | | |")
            continue
        fps = m.frames_per_second
        lines.append(f"| {m.clip} | {m.workload} | {m.contender} | {m.median * 1000:.1f} ms | "
                     f"{m.fastest * 1000:.1f} ms | {m.slowest * 1000:.1f} ms | {'' if fps is None else f'{fps:.1f}'} |")
    for s in skipped:
        lines.append(f"\nSkipped {s.contender}: {s.reason}")
    text = "\n".join(lines) + "\n"
    (RESULTS / f"{name}.md").write_text(text)
    return text
