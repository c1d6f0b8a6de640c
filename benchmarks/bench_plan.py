"""Issue "decoding as values" speed target: building a plan plus its packet
bundle for 10 random frames of the ~23-minute 640x360 file (what a CUDA-free
DataLoader worker does: open, index, plan, demux the needed packets) costs
<= 1.2x what `VideoDecoder` creation plus `get_frames_at` spends outside
decoding.

"Outside decoding" is measured in the same process and run, interleaved:
the wall time of `VideoDecoder(path)` plus `get_frames_at(indices)`, minus the
time spent inside the backend's `send`, `drain` and `write_rgb` (FFmpeg
decoding and RGB conversion, which the worker does not do). Both sides open
the file and build the exact index; the indices change every run (same
seed for both sides).

Usage: python benchmarks/bench_plan.py [--runs 7]
Writes benchmarks/results/plan-bundle-cpu.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import pickle
import platform
import random
import statistics
import time

from _targets import RESULTS, TARGET_HEADER, RoundRatios

from framefeed import VideoDecoder
from framefeed.bench.clips import LONG_RECIPE, make_clip
from framefeed.engine.bundling import ship_request

LIMIT = 1.2


def decoder_outside_decoding(path: str, indices: list[int]) -> tuple[float, float]:
    """(seconds outside decoding, seconds inside the backend)."""
    inside = 0.0
    start = time.perf_counter()
    decoder = VideoDecoder(path)
    backend = decoder._backend

    def timed(method):
        def call(*args):
            nonlocal inside
            begin = time.perf_counter()
            try:
                return method(*args)
            finally:
                inside += time.perf_counter() - begin
        return call

    backend.send, backend.drain, backend.write_rgb = timed(backend.send), timed(backend.drain), timed(
        backend.write_rgb)
    decoder.get_frames_at(indices)
    total = time.perf_counter() - start
    decoder.close()
    return total - inside, inside


def plan_and_bundle(path: str, indices: list[int]) -> tuple[float, int]:
    start = time.perf_counter()
    plan, bundle = ship_request(path, "exact", indices=indices)
    elapsed = time.perf_counter() - start
    return elapsed, len(pickle.dumps((plan, bundle)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    clip = make_clip(LONG_RECIPE)
    path = str(clip.path)
    count = clip.num_frames
    outside, inside, shipped, sizes = [], [], [], []
    for run in range(args.runs + 1):  # run 0 warms the page cache and imports
        indices = random.Random(run).sample(range(count), 10)
        pair = [("decoder", decoder_outside_decoding), ("bundle", plan_and_bundle)]
        if run % 2:
            pair.reverse()
        for name, function in pair:
            a, b = function(path, indices)
            if run == 0:
                continue
            if name == "decoder":
                outside.append(a)
                inside.append(b)
            else:
                shipped.append(a)
                sizes.append(b)
    figure = RoundRatios.of("time", shipped, outside)  # the two alternate within each run
    result = {
        "clip": clip.name, "frames": count, "runs": args.runs, "machine": platform.platform(),
        "videodecoder_outside_decoding_s": outside, "videodecoder_inside_backend_s": inside,
        "plan_and_bundle_s": shipped, "pickled_plan_and_bundle_bytes": sizes,
        "bundle_over_outside_decoding": figure.as_json(LIMIT),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "plan-bundle-cpu.json").write_text(json.dumps(result, indent=2) + "\n")
    table = "\n".join([
        "# Plan + packet bundle vs VideoDecoder outside decoding (CPU)",
        "",
        f"{clip.name} ({count} frames), 10 random indices per run, {args.runs} interleaved runs.",
        "",
        "| measurement | median s | min-max s |",
        "| --- | --- | --- |",
        f"| VideoDecoder creation + get_frames_at, outside decoding | {statistics.median(outside):.4f} | "
        f"{min(outside):.4f}-{max(outside):.4f} |",
        f"| (inside the backend: decoding + RGB) | {statistics.median(inside):.4f} | "
        f"{min(inside):.4f}-{max(inside):.4f} |",
        f"| ship_request: open + index + plan + bundle | {statistics.median(shipped):.4f} | "
        f"{min(shipped):.4f}-{max(shipped):.4f} |",
        "",
        "Ratio taken within each run (the two alternate); the target passes on their median.",
        "",
        *TARGET_HEADER,
        figure.row("ship_request / VideoDecoder outside decoding, time", LIMIT),
        "",
        f"Pickled plan + bundle: median {statistics.median(sizes) / 1024:.0f} KiB.",
        "",
    ])
    (RESULTS / "plan-bundle-cpu.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
