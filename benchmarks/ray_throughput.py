"""Issue "framefeed.ray.read_clips" speed targets, on a local Ray instance
with the machine's CPUs, contenders interleaved in the same run:

- every frame of the same files: frames/s through
  `read_clips(sampler="all", decode="cpu")` >= 1.0x `ray.data.read_videos`
  (decord, one task per file, one row per frame);
- random clips (`random_indices`, 4 clips x 8 frames per file): clips/s
  through `read_clips(decode="cpu")` >= 0.8x the in-process `ClipLoader`
  (torch DataLoader; the better of 0 and `--cpus` workers).

Each contender's time runs from building its dataset/loader to the last
batch in this process (`iter_batches` / loader iteration), after one
warm-up run each (Ray's worker processes started and imports done). Both
Ray contenders emit HWC frames (`dimension_order="NHWC"`, decord's layout).
read_clips decodes with one FFmpeg thread per Ray task (its default);
`num_ffmpeg_threads=0` (FFmpeg decides, as decord does in read_videos) is
measured alongside.

Usage: nice python benchmarks/ray_throughput.py [--runs 3] [--cpus 2]
Writes benchmarks/results/ray-cpu.{md,json}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from framefeed.samples import VideoSpec, encode_video, x264_options

RESULTS = Path(__file__).resolve().parent / "results"
WIDTH, HEIGHT, FRAMES, GOP = 640, 360, 200, 50
ALL_FILES, CLIP_FILES = 8, 16
CLIPS, FRAMES_PER_CLIP = 4, 8


def make_files(count: int) -> list[str]:
    """`count` 640x360 H.264 files (200 frames, GOP 50, B-frames), generated once."""
    root = Path(os.environ.get("FRAMEFEED_CACHE", Path.home() / ".cache" / "framefeed")) / "ray-bench"
    paths = []
    for i in range(count):
        path = root / f"h264_{WIDTH}x{HEIGHT}_{FRAMES}_{i}.mp4"
        if not path.exists():
            encode_video(path, VideoSpec(width=WIDTH, height=HEIGHT, num_frames=FRAMES, fps=25, seed=i,
                                         codec_options=x264_options(GOP)))
        paths.append(str(path))
    return paths


# -- contenders: each returns the frames (or clips) it delivered -------------------------------------------------


def read_videos_frames(paths: list[str]) -> int:
    import ray

    frames = 0
    for batch in ray.data.read_videos(paths).iter_batches(batch_format="numpy"):
        frames += len(batch["frame"])
    return frames


def read_clips_frames(paths: list[str], num_ffmpeg_threads: int = 1) -> int:
    import framefeed.ray

    frames = 0
    ds = framefeed.ray.read_clips(paths, sampler="all", num_frames_per_clip=FRAMES_PER_CLIP,
                                  dimension_order="NHWC", num_ffmpeg_threads=num_ffmpeg_threads)
    for batch in ds.iter_batches(batch_format="numpy"):
        frames += batch["frames"].shape[0] * batch["frames"].shape[1]
    return frames


def read_clips_clips(paths: list[str], seed: int) -> int:
    import framefeed.ray

    clips = 0
    ds = framefeed.ray.read_clips(paths, sampler="random_indices", num_clips=CLIPS,
                                  num_frames_per_clip=FRAMES_PER_CLIP, seed=seed, dimension_order="NHWC")
    for batch in ds.iter_batches(batch_format="numpy"):
        clips += len(batch["frames"])
    return clips


def loader_clips(paths: list[str], seed: int, workers: int) -> int:
    from framefeed.data import ClipDataset, ClipLoader

    dataset = ClipDataset(paths, sampler="random_indices", num_clips=CLIPS, num_frames_per_clip=FRAMES_PER_CLIP,
                          dimension_order="NHWC")
    clips = 0
    with ClipLoader(dataset, batch_size=2, device="cpu", num_workers=workers, seed=seed,
                    multiprocessing_context="fork" if workers else None) as loader:
        for batch in loader:
            clips += len(batch)
    return clips


# -- measuring -------------------------------------------------------------------------------------------------------


def interleaved(contenders: dict[str, Callable[[int], int]], runs: int) -> dict[str, dict]:
    """Time each contender `runs` times, round-robin, after one warm-up run each."""
    for name, run in contenders.items():
        run(-1)
        print(f"  warmed up {name}", flush=True)
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    counts: dict[str, int] = {}
    for i in range(runs):
        for name, run in contenders.items():
            start = time.perf_counter()
            counts[name] = run(i)
            seconds[name].append(time.perf_counter() - start)
            print(f"  run {i}: {name}: {counts[name]} in {seconds[name][-1]:.2f} s", flush=True)
    return {name: {"count": counts[name], "seconds": seconds[name], "median_s": statistics.median(seconds[name]),
                   "per_second": counts[name] / statistics.median(seconds[name])} for name in contenders}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()

    import ray

    all_paths = make_files(max(ALL_FILES, CLIP_FILES))
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    DataContext.get_current().print_on_execution_start = False

    print("every frame", flush=True)
    every = interleaved({
        "ray.data.read_videos (decord)": lambda i: read_videos_frames(all_paths[:ALL_FILES]),
        "framefeed.ray.read_clips(sampler='all')": lambda i: read_clips_frames(all_paths[:ALL_FILES]),
        "framefeed.ray.read_clips(sampler='all', num_ffmpeg_threads=0)":
            lambda i: read_clips_frames(all_paths[:ALL_FILES], 0),
    }, args.runs)
    print("random clips", flush=True)
    clips = interleaved({
        "framefeed.ray.read_clips(sampler='random_indices')": lambda i: read_clips_clips(all_paths[:CLIP_FILES], i),
        "ClipLoader, 0 workers": lambda i: loader_clips(all_paths[:CLIP_FILES], i, 0),
        f"ClipLoader, {args.cpus} workers": lambda i: loader_clips(all_paths[:CLIP_FILES], i, args.cpus),
    }, args.runs)
    ray.shutdown()

    ours_frames = every["framefeed.ray.read_clips(sampler='all')"]["per_second"]
    theirs_frames = every["ray.data.read_videos (decord)"]["per_second"]
    ours_clips = clips["framefeed.ray.read_clips(sampler='random_indices')"]["per_second"]
    loader_best = max(v["per_second"] for k, v in clips.items() if k.startswith("ClipLoader"))
    targets = [
        ("every frame: read_clips / read_videos frames/s", ours_frames / theirs_frames, 1.0),
        ("random clips: read_clips / best in-process ClipLoader clips/s", ours_clips / loader_best, 0.8),
    ]
    write(args, every, clips, targets)


def write(args: argparse.Namespace, every: dict, clips: dict, targets: list[tuple[str, float, float]]) -> None:
    import ray

    today = datetime.date.today().isoformat()
    machine = (f"{platform.machine()}, {os.cpu_count()} cores (Ray given {args.cpus}), Python "
               f"{platform.python_version()}, torch {torch.__version__}, Ray {ray.__version__}")
    lines = [
        "# Ray Data on CPU: framefeed.ray.read_clips vs ray.data.read_videos and ClipLoader",
        "",
        f"Measured {today}, {machine}; local Ray instance; median of {args.runs} interleaved runs after one "
        f"warm-up run each. Files: 640x360 H.264 (B-frames, GOP {GOP}), {FRAMES} frames each; "
        f"{ALL_FILES} files for every frame, {CLIP_FILES} for random clips ({CLIPS} clips x "
        f"{FRAMES_PER_CLIP} frames per file). `python benchmarks/ray_throughput.py --runs {args.runs}`.",
        "",
        "## Targets",
        "",
        "| target | ratio | limit | result |",
        "| --- | --- | --- | --- |",
    ]
    for description, ratio, limit in targets:
        lines.append(f"| {description} | {ratio:.2f}x | >= {limit:.1f}x | {'pass' if ratio >= limit else 'FAIL'} |")
    lines += ["", "## All measurements", "", "| workload | contender | delivered | median | runs (s) | per second |",
              "| --- | --- | --- | --- | --- | --- |"]
    for workload, table, unit in (("every frame", every, "frames"), ("random clips", clips, "clips")):
        for name, m in table.items():
            runs = ", ".join(f"{s:.2f}" for s in m["seconds"])
            lines.append(f"| {workload} | {name} | {m['count']} {unit} | {m['median_s']:.2f} s | {runs} | "
                         f"{m['per_second']:.1f} |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ray-cpu.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "ray-cpu.json").write_text(json.dumps({
        "date": today, "machine": machine, "runs": args.runs, "every_frame": every, "random_clips": clips,
        "targets": [{"description": d, "ratio": r, "limit": limit} for d, r, limit in targets]}, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
