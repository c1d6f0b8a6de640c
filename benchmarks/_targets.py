"""Shared by the benchmark scripts: run a suite on given clips, check the
issue's speed targets as ratios between contenders measured in the same run,
and write JSON plus a Markdown table under benchmarks/results/."""

from __future__ import annotations

import datetime
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

from framefeed.bench.clips import Clip
from framefeed.bench.contenders import Contender, Framefeed, PyAV, Torchcodec
from framefeed.bench.report import to_json, write_json
from framefeed.bench.runner import Measurement, run_suite
from framefeed.bench.workloads import WORKLOADS

RESULTS = Path(__file__).resolve().parent / "results"


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

    def evaluate(self, measurements: list[Measurement]) -> tuple[float | None, bool | None]:
        def find(contender: str, workload: str) -> Measurement | None:
            return next((m for m in measurements if m.clip == self.clip and m.workload == workload
                         and m.contender == contender and m.seconds), None)

        ours = find(self.ours, self.workload)
        theirs = find(self.theirs, self.workload)
        if ours is None or theirs is None:
            return None, None
        if self.kind == "time":
            ratio = ours.median / theirs.median
            return ratio, ratio <= self.limit
        ratio = (ours.frames / ours.median) / (theirs.frames / theirs.median)
        return ratio, ratio >= self.limit


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
    write_json(document, RESULTS / f"{name}.json")
    counts = sorted({len(m.seconds) for m in measurements if m.seconds})
    run_text = " or ".join(str(c) for c in counts) if counts else str(runs)
    lines = [f"# {title}", "", f"Measured {machine_line()}; median of {run_text} interleaved runs after "
             f"{warmup} warm-up run(s).", "", "## Targets", "",
             "| target | ratio | limit | result |", "| --- | --- | --- | --- |"]
    for target in targets:
        ratio, ok = target.evaluate(measurements)
        relation = "<=" if target.kind == "time" else ">="
        lines.append(f"| {target.description} | {'-' if ratio is None else f'{ratio:.2f}x'} | "
                     f"{relation} {target.limit}x | {'-' if ok is None else ('pass' if ok else 'FAIL')} |")
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
