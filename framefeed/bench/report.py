"""Benchmark output: a table for people, JSON for machines, a plot.

JSON schema `framefeed-bench/1` (keys are stable; new keys may be added;
the machine-checkable form is `schema.json` beside this file):

    {
      "schema": "framefeed-bench/1",
      "created": "2026-11-21T10:00:00+00:00",     # UTC, ISO 8601
      "machine": {"python": str, "platform": str, "cpu_count": int,
                  "torch": str, "framefeed": str, "gpu": str | null, "driver": str | null},
      "settings": {"runs": int, "warmup": int, "devices": [str]},
      "clips": [{"name": str, "path": str, "codec": str, "width": int, "height": int,
                 "fps": float, "num_frames": int, "duration_seconds": float}],
      "results": [{"clip": str, "workload": str, "contender": str, "library": str, "device": str,
                   "frames": int, "seconds": [float], "median_seconds": float | null,
                   "min_seconds": float | null, "max_seconds": float | null,
                   "frames_per_second": float | null,
                   "time_vs_framefeed": float | null,   # median / framefeed's median, same device kind
                   "error": str | null,
                   "status": "ok" | "error" | "crashed" | "timed out" | "not run",
                   "signal": int | null,                # the signal that killed a crashed contender
                   "nvdec_utilization_percent": float | null}],  # NVML, mean over timed runs (CUDA)
      "skipped": [{"contender": str, "reason": str}]
    }
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

import framefeed
from framefeed.bench.clips import Clip
from framefeed.bench.runner import Measurement, Skipped

SCHEMA = "framefeed-bench/1"


def framefeed_baseline(measurement: Measurement, everything: list[Measurement]) -> Measurement | None:
    """framefeed's measurement of the same clip and workload on the same kind of
    device (CPU peers against framefeed CPU, GPU peers against framefeed CUDA)."""
    kind = measurement.device.split(":")[0]
    for other in everything:
        if (other.library == "framefeed" and other.clip == measurement.clip
                and other.workload == measurement.workload and other.device.split(":")[0] == kind
                and other.seconds):
            return other
    return None


def time_vs_framefeed(measurement: Measurement, everything: list[Measurement]) -> float | None:
    base = framefeed_baseline(measurement, everything)
    if base is None or not measurement.seconds:
        return None
    return measurement.median / base.median


def _gpu_facts() -> tuple[str | None, str | None]:
    if not torch.cuda.is_available():
        return None, None
    name = torch.cuda.get_device_name(0)
    driver = None
    try:
        import subprocess

        driver = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10,
        ).stdout.strip().splitlines()[0]
    except Exception:  # nvidia-smi missing: the driver version is simply unknown
        pass
    return name, driver


def to_json(clips: list[Clip], measurements: list[Measurement], skipped: list[Skipped],
            *, runs: int, warmup: int, devices: list[str]) -> dict[str, Any]:
    gpu, driver = _gpu_facts()

    def number(value: float | None) -> float | None:
        return None if value is None or math.isnan(value) else value

    return {
        "schema": SCHEMA,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "framefeed": framefeed.__version__,
            "gpu": gpu,
            "driver": driver,
        },
        "settings": {"runs": runs, "warmup": warmup, "devices": devices},
        "clips": [
            {"name": c.name, "path": str(c.path), "codec": c.codec, "width": c.width, "height": c.height,
             "fps": c.fps, "num_frames": c.num_frames, "duration_seconds": c.duration_seconds}
            for c in clips
        ],
        "results": [
            {"clip": m.clip, "workload": m.workload, "contender": m.contender, "library": m.library,
             "device": m.device, "frames": m.frames, "seconds": m.seconds,
             "median_seconds": number(m.median), "min_seconds": number(m.fastest),
             "max_seconds": number(m.slowest), "frames_per_second": m.frames_per_second,
             "time_vs_framefeed": time_vs_framefeed(m, measurements), "error": m.error,
             "status": m.status, "signal": m.signal, "nvdec_utilization_percent": m.nvdec_utilisation}
            for m in measurements
        ],
        "skipped": [{"contender": s.contender, "reason": s.reason} for s in skipped],
    }


def status_text(measurement: Measurement) -> str:
    """How a failed measurement reads in a table: "crashed: signal 11",
    "timed out", "not run" or "error"."""
    if measurement.status == "crashed":
        return (measurement.error or "crashed").split(" (last output")[0]
    return measurement.status


def render_table(measurements: list[Measurement], skipped: list[Skipped], console: Any = None) -> None:
    """Print one rich table: a row per clip, workload and contender. Runs on
    CUDA devices add NVML's decoder utilisation ("-" where NVML gave none)."""
    from rich.console import Console
    from rich.table import Table

    # Off a terminal (CI logs, pipes) rich would wrap at 80 columns.
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    table = Table(title="framefeed bench (median of timed runs)", show_lines=False)
    with_gpu = any(m.device.startswith("cuda") for m in measurements)
    columns = [("clip", "left"), ("workload", "left"), ("contender", "left"), ("median", "right"),
               ("min-max", "right"), ("frames/s", "right"), ("time vs framefeed", "right")]
    if with_gpu:
        columns.append(("NVDEC util", "right"))
    for column, justify in columns:
        table.add_column(column, justify=justify)
    previous = None
    for m in measurements:
        group = (m.clip, m.workload)
        if previous is not None and group != previous:
            table.add_section()
        previous = group
        gpu_cell = [_utilisation(m)] if with_gpu else []
        if m.failed:
            detail = (m.error or "")[:40] if m.status == "error" else ""
            table.add_row(m.clip, m.workload, m.contender, status_text(m), detail, "", "", *([""] if with_gpu else []))
            continue
        ratio = time_vs_framefeed(m, measurements)
        fps = m.frames_per_second
        table.add_row(
            m.clip, m.workload, m.contender, _duration(m.median),
            f"{_duration(m.fastest)}-{_duration(m.slowest)}",
            f"{fps:,.1f}" if fps else "",
            "" if ratio is None or m.library == "framefeed" else f"{ratio:.2f}x",
            *gpu_cell,
        )
    console.print(table)
    for m in measurements:
        if m.status in ("crashed", "timed out") and m.error:
            console.print(f"[dim]{m.contender} on {m.clip} {m.workload}: {m.error}[/dim]", soft_wrap=True)
    for s in skipped:
        console.print(f"[dim]skipped {s.contender}: {s.reason}[/dim]", soft_wrap=True)


def _utilisation(measurement: Measurement) -> str:
    if not measurement.device.startswith("cuda"):
        return ""
    value = measurement.nvdec_utilisation
    return "-" if value is None else f"{value:.0f}%"


def _duration(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def write_plot(measurements: list[Measurement], path: str | Path) -> Path:
    """Bar chart of median time per workload, one panel per clip."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clips = list(dict.fromkeys(m.clip for m in measurements))
    fig, axes = plt.subplots(len(clips), 1, figsize=(10, 3.2 * len(clips)), squeeze=False)
    for axis, clip in zip(axes[:, 0], clips, strict=True):
        rows = [m for m in measurements if m.clip == clip and m.seconds]
        workloads = list(dict.fromkeys(m.workload for m in rows))
        contenders = list(dict.fromkeys(m.contender for m in rows))
        width = 0.8 / max(len(contenders), 1)
        for k, contender in enumerate(contenders):
            values = [next((m.median * 1000 for m in rows if m.workload == w and m.contender == contender), 0.0)
                      for w in workloads]
            axis.bar([i + k * width for i in range(len(workloads))], values, width, label=contender)
        axis.set_xticks([i + width * (len(contenders) - 1) / 2 for i in range(len(workloads))])
        axis.set_xticklabels(workloads, rotation=20, ha="right", fontsize=8)
        axis.set_ylabel("median ms (lower is better)")
        axis.set_yscale("log")
        axis.set_title(clip)
        axis.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_json(document: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path
