"""Issue "framefeed core" speed targets, against torchcodec and plain PyAV in
the same run:

- exact-mode creation on the ~23-minute 640x360 file: time <= 1.0x torchcodec's;
- approximate-mode creation on it: time <= 1.2x a bare `av.open`;
- sequential decode of every frame of a 1080p 30 fps clip: frames/s >= 1.0x torchcodec's;
- 10 random indices of that clip in one get_frames_at: time <= 1.0x torchcodec's.

Usage: python benchmarks/bench_core.py [--runs 7]
Writes benchmarks/results/core-cpu.{md,json}.
"""

from __future__ import annotations

import argparse

from _targets import Target, write_results

from framefeed.bench.clips import HD_LONG_RECIPE, LONG_RECIPE, make_clip
from framefeed.bench.contenders import Framefeed, PyAV, Torchcodec
from framefeed.bench.runner import run_suite
from framefeed.bench.workloads import WORKLOADS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    long_clip = make_clip(LONG_RECIPE)
    hd_clip = make_clip(HD_LONG_RECIPE)
    contenders = [Framefeed("cpu"), Torchcodec("cpu"), PyAV("cpu")]
    measurements, skipped = [], []
    for clips, names in ([long_clip], ["create_exact", "create_approximate"]), \
                        ([hd_clip], ["sequential", "random_access"]):
        found, missing = run_suite(clips, [WORKLOADS[n] for n in names], contenders,
                                   runs=args.runs, warmup=args.warmup, on_step=None)
        measurements += found
        skipped += [s for s in missing if s not in skipped]
    ff, tc, pyav = "framefeed (cpu)", "torchcodec (cpu)", "pyav (cpu)"
    targets = [
        Target("exact creation, 23-min 640x360: framefeed / torchcodec time", long_clip.name, "create_exact",
               ff, tc, "time", 1.0),
        Target("approximate creation, 23-min 640x360: framefeed / bare av.open time", long_clip.name,
               "create_approximate", ff, pyav, "time", 1.2),
        Target("sequential decode 1080p: framefeed / torchcodec frames/s", hd_clip.name, "sequential",
               ff, tc, "fps", 1.0),
        Target("10 random indices 1080p: framefeed / torchcodec time", hd_clip.name, "random_access",
               ff, tc, "time", 1.0),
    ]
    print(write_results("core-cpu", "Core VideoDecoder on CPU: framefeed vs torchcodec 0.13.0 and PyAV",
                        [long_clip, hd_clip], measurements, skipped, targets, args.runs, args.warmup, ["cpu"]))


if __name__ == "__main__":
    main()
