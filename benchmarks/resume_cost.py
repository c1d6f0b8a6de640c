"""What resuming a `ClipLoader` mid-epoch costs (issue 25).

An epoch of 64 videos (16 H.264 files listed 4 times, 4 random 8-frame
clips per item, batches of 4 items) is interrupted after its first half,
its state saved as JSON. Each round, for each `num_workers` in 0, 1, 2 (a
fresh loader each time, so worker start-up counts as it does after a
restart):

- half epoch: a loader decoding the first 8 batches (32 videos) from
  `iter()`: what a job pays that replays the epoch up to where it stopped;
- resumed: a new loader given the state (`load_state_dict` from the JSON
  text), timed from `load_state_dict` to its first batch (the 33rd to 36th
  videos);
- baseline: a loader whose sampler lists exactly the remaining videos,
  timed from `iter()` to its first batch: the same videos decoded, with
  nothing to skip.
Resumed and baseline run twice each per round (B R R B, or R B B R), the
faster of each pair counting.

Resume cost = resumed - baseline: checking the state, walking the epoch's
order past the consumed half, and whatever else resuming adds. The figure
is the cost over the half epoch's decoding, the median of per-round ratios
with its min-max. Target: < 5% for every `num_workers`. The frames decoded
by the resumed loader over the rest of the epoch are counted too (they
must equal the baseline's: the consumed half is not decoded again).

Usage (repository root; a quiet machine for figures worth keeping):
    PYTHONPATH=. nice python benchmarks/resume_cost.py [--rounds 7] [--workers 0 1 2]
Writes benchmarks/results/resume-cpu.{md,json} (`--out` for another folder).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
CACHE = REPO / "benchmarks" / ".cache"

FILES, REPEAT, FRAMES, WIDTH, HEIGHT, GOP = 16, 4, 120, 320, 240, 30
NUM_CLIPS, FRAMES_PER_CLIP, BATCH_SIZE = 4, 8, 4
SEED = 2024
TARGET = 0.05


def make_videos() -> list[str]:
    """The 16 files (encoded once with PyAV), each listed 4 times: 64 items."""
    from framefeed.samples import VideoSpec, encode_video, x264_options

    folder = CACHE / f"resume-{WIDTH}x{HEIGHT}-{FRAMES}f-gop{GOP}"
    paths = []
    for i in range(FILES):
        path = folder / f"video_{i:03d}.mp4"
        if not path.exists():
            encode_video(path, VideoSpec(width=WIDTH, height=HEIGHT, num_frames=FRAMES, fps=25,
                                         codec_options=x264_options(GOP), seed=i))
        paths.append(str(path))
    return paths * REPEAT


def make_loader(paths: list[str], workers: int, sampler=None):
    from framefeed.data import ClipDataset, ClipLoader

    dataset = ClipDataset(paths, labels=list(range(len(paths))), sampler="random_indices", num_clips=NUM_CLIPS,
                          num_frames_per_clip=FRAMES_PER_CLIP)
    if sampler is not None:
        return ClipLoader(dataset, BATCH_SIZE, num_workers=workers, sampler=sampler, seed=SEED)
    return ClipLoader(dataset, BATCH_SIZE, num_workers=workers, shuffle=True, seed=SEED)


class FrameCounter:
    """Frames decoded by CPU backends in this process and in forked workers
    (a shared counter, read after a run)."""

    def __init__(self) -> None:
        import multiprocessing

        from framefeed.engine.backends.cpu_fallback.backend import CpuBackend

        self.value = multiprocessing.get_context("fork").Value("q", 0)
        counter, original = self.value, CpuBackend.close

        def close(backend):
            with counter.get_lock():
                counter.value += backend.frames_decoded
            original(backend)

        CpuBackend.close = close

    def take(self) -> int:
        with self.value.get_lock():
            count, self.value.value = self.value.value, 0
        return count


def half_epoch(paths: list[str], workers: int, counter: FrameCounter) -> tuple[float, str, list[int], int]:
    """Seconds to decode the first half; the state after it (JSON text), the
    epoch's order (from the batches) and the frames decoded."""
    loader = make_loader(paths, workers)
    loader.set_epoch(0)
    half = len(paths) // BATCH_SIZE // 2
    counter.take()
    began = time.perf_counter()
    order: list[int] = []
    batches = iter(loader)
    for count, batch in enumerate(batches, 1):
        order.extend(dict.fromkeys(batch.indices.tolist()))
        if count == half:
            break
    seconds = time.perf_counter() - began
    state = json.dumps(loader.state_dict())
    batches.close()  # the interruption: its workers stop here, not while the next loader is timed
    settle()
    return seconds, state, order, counter.take()


def settle() -> None:
    """Collect what the last run left (worker iterators, shared memory) before the next is timed."""
    gc.collect()
    time.sleep(0.2)


def first_batch(loader, counter: FrameCounter, state: str | None = None) -> tuple[float, float, list[int], int]:
    """Seconds from `load_state_dict` (or `iter()`) to the first batch; of them, in `load_state_dict`; the
    indices of the whole run; the frames it decoded (the rest of the epoch
    is iterated, untimed, so that the count does not depend on how far
    workers had prefetched)."""
    counter.take()
    began = time.perf_counter()
    if state is not None:
        loader.load_state_dict(json.loads(state))
    loaded = time.perf_counter() - began
    loader.set_epoch(0)
    iterator = iter(loader)
    batch = next(iterator)
    seconds = time.perf_counter() - began
    indices = list(dict.fromkeys(batch.indices.tolist()))
    for batch in iterator:
        indices.extend(dict.fromkeys(batch.indices.tolist()))
    del iterator
    settle()
    return seconds, loaded, indices, counter.take()


def measure(paths: list[str], workers: int, rounds: int, counter: FrameCounter) -> dict:
    epoch_order = list(make_loader(paths, 0).sampler)  # epoch 0's shuffled order
    rows = []
    for round_index in range(rounds + 1):  # round 0 warms the page cache and imports
        half_seconds, state, order, half_frames = half_epoch(paths, workers, counter)
        assert order == epoch_order[:len(order)]
        runs: dict[str, list] = {"resumed": [], "baseline": []}
        # Twice each, in the order B R R B (or R B B R): neither side always runs right after the
        # interruption, and the faster of two runs drops a spike of load from elsewhere.
        first, second = ("resumed", "baseline") if round_index % 2 else ("baseline", "resumed")
        for name in (first, second, second, first):
            if name == "resumed":
                runs[name].append(first_batch(make_loader(paths, workers), counter, state))
            else:
                runs[name].append(first_batch(make_loader(paths, workers, sampler=epoch_order[len(order):]), counter))
        resumed_seconds, load_seconds, resumed_indices, resumed_frames = min(runs["resumed"])
        base_seconds, _, base_indices, base_frames = min(runs["baseline"])
        assert resumed_indices == base_indices == epoch_order[len(order):], (resumed_indices, base_indices)
        row = dict(half_seconds=half_seconds, resumed_seconds=resumed_seconds, baseline_seconds=base_seconds,
                   cost_seconds=resumed_seconds - base_seconds, load_state_dict_seconds=load_seconds,
                   ratio=(resumed_seconds - base_seconds) / half_seconds, half_frames=half_frames,
                   resumed_frames=resumed_frames, baseline_frames=base_frames)
        print(f"  workers={workers} round {round_index}{' (warm-up)' if not round_index else ''}: half epoch "
              f"{half_seconds:.2f} s ({half_frames} frames); to the first batch: resumed "
              f"{resumed_seconds * 1e3:.0f} ms (load_state_dict {load_seconds * 1e3:.1f} ms), baseline {base_seconds * 1e3:.0f} ms; ratio {row['ratio']:+.2%}; "
              f"frames of the second half: resumed {resumed_frames}, baseline {base_frames}", file=sys.stderr)
        if round_index:
            rows.append(row)
    ratios = [row["ratio"] for row in rows]
    return dict(workers=workers, rounds=rows, median_ratio=statistics.median(ratios), min_ratio=min(ratios),
                max_ratio=max(ratios), median_half_seconds=statistics.median(r["half_seconds"] for r in rows),
                median_load_state_dict_ms=statistics.median(r["load_state_dict_seconds"] for r in rows) * 1e3,
                median_cost_ms=statistics.median(r["cost_seconds"] for r in rows) * 1e3)


def report(results: list[dict], environment: dict) -> str:
    lines = ["# Resuming a ClipLoader mid-epoch: cost against decoding the half epoch (CPU)", "",
             f"{environment['date']}, {environment['machine']}, {environment['cpus']} CPUs, torch "
             f"{environment['torch']}. 64 videos ({FILES} {WIDTH}x{HEIGHT} H.264 files x {REPEAT}, {FRAMES} "
             f"frames, GOP {GOP}), {NUM_CLIPS} clips of {FRAMES_PER_CLIP} frames each, batches of {BATCH_SIZE}; "
             "interrupted after 8 of 16 batches. Cost = (load_state_dict to first batch) - (a loader over exactly "
             "the remaining videos, iter() to first batch), over the first half's decoding time; "
             f"median of {len(results[0]['rounds'])} per-round ratios (min-max). Target < {TARGET:.0%}.", "",
             "| num_workers | resume cost / half epoch | min - max | cost (median) | of it, load_state_dict | "
             "half epoch (median) | frames decoded after resuming = baseline's |",
             "|---|---|---|---|---|---|---|"]
    for result in results:
        same = all(r["resumed_frames"] == r["baseline_frames"] for r in result["rounds"])
        lines.append(f"| {result['workers']} | {result['median_ratio']:+.2%} | {result['min_ratio']:+.2%} - "
                     f"{result['max_ratio']:+.2%} | {result['median_cost_ms']:.0f} ms | "
                     f"{result['median_load_state_dict_ms']:.1f} ms | "
                     f"{result['median_half_seconds']:.2f} s | {'yes' if same else 'NO'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    paths = make_videos()
    counter = FrameCounter()
    results = [measure(paths, workers, args.rounds, counter) for workers in args.workers]
    environment = dict(date=datetime.date.today().isoformat(), machine=platform.platform(), cpus=os.cpu_count(),
                       torch=torch.__version__)
    text = report(results, environment)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "resume-cpu.md").write_text(text)
    (args.out / "resume-cpu.json").write_text(json.dumps(dict(environment=environment, results=results), indent=2))
    if any(result["median_ratio"] >= TARGET for result in results):
        print(f"target missed: a median ratio is >= {TARGET:.0%}", file=sys.stderr)


if __name__ == "__main__":
    main()
