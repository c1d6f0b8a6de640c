"""Issue "framefeed.ray.read_clips" speed targets, on a local Ray instance
with the machine's CPUs, contenders interleaved in the same run:

- every frame of the same files: frames/s through
  `read_clips(sampler="all", decode="cpu")` >= 1.0x `ray.data.read_videos`
  (decord, one task per file, one row per frame);
- random clips (`random_indices`, 4 clips x 8 frames per file): clips/s
  through `read_clips(decode="cpu")` >= 0.8x the in-process `ClipLoader`
  (torch DataLoader; the better of 0 and `--cpus` workers in each round).

Each contender's time runs from building its dataset/loader to the last
batch in this process (`iter_batches` / loader iteration), after one
warm-up run each (Ray's worker processes started and imports done). Both
Ray contenders emit HWC frames (`dimension_order="NHWC"`, decord's layout)
and are consumed in batches of the same number of frames (`BATCH_FRAMES`:
256 rows of read_videos, 32 clips of 8 frames of read_clips). Asking
read_clips for 256 *clips* per batch, as an earlier version of this script
did, makes every batch 2048 frames (1.4 GB here): the whole dataset becomes
one batch that Ray can only assemble, single-threaded, after the last task
ends; that row is still measured, for reference. read_clips decodes with one
FFmpeg thread per Ray task (its default); `num_ffmpeg_threads=0` (FFmpeg
decides, as decord does in read_videos) is measured alongside.

Every target is the median of the ratios within each round (contenders run
back to back in a round) with their min-max (`_targets.RoundRatios`).

Usage: nice python benchmarks/ray_throughput.py [--runs 5] [--cpus 2] [--all-files 8] [--clip-files 16]
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
from _targets import TARGET_HEADER, RoundRatios

from framefeed.samples import VideoSpec, encode_video, x264_options

RESULTS = Path(__file__).resolve().parent / "results"
WIDTH, HEIGHT, FRAMES, GOP = 640, 360, 200, 50
ALL_FILES, CLIP_FILES = 8, 16
CLIPS, FRAMES_PER_CLIP = 4, 8
# Frames per batch handed to the loop, for both Ray contenders (read_videos' default batch_size).
BATCH_FRAMES = 256


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
    for batch in ray.data.read_videos(paths).iter_batches(batch_format="numpy", batch_size=BATCH_FRAMES):
        frames += len(batch["frame"])
    return frames


def read_clips_frames(paths: list[str], num_ffmpeg_threads: int = 1,
                      batch_clips: int = BATCH_FRAMES // FRAMES_PER_CLIP) -> int:
    import framefeed.ray

    frames = 0
    ds = framefeed.ray.read_clips(paths, sampler="all", num_frames_per_clip=FRAMES_PER_CLIP,
                                  dimension_order="NHWC", num_ffmpeg_threads=num_ffmpeg_threads)
    for batch in ds.iter_batches(batch_format="numpy", batch_size=batch_clips):
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
    """Time each contender `runs` times, round-robin, after one warm-up run each:
    `seconds[i]` of every contender belongs to round i."""
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


READ_VIDEOS = "ray.data.read_videos (decord)"
READ_CLIPS_ALL = f"framefeed.ray.read_clips(sampler='all'), batches of {BATCH_FRAMES // FRAMES_PER_CLIP} clips"
READ_CLIPS_RANDOM = "framefeed.ray.read_clips(sampler='random_indices')"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--all-files", type=int, default=ALL_FILES, help="files read whole (default 8)")
    parser.add_argument("--clip-files", type=int, default=CLIP_FILES, help="files sampled for clips (default 16)")
    args = parser.parse_args()

    import ray

    all_paths = make_files(max(args.all_files, args.clip_files))
    every_paths, clip_paths = all_paths[:args.all_files], all_paths[:args.clip_files]
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    DataContext.get_current().print_on_execution_start = False

    print("every frame", flush=True)
    every = interleaved({
        READ_VIDEOS: lambda i: read_videos_frames(every_paths),
        READ_CLIPS_ALL: lambda i: read_clips_frames(every_paths),
        "framefeed.ray.read_clips(sampler='all', num_ffmpeg_threads=0)": lambda i: read_clips_frames(every_paths, 0),
        "framefeed.ray.read_clips(sampler='all'), batches of 256 clips (2048 frames)":
            lambda i: read_clips_frames(every_paths, batch_clips=256),
    }, args.runs)
    print("random clips", flush=True)
    loaders = ("ClipLoader, 0 workers", f"ClipLoader, {args.cpus} workers")
    clips = interleaved({
        READ_CLIPS_RANDOM: lambda i: read_clips_clips(clip_paths, i),
        loaders[0]: lambda i: loader_clips(clip_paths, i, 0),
        loaders[1]: lambda i: loader_clips(clip_paths, i, args.cpus),
    }, args.runs)
    ray.shutdown()

    # The better ClipLoader in each round (the same clips: the faster is the better).
    best_loader = [min(pair) for pair in zip(*(clips[name]["seconds"] for name in loaders), strict=True)]
    targets = [
        ("every frame: read_clips / read_videos frames/s",
         RoundRatios.of("rate", every[READ_CLIPS_ALL]["seconds"], every[READ_VIDEOS]["seconds"],
                        every[READ_CLIPS_ALL]["count"], every[READ_VIDEOS]["count"]), 1.0),
        ("random clips: read_clips / better in-process ClipLoader clips/s",
         RoundRatios.of("rate", clips[READ_CLIPS_RANDOM]["seconds"], best_loader), 0.8),
    ]
    write(args, every, clips, targets)


def write(args: argparse.Namespace, every: dict, clips: dict, targets: list[tuple[str, RoundRatios, float]]) -> None:
    import ray

    today = datetime.date.today().isoformat()
    machine = (f"{platform.machine()}, {os.cpu_count()} cores (Ray given {args.cpus}), Python "
               f"{platform.python_version()}, torch {torch.__version__}, Ray {ray.__version__}, load average "
               f"{os.getloadavg()[0]:.1f} at the end")
    lines = [
        "# Ray Data on CPU: framefeed.ray.read_clips vs ray.data.read_videos and ClipLoader",
        "",
        f"Measured {today}, {machine}; local Ray instance; {args.runs} interleaved rounds after one "
        f"warm-up run each. Files: 640x360 H.264 (B-frames, GOP {GOP}), {FRAMES} frames each; "
        f"{args.all_files} files for every frame (batches of {BATCH_FRAMES} frames for both), {args.clip_files} "
        f"for random clips ({CLIPS} clips x {FRAMES_PER_CLIP} frames per file). "
        f"`python benchmarks/ray_throughput.py --runs {args.runs}`.",
        "",
        "## Targets",
        "",
        "Ratios taken within each round (contenders run back to back); a target passes on their median.",
        "",
        *TARGET_HEADER,
    ]
    lines += [figure.row(description, limit) for description, figure, limit in targets]
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
        "date": today, "machine": machine, "runs": args.runs, "batch_frames": BATCH_FRAMES,
        "every_frame": every, "random_clips": clips,
        "targets": [{"description": d, **figure.as_json(limit)} for d, figure, limit in targets]}, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
