"""Sequential decoding and page faults: the measurement behind
`results/core-cpu-sequential-faults.md`.

`for frame in VideoDecoder(path)` over every frame of the 10-second 1080p
H.264 clip (`HD_LONG_RECIPE`, 300 frames), each pass timed and its minor
page faults counted (`resource.getrusage(RUSAGE_SELF).ru_minflt` before and
after the pass: the faults the process took, swscale writing into fresh
memory among them). Contenders:
- "framefeed": this tree's framefeed;
- "torchcodec": torchcodec 0.13's `VideoDecoder`, iterated the same way;
- "framefeed@REV" for each `--commit REV`: framefeed as of that git commit
  (exported with `git archive` into a temporary folder), e.g. the code
  before the frame-memory fix.
Every invocation is a fresh process making `--passes` passes; its first pass
(imports, file cache, first allocations) is dropped. Rounds run each
contender once, in a rotating order, so background load hits all alike.
A pass is "slow" when it takes more than `--slow-faults` faults (100,000:
about one per 4 KiB page of every 6 MB frame). `--glibc-worst-case` runs
every process with `MALLOC_MMAP_THRESHOLD_=65536 MALLOC_TRIM_THRESHOLD_=0`,
glibc's settings that give every freed frame back to the kernel.

Usage:
    PYTHONPATH=. python benchmarks/sequential_faults.py [--rounds 5] [--passes 3] [--commit 1a0b31f]
Prints the table and writes benchmarks/results/core-cpu-sequential-faults.json
(or `--output`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"


def run_passes(library: str, path: str, passes: int) -> list[dict]:
    """In this process: `passes` sequential passes over `path` with `library`,
    each {"seconds", "faults", "frames"}."""
    if library == "torchcodec":
        from torchcodec.decoders import VideoDecoder
    else:
        from framefeed.decoders import VideoDecoder
    results = []
    for _ in range(passes):
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        began = time.perf_counter()
        frames = 0
        for _frame in VideoDecoder(path):
            frames += 1
        seconds = time.perf_counter() - began
        results.append({"seconds": seconds, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults,
                        "frames": frames})
    return results


def export_commit(revision: str, into: Path) -> Path:
    """framefeed as of `revision`, unpacked under `into` (a folder to put on PYTHONPATH)."""
    target = into / revision
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", revision, "framefeed"],
                             check=True, capture_output=True).stdout
    target.mkdir(parents=True)
    archive_path = into / f"{revision}.tar"
    archive_path.write_bytes(archive)
    with tarfile.open(archive_path) as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.12, and 3.10/3.11 since their 2023 security releases
            tar.extractall(target, filter="data")
        else:  # pragma: no cover
            tar.extractall(target)  # noqa: S202 - our own repository's archive
    return target


def invoke(library: str, pythonpath: str, path: str, passes: int, worst_case: bool) -> list[dict]:
    """One fresh process of `passes` passes; its passes."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in [pythonpath, os.environ.get("PYTHONPATH", "")] if p))
    if worst_case:
        env |= {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    result = subprocess.run([sys.executable, __file__, "--child", library, path, str(passes)], env=env,
                            capture_output=True, text=True, timeout=600)
    if result.returncode:
        raise RuntimeError(f"{library} failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def summary(passes: list[dict], slow_faults: int) -> dict:
    seconds = [p["seconds"] for p in passes]
    faults = [p["faults"] for p in passes]
    return {"median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds),
            "slow_passes": sum(f > slow_faults for f in faults), "passes": len(passes),
            "median_faults": statistics.median(faults)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of one invocation per contender (default 5)")
    parser.add_argument("--passes", type=int, default=3, help="passes per invocation; the first is dropped (default 3)")
    parser.add_argument("--commit", action="append", default=[], metavar="REV",
                        help="also measure framefeed as of this git commit (repeatable)")
    parser.add_argument("--no-torchcodec", action="store_true", help="leave torchcodec out")
    parser.add_argument("--video", help="the video (default: the generated 10 s 1080p H.264 clip)")
    parser.add_argument("--slow-faults", type=int, default=100_000, help="faults that make a pass slow")
    parser.add_argument("--glibc-worst-case", action="store_true",
                        help="MALLOC_MMAP_THRESHOLD_=65536 MALLOC_TRIM_THRESHOLD_=0 in every process")
    parser.add_argument("--output", help="JSON path (default benchmarks/results/core-cpu-sequential-faults.json)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        library, path, passes = args.child
        print(json.dumps(run_passes(library, path, int(passes))))
        return 0
    if args.passes < 2 or args.rounds < 1:
        parser.error("--passes must be at least 2 (the first is dropped) and --rounds at least 1")

    if args.video:
        video = args.video
    else:
        from framefeed.bench.clips import HD_LONG_RECIPE, make_clip

        video = str(make_clip(HD_LONG_RECIPE).path)
    with tempfile.TemporaryDirectory(prefix="framefeed-faults-") as folder:
        contenders = {"framefeed": ("framefeed", str(REPO))}
        for revision in args.commit:
            contenders[f"framefeed@{revision}"] = ("framefeed", str(export_commit(revision, Path(folder))))
        if not args.no_torchcodec:
            contenders["torchcodec"] = ("torchcodec", "")
        passes: dict[str, list[dict]] = {name: [] for name in contenders}
        names = list(contenders)
        for round_index in range(args.rounds):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                library, pythonpath = contenders[name]
                kept = invoke(library, pythonpath, video, args.passes, args.glibc_worst_case)[1:]
                passes[name] += kept
                print(f"round {round_index}: {name}: " + ", ".join(
                    f"{p['seconds']:.3f} s / {p['faults']} faults" for p in kept), flush=True)
    rows = {name: summary(values, args.slow_faults) for name, values in passes.items()}
    lines = [f"Sequential passes over {Path(video).name} ({passes[names[0]][0]['frames']} frames), "
             f"{args.rounds} rounds x {args.passes - 1} passes per contender (first pass of each process dropped)"
             f"{', glibc worst case' if args.glibc_worst_case else ''}; {datetime.date.today().isoformat()}, "
             f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}.", "",
             "| code | median | min | max | slow passes (>" + f"{args.slow_faults // 1000}k faults) | "
             "median faults per pass |", "| --- | --- | --- | --- | --- | --- |"]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['median_s']:.3f} s | {row['min_s']:.3f} s | {row['max_s']:.3f} s | "
                     f"{row['slow_passes']} of {row['passes']} | {row['median_faults']:,.0f} |")
    print("\n".join(lines))
    output = Path(args.output) if args.output else RESULTS / "core-cpu-sequential-faults.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"date": datetime.date.today().isoformat(), "video": Path(video).name,
                                  "rounds": args.rounds, "passes_per_process": args.passes,
                                  "glibc_worst_case": args.glibc_worst_case, "slow_faults": args.slow_faults,
                                  "summary": rows, "passes": passes}, indent=2) + "\n")
    print(f"\nwritten {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
