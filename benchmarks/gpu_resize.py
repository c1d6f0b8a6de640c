"""NVDEC decoding to 224x224 with the resize fused into the colour kernel,
against full-size decoding and against full-size decoding followed by torch.

For 1080p H.264 and 1080p HEVC (the files `gpu_throughput.py` encodes into
`benchmarks/.cache/`), one framefeed `VideoDecoder(device="cuda")` per
thread (default one thread: one decoder's figure) decodes the whole file in
batches of 32 frames, in four modes:
- "full": RGB frames at full size (1920x1080), no transforms;
- "fused resize": `transforms=[Resize((224, 224))]`, which NVDEC's colour
  kernel performs in the launch that converts each picture;
- "fused crop": `transforms=[CenterCrop((224, 224))]`, likewise;
- "full + interpolate": full-size frames, then per batch
  `torch.nn.functional.interpolate(frames.float(), (224, 224),
  mode="bilinear", antialias=True)` rounded to uint8 (torchvision's `Resize`
  on CUDA tensors), on the same stream.
Frames/s are the median of `--runs` rounds after a warm-up round (each round
runs every mode once, back to back), with NVML's decoder utilisation; the
table gives each mode's ratio to "full" and to "full + interpolate" as the
median of the per-round ratios with their min-max. Targets (issue 14): fused resize >= 1.0x full and
>= 1.3x full + interpolate. All modes of a file run in one worker process
(`framefeed.bench.isolation`): a crash or hang costs that file's remaining
rows only. JSON goes to `--output` (default
`benchmarks/results/gpu_resize_<date>.json`).

Usage (on a GPU machine, from the repository root):
    PYTHONPATH=. python benchmarks/gpu_resize.py [--h264 FILE] [--hevc FILE] [--threads 1]
`--help` works anywhere; nothing heavy is imported before the GPU check.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS))

import gpu_throughput  # noqa: E402 - the shared environment check, inputs and thread runner

MODULE = "gpu_resize"
SIZE = (224, 224)
MODES = ("full", "fused resize", "fused crop", "full + interpolate")
BATCH = gpu_throughput.BATCH


def decode_one(path: str, mode: str) -> tuple[int, int]:
    """(returned, decoded) by one framefeed CUDA decoder over the whole file in `mode`."""
    import torch
    import torch.nn.functional as F

    from framefeed.decoders import VideoDecoder
    from framefeed.transforms import CenterCrop, Resize

    transforms = {"fused resize": [Resize(SIZE)], "fused crop": [CenterCrop(SIZE)]}.get(mode)
    decoder = VideoDecoder(path, device="cuda:0", transforms=transforms)
    if decoder.cpu_fallback:
        raise RuntimeError(f"framefeed fell back to the CPU: {decoder.cpu_fallback}")
    if transforms and not getattr(decoder._backend, "applied_transforms", None):
        raise RuntimeError("the transforms were not fused into the NVDEC kernel")
    count = len(decoder)
    for start in range(0, count, BATCH):
        frames = decoder.get_frames_in_range(start, min(start + BATCH, count)).data
        if mode == "full + interpolate":
            small = F.interpolate(frames.float(), size=SIZE, mode="bilinear", antialias=True)
            small.round_().clamp_(0, 255).to(torch.uint8)
    torch.cuda.current_stream(0).synchronize()
    decoded = getattr(decoder._backend, "frames_decoded", count)
    return count, int(decoded)


def _contender_base() -> type:
    from framefeed.bench.contenders import Contender

    return Contender


def __getattr__(name: str) -> type:
    """`ResizeModes`, the contender class (built on first use: its base pulls in torch)."""
    if name != "ResizeModes":
        raise AttributeError(name)

    def throughput(self: Any, path: str, params: dict) -> int:
        mode = params["mode"]
        returned, decoded = gpu_throughput.run_threads(lambda p: decode_one(p, mode), path, int(params["threads"]))
        self.counts = {"returned": returned, "decoded": decoded}
        return returned

    cls = type(name, (_contender_base(),), {"library": "framefeed-cuda-resize", "throughput": throughput,
                                            "__module__": MODULE})
    globals()[name] = cls
    return cls


def measure_file(label: str, path: Path, threads: int, runs: int, timeout: float) -> list[dict]:
    """One row per mode for `path`, every mode in one worker process, the
    modes interleaved: round r runs each mode once, back to back (round 0 is
    the warm-up), so the ratios between modes are taken within a round. A
    mode that fails is dropped from later rounds; one that crashes or hangs
    ends the file (later rounds "not run")."""
    from framefeed.bench.isolation import ContenderProcess

    rows = [{"file": label, "mode": mode, "threads": threads, "status": "ok", "error": None,
             "median_fps": None, "runs_fps": [], "nvdec_percent": None} for mode in MODES]
    utilisation: dict[str, list[float]] = {mode: [] for mode in MODES}
    with ContenderProcess(MODULE, "ResizeModes", "cuda:0", 1, timeout) as process:
        stopped = ""
        for run_index in range(runs + 1):
            for row in rows:
                if row["status"] != "ok":
                    continue
                if stopped:
                    row.update(status="not run", error=f"not run: {stopped}")
                    continue
                outcome = process.run("throughput", str(path), {"mode": row["mode"], "threads": threads})
                if not outcome.ok:
                    row.update(status=outcome.status, error=outcome.error)
                    stopped = "" if outcome.status == "error" else f"an earlier mode {outcome.status}"
                    continue
                if run_index:
                    row["runs_fps"].append(round(outcome.frames / outcome.seconds, 1))
                    if outcome.nvdec_percent is not None:
                        utilisation[row["mode"]].append(outcome.nvdec_percent)
    for row in rows:
        if row["status"] == "ok" and row["runs_fps"]:
            row["median_fps"] = round(statistics.median(row["runs_fps"]), 1)
            shares = utilisation[row["mode"]]
            row["nvdec_percent"] = round(sum(shares) / len(shares), 1) if shares else None
    return rows


def add_ratios(rows: list[dict]) -> None:
    """Each row's frames/s over its file's "full" and "full + interpolate"
    figures, round by round: `vs_full` is the median of the per-round ratios,
    `vs_full_range` their [min, max] (likewise `vs_full_interpolate`)."""
    by_file: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["status"] == "ok" and row["runs_fps"]:
            by_file.setdefault(row["file"], {})[row["mode"]] = row["runs_fps"]
    for row in rows:
        figures = by_file.get(row["file"], {})
        for key, mode in (("vs_full", "full"), ("vs_full_interpolate", "full + interpolate")):
            base = figures.get(mode)
            if row["status"] != "ok" or not row["runs_fps"] or not base:
                row[key], row[f"{key}_range"] = None, None
                continue
            ratios = [ours / theirs for ours, theirs in zip(row["runs_fps"], base, strict=False)]
            row[key] = round(statistics.median(ratios), 2)
            row[f"{key}_range"] = [round(min(ratios), 2), round(max(ratios), 2)]


def print_table(environment: dict, rows: list[dict]) -> None:
    print(f"\n{environment.get('gpu')} (driver {environment.get('driver')}), {environment.get('date')}; "
          f"frames/s (median), NVDEC utilisation, ratio to full size and to full size + interpolate (median of the "
          f"per-round ratios, min-max); "
          f"output {SIZE[0]}x{SIZE[1]}")
    header = (f"{'file':12s} {'mode':20s} {'thr':>4s} {'frames/s':>10s} {'NVDEC':>6s} {'vs full':>20s} "
              f"{'vs f+i':>20s}")
    print(header)
    print("-" * len(header))
    for row in rows:
        if row["status"] != "ok":
            print(f"{row['file']:12s} {row['mode']:20s} {row['threads']:4d} {row['status']}: {row['error']}")
            continue
        nvdec = "-" if row["nvdec_percent"] is None else f"{row['nvdec_percent']:.0f}%"

        def ratio(value: float | None, spread: list[float] | None) -> str:
            if value is None:
                return "-"
            return f"{value:.2f}x ({spread[0]:.2f}-{spread[1]:.2f})" if spread else f"{value:.2f}x"

        print(f"{row['file']:12s} {row['mode']:20s} {row['threads']:4d} {row['median_fps']:10.0f} {nvdec:>6s} "
              f"{ratio(row['vs_full'], row.get('vs_full_range')):>20s} "
              f"{ratio(row['vs_full_interpolate'], row.get('vs_full_interpolate_range')):>20s}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--h264", help="1080p H.264 file (default: generated, shared with gpu_throughput.py)")
    parser.add_argument("--hevc", help="1080p HEVC file (default: generated)")
    parser.add_argument("--frames", type=int, default=240, help="frames in generated files (default 240)")
    parser.add_argument("--runs", type=int, default=3, help="measured runs per figure (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="decoders at once, one per thread (default 1)")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds one run may take")
    parser.add_argument("--output", help="JSON path (default: benchmarks/results/gpu_resize_<date>.json)")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.runs < 1:
        parser.error("--threads and --runs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    gpu_throughput.worker_environment()
    environment = gpu_throughput.check_environment()
    files = gpu_throughput.input_files(args)
    rows: list[dict] = []
    output = Path(args.output) if args.output else (
        BENCHMARKS / "results" / f"gpu_resize_{environment['date'][:10]}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    for label, path in files.items():
        rows += measure_file(label, path, args.threads, args.runs, args.timeout)
        for row in rows[-len(MODES):]:
            print(f"{label:12s} {row['mode']:20s} {row['median_fps'] or row['status']}", flush=True)
        add_ratios(rows)
        report = {"benchmark": "gpu_resize", "environment": environment, "size": SIZE, "batch": BATCH,
                  "runs": args.runs, "results": rows,
                  "files": {label: {"name": path.name, "bytes": path.stat().st_size} for label, path in files.items()}}
        output.write_text(json.dumps(report, indent=2) + "\n")  # after every file: a run cut short keeps it
    print_table(environment, rows)
    print(f"\nwritten {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
