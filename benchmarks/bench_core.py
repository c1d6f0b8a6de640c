"""Issue "framefeed core" speed targets, against torchcodec and plain PyAV in
the same run:

- exact-mode creation on the ~23-minute 640x360 file: time <= 1.0x torchcodec's;
- approximate-mode creation on it: time <= 1.2x a bare `av.open`;
- sequential decode of every frame of a 1080p 30 fps clip: frames/s >= 1.0x torchcodec's
  (3x the runs: both libraries are bound by the same FFmpeg work);
- 10 random indices of that clip in one get_frames_at: time <= 1.0x torchcodec's.

Usage: python benchmarks/bench_core.py [--runs 7]
Writes benchmarks/results/core-cpu.{md,json}.
"""

from __future__ import annotations

from _targets import Target, cpu_peers, parse_args, run_groups, write_results

from framefeed.bench.clips import HD_LONG_RECIPE, LONG_RECIPE, make_clip


def main() -> None:
    args = parse_args(__doc__)
    long_clip = make_clip(LONG_RECIPE)
    hd_clip = make_clip(HD_LONG_RECIPE)
    measurements, skipped = run_groups(
        [(long_clip, ["create_exact", "create_approximate"]), (hd_clip, ["random_access"])],
        cpu_peers(), args.runs, args.warmup)
    # Sequential decoding is bound by FFmpeg's decoder and swscale in every
    # contender, so the two sit close together and the machine's noise decides
    # single runs: three times the runs for a steadier median.
    sequential, missing = run_groups([(hd_clip, ["sequential"])], cpu_peers(), 3 * args.runs, args.warmup)
    measurements += sequential
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
