"""Training-loop throughput (issue 12): clips per second delivered to the loop.

CPU mode (default; a 2-core machine is enough):
- framefeed `ClipLoader(ClipDataset(...), device="cpu", num_workers=2)`;
- the torchcodec recipe: a `Dataset` whose `__getitem__` opens a torchcodec
  `VideoDecoder` and calls `clips_at_random_indices`, in a torch `DataLoader`
  with 2 workers and the default collate;
on the same files with the same clip settings, one shuffled epoch per run,
contenders interleaved, worker start-up included for both.
Target: framefeed clips/s >= 1.0x torchcodec's.

GPU mode (`--mode gpu`, the device check on an H200):
- `ClipLoader(device="cuda")`: workers plan and read packets, a `DecodePool`
  in the main process decodes on NVDEC;
- `DecodePool` alone on the same requests (the same frames of the same files);
- `ClipLoader(device="cpu")` with 14 workers (CPU decoding, 16 cores).
Targets: the CUDA loader >= 0.9x the pool alone, >= 3x the CPU loader.

Every ratio is taken within a run (contenders interleaved run by run) and
reported as the median of those per-run ratios with their min-max, after
`--warmup` warm-up runs.
Files are encoded once with PyAV into `benchmarks/.cache/`.

Usage (repository root):
    PYTHONPATH=. nice python benchmarks/loader_throughput.py [--runs 5]
    PYTHONPATH=. python benchmarks/loader_throughput.py --mode gpu [--runs 3]
Writes benchmarks/results/loader-{cpu,gpu}.{md,json}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from _targets import TARGET_HEADER, RoundRatios
from torch.utils.data import DataLoader, Dataset

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
CACHE = REPO / "benchmarks" / ".cache"


@dataclass(frozen=True)
class Settings:
    """The workload: files, how often each is listed in the dataset, and the
    clips drawn from each item."""

    files: int
    repeat: int
    frames: int
    width: int
    height: int
    gop: int
    num_clips: int
    frames_per_clip: int
    batch_size: int


CPU_SETTINGS = Settings(files=16, repeat=1, frames=250, width=640, height=360, gop=50, num_clips=4,
                        frames_per_clip=8, batch_size=4)
# 1080p batches are large (a 4-item batch of 16-frame clips is 400 MB): the CPU
# loader's 14 workers keep 2 each in shared memory.
GPU_SETTINGS = Settings(files=12, repeat=8, frames=150, width=1920, height=1080, gop=30, num_clips=1,
                        frames_per_clip=16, batch_size=4)


def make_videos(settings: Settings) -> list[str]:
    """`settings.files` H.264 files with B-frames, encoded once, each listed
    `settings.repeat` times (items differ by their random clips)."""
    from framefeed.samples import VideoSpec, encode_video, x264_options

    folder = CACHE / f"loader-{settings.width}x{settings.height}-{settings.frames}f-gop{settings.gop}"
    paths = []
    for i in range(settings.files):
        path = folder / f"video_{i:03d}.mp4"
        if not path.exists():
            encode_video(path, VideoSpec(width=settings.width, height=settings.height, num_frames=settings.frames,
                                         fps=25, codec_options=x264_options(settings.gop), seed=i))
        paths.append(str(path))
    return paths * settings.repeat


# -- contenders ---------------------------------------------------------------------------------


class TorchcodecRecipe(Dataset):
    """torchcodec's documented pattern: open a decoder per item, sample clips."""

    def __init__(self, paths: list[str], settings: Settings) -> None:
        self.paths = paths
        self.settings = settings

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        from torchcodec.decoders import VideoDecoder  # imported by `cpu_mode` before workers fork
        from torchcodec.samplers import clips_at_random_indices

        decoder = VideoDecoder(self.paths[index])
        clips = clips_at_random_indices(decoder, num_clips=self.settings.num_clips,
                                        num_frames_per_clip=self.settings.frames_per_clip)
        return clips.data, index


def torchcodec_epoch(paths: list[str], settings: Settings, workers: int, seed: int) -> int:
    generator = torch.Generator()
    generator.manual_seed(seed)
    loader = DataLoader(TorchcodecRecipe(paths, settings), batch_size=settings.batch_size, shuffle=True,
                        num_workers=workers, generator=generator)
    clips = 0
    for data, _ in loader:
        clips += data.shape[0] * data.shape[1]
    return clips


def clip_dataset(paths: list[str], settings: Settings):
    from framefeed.data import ClipDataset

    return ClipDataset(paths, labels=list(range(len(paths))), sampler="random_indices",
                       num_clips=settings.num_clips, num_frames_per_clip=settings.frames_per_clip)


def loader_epoch(paths: list[str], settings: Settings, workers: int, seed: int, device: str = "cpu",
                 pool=None, context: str | None = None) -> int:
    from framefeed.data import ClipLoader

    loader = ClipLoader(clip_dataset(paths, settings), settings.batch_size, device=device, num_workers=workers,
                        shuffle=True, seed=seed, pool=pool, multiprocessing_context=context)
    clips = 0
    for batch in loader:
        clips += batch.data.shape[0]
    if device != "cpu":
        torch.cuda.synchronize()
    return clips


def pool_requests(paths: list[str], settings: Settings, seed: int) -> list:
    """The requests a `ClipLoader` epoch with `seed` makes: each item's frame
    indices, from the dataset's own plans (computed before timing)."""
    from framefeed.data import ItemKey
    from framefeed.pool import DecodeRequest

    shipping = clip_dataset(paths, settings).with_target(True)
    requests = []
    for index, path in enumerate(paths):
        plan = shipping[ItemKey(index, 0, seed)].planned.plan
        indices = [0] * plan.slot_count
        for target in plan.targets:
            for slot in target.slots:
                indices[slot] = target.frame_index
        requests.append(DecodeRequest(path, indices=indices))
    return requests


def pool_epoch(pool, requests: list, settings: Settings) -> int:
    clips = 0
    for batch in pool.map(requests):
        clips += batch.data.shape[0] // settings.frames_per_clip  # a request's frames are its clips, flat
    torch.cuda.synchronize()
    return clips


# -- measuring ----------------------------------------------------------------------------------


@dataclass
class Measurement:
    contender: str
    clips: int
    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def clips_per_second(self) -> float:
        return self.clips / self.median


def measure(contenders: dict[str, Callable[[int], int]], runs: int, warmup: int) -> list[Measurement]:
    """Run every contender `warmup + runs` times, interleaved (run r of each
    before run r + 1 of any), with seed r; time the timed runs."""
    results = {name: Measurement(name, 0, []) for name in contenders}
    for run in range(warmup + runs):
        for name, epoch in contenders.items():
            began = time.perf_counter()
            clips = epoch(run)
            elapsed = time.perf_counter() - began
            print(f"  run {run}{' (warm-up)' if run < warmup else ''}: {name}: {clips} clips in {elapsed:.2f} s",
                  file=sys.stderr)
            if run >= warmup:
                results[name].seconds.append(elapsed)
                results[name].clips = clips
    return list(results.values())


def machine() -> dict:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    import torchcodec

    return {"date": datetime.date.today().isoformat(), "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "torchcodec": getattr(torchcodec, "__version__", "?"), "gpu": gpu,
            "load_average_1min": round(os.getloadavg()[0], 1)}


def report(name: str, title: str, settings: Settings, measurements: list[Measurement],
           targets: list[tuple[str, str, str, float]], runs: int, warmup: int, extra: list[str] | None = None,
           extra_json: dict | None = None) -> str:
    by_name = {m.contender: m for m in measurements}
    facts = machine()
    lines = [f"# {title}", "",
             f"Measured {facts['date']}, {facts['cpu']}, {facts['cores']} cores, Python {facts['python']}, "
             f"torch {facts['torch']}, torchcodec {facts['torchcodec']}, {facts['gpu']}; median of {runs} "
             f"interleaved runs after {warmup} warm-up run(s), one shuffled epoch per run; load average "
             f"{facts['load_average_1min']} at the end (other jobs share the machine when it exceeds the cores).", "",
             f"Workload: {settings.files} H.264 files {settings.width}x{settings.height}, {settings.frames} frames "
             f"(25 fps, GOP {settings.gop}, B-frames), each listed {settings.repeat} time(s); per item "
             f"{settings.num_clips} random clip(s) of {settings.frames_per_clip} frames; batches of "
             f"{settings.batch_size} items.", "",
             "## Targets", "", "Clips/s ratios taken within each run (the contenders' runs are interleaved, so "
             "a run's contenders share the machine's load); a target passes on their median.", "",
             *TARGET_HEADER]
    verdicts = []
    for description, ours, theirs, limit in targets:
        mine, peer = by_name[ours], by_name[theirs]
        figure = RoundRatios.of("rate", mine.seconds, peer.seconds, mine.clips, peer.clips)
        verdicts.append({"target": description, **figure.as_json(limit)})
        lines.append(figure.row(description, limit))
    lines += ["", "## Measurements", "", "| contender | clips/s | median | min | max | clips per run |",
              "| --- | --- | --- | --- | --- | --- |"]
    for m in measurements:
        lines.append(f"| {m.contender} | {m.clips_per_second:.1f} | {m.median:.2f} s | {min(m.seconds):.2f} s | "
                     f"{max(m.seconds):.2f} s | {m.clips} |")
    lines += extra or []
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text)
    document = {"machine": facts, "settings": asdict(settings), "runs": runs, "warmup": warmup,
                "measurements": [{**asdict(m), "median": m.median, "clips_per_second": m.clips_per_second}
                                 for m in measurements], "targets": verdicts, **(extra_json or {})}
    (RESULTS / f"{name}.json").write_text(json.dumps(document, indent=2) + "\n")
    return text


# -- modes --------------------------------------------------------------------------------------------


def cpu_mode(args: argparse.Namespace) -> None:
    settings = CPU_SETTINGS
    paths = make_videos(settings)
    # As a training script would, import both libraries before the workers fork:
    # loading torchcodec's FFmpeg core takes seconds, not to be paid per worker.
    import torchcodec.decoders  # noqa: F401
    import torchcodec.samplers  # noqa: F401

    import framefeed.data  # noqa: F401
    ours, theirs = f"framefeed ClipLoader, {args.workers} workers", f"torchcodec recipe, {args.workers} workers"
    measurements = measure({
        ours: lambda run: loader_epoch(paths, settings, args.workers, run),
        theirs: lambda run: torchcodec_epoch(paths, settings, args.workers, run),
    }, args.runs, args.warmup)
    targets = [("ClipLoader / torchcodec recipe, clips/s", ours, theirs, 1.0)]
    item_seconds = item_cpu_seconds(paths, settings, args.item_runs)
    # torchcodec's CPU time over framefeed's, pass by pass (higher: framefeed does less work per item).
    per_pass = RoundRatios.of("time", item_seconds["torchcodec"], item_seconds["framefeed"])
    extra = ["", "## CPU time per item (in this process, one thread)", "",
             "Wall-clock runs on a shared machine swing with other jobs; the CPU time of the work each worker "
             f"does for one item does not. Median of {args.item_runs} interleaved passes over every item "
             "(`time.process_time`, torch and FFmpeg on one thread each, as in a worker).", "",
             "| contender | CPU seconds per item |", "| --- | --- |"]
    extra += [f"| {name} | {statistics.median(values) / len(paths) * 1000:.1f} ms |"
              for name, values in item_seconds.items()]
    extra += ["", f"torchcodec / framefeed CPU time per item, per pass: {per_pass.text()} (median (min-max); "
              f"ratio of medians {per_pass.ratio_of_medians:.2f}x)"]
    print(report("loader-cpu", "Training-loop throughput on CPU: ClipLoader vs the torchcodec recipe", settings,
                 measurements, targets, args.runs, args.warmup, extra,
                 {"item_cpu_seconds_per_pass": item_seconds,
                  "item_cpu_ratio_torchcodec_over_framefeed": per_pass.as_json()}))


def item_cpu_seconds(paths: list[str], settings: Settings, passes: int) -> dict[str, list[float]]:
    """CPU seconds of one pass of `dataset[i]` over every item, per contender,
    passes interleaved (after one untimed pass each)."""
    from framefeed.data import ItemKey

    torch.set_num_threads(1)
    ours, theirs = clip_dataset(paths, settings), TorchcodecRecipe(paths, settings)
    contenders = {"framefeed": lambda i, run: ours[ItemKey(i, run, 0)], "torchcodec": lambda i, run: theirs[i]}
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    for run in range(passes + 1):
        for name, fetch in contenders.items():
            began = time.process_time()
            for index in range(len(paths)):
                fetch(index, run)
            if run:
                seconds[name].append(time.process_time() - began)
    return seconds


def gpu_mode(args: argparse.Namespace) -> None:
    if not torch.cuda.is_available():
        raise SystemExit("loader_throughput --mode gpu: no CUDA GPU visible to torch; run it on the GPU machine")
    from framefeed.pool import DecodePool

    settings = GPU_SETTINGS
    batch_bytes = settings.batch_size * settings.num_clips * settings.frames_per_clip * settings.width \
        * settings.height * 3
    shared = shutil.disk_usage("/dev/shm").total if os.path.isdir("/dev/shm") else 0
    if shared < 2 * args.cpu_workers * batch_bytes:  # DataLoader workers hand batches over in /dev/shm
        print(f"warning: /dev/shm holds {shared / 2**30:.1f} GiB; the CPU loader's {args.cpu_workers} workers may "
              f"need {2 * args.cpu_workers * batch_bytes / 2**30:.1f} GiB (docker run --shm-size=16g)", file=sys.stderr)
    paths = make_videos(settings)
    loader_name = f"ClipLoader(device='cuda'), {args.gpu_workers} workers"
    pool_name = "DecodePool alone, same requests"
    cpu_name = f"ClipLoader(device='cpu'), {args.cpu_workers} workers"
    # The pool's requests are the loader's frames, planned before any timing.
    requests = {run: pool_requests(paths, settings, run) for run in range(args.warmup + args.runs)}
    # This process holds CUDA and the pool's threads: no worker may be forked from it (issue 22, item 7),
    # the CPU loader's neither; ClipLoader(device="cuda") defaults to forkserver and refuses fork.
    with DecodePool("cuda:0") as pool:
        measurements = measure({
            loader_name: lambda run: loader_epoch(paths, settings, args.gpu_workers, run, device="cuda:0", pool=pool),
            pool_name: lambda run: pool_epoch(pool, requests[run], settings),
            cpu_name: lambda run: loader_epoch(paths, settings, args.cpu_workers, run, context="forkserver"),
        }, args.runs, args.warmup)
        print(pool.stats(), file=sys.stderr)
    targets = [("ClipLoader(cuda) / DecodePool alone, clips/s", loader_name, pool_name, 0.9),
               (f"ClipLoader(cuda) / ClipLoader(cpu, {args.cpu_workers} workers), clips/s", loader_name, cpu_name,
                3.0)]
    print(report("loader-gpu", "Training-loop throughput on NVDEC: ClipLoader(cuda) vs DecodePool and CPU workers",
                 settings, measurements, targets, args.runs, args.warmup))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2, help="CPU mode: DataLoader workers of both contenders")
    parser.add_argument("--item-runs", type=int, default=5, help="CPU mode: in-process passes for CPU time per item")
    parser.add_argument("--gpu-workers", type=int, default=8, help="GPU mode: workers of ClipLoader(device='cuda')")
    parser.add_argument("--cpu-workers", type=int, default=14, help="GPU mode: workers of ClipLoader(device='cpu')")
    parser.add_argument("--prepare-only", action="store_true", help="encode the inputs and stop")
    args = parser.parse_args()
    if args.prepare_only:
        make_videos(GPU_SETTINGS if args.mode == "gpu" else CPU_SETTINGS)
        return
    (gpu_mode if args.mode == "gpu" else cpu_mode)(args)


if __name__ == "__main__":
    main()
