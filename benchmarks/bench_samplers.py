"""Issue "framefeed.samplers" speed targets, against torchcodec 0.13.0 (and
plain PyAV seek-and-decode for reference) in the same run:

- the approximate-mode tutorial workload on the ~23-minute 640x360 file: a new
  decoder, then clips_at_random_indices(num_clips=5, num_frames_per_clip=2), in
  exact and in approximate mode: framefeed time <= 0.8x torchcodec's;
- clips_at_regular_timestamps(seconds_between_clip_starts=1, num_frames_per_clip=4)
  and clips_at_random_timestamps(num_clips=10, num_frames_per_clip=4) on the
  1080p clip: framefeed time <= 0.9x torchcodec's.

Usage: python benchmarks/bench_samplers.py [--runs 7]
Writes benchmarks/results/samplers-cpu.{md,json}.
"""

from __future__ import annotations

from _targets import Target, cpu_peers, parse_args, run_groups, write_results

from framefeed.bench.clips import HD_LONG_RECIPE, LONG_RECIPE, make_clip


def main() -> None:
    args = parse_args(__doc__)
    long_clip = make_clip(LONG_RECIPE)
    hd_clip = make_clip(HD_LONG_RECIPE)
    measurements, skipped = run_groups(
        [(long_clip, ["tutorial_exact", "tutorial_approximate"]),
         (hd_clip, ["clips_at_regular_timestamps", "clips_at_random_timestamps"])],
        cpu_peers(), args.runs, args.warmup)
    ff, tc = "framefeed (cpu)", "torchcodec (cpu)"
    targets = [
        Target("tutorial, exact mode, 23-min 640x360: framefeed / torchcodec time", long_clip.name,
               "tutorial_exact", ff, tc, "time", 0.8),
        Target("tutorial, approximate mode, 23-min 640x360: framefeed / torchcodec time", long_clip.name,
               "tutorial_approximate", ff, tc, "time", 0.8),
        Target("clips_at_regular_timestamps(1 s, 4 frames), 1080p: framefeed / torchcodec time", hd_clip.name,
               "clips_at_regular_timestamps", ff, tc, "time", 0.9),
        Target("clips_at_random_timestamps(10 clips, 4 frames), 1080p: framefeed / torchcodec time",
               hd_clip.name, "clips_at_random_timestamps", ff, tc, "time", 0.9),
    ]
    print(write_results("samplers-cpu", "Clip samplers on CPU: framefeed vs torchcodec 0.13.0 (and PyAV)",
                        [long_clip, hd_clip], measurements, skipped, targets, args.runs, args.warmup, ["cpu"]))


if __name__ == "__main__":
    main()
