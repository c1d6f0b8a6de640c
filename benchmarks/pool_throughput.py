"""DecodePool throughput against decoders run one per thread, as ratios in one run.

CPU mode (`--mode cpu`, any machine): 1080p H.264 files (16 by default),
random clips from each (4 clips of 8 frames by default; the same clips for
every contender, drawn as `clips_at_random_indices` draws them under one
seed), timed end to end including opening every file:
- framefeed `DecodePool("cpu", sessions=2)` with `clips_at_random_indices(pool.videos(files), ...)`;
- one `VideoDecoder` per file in a loop, the same sampler call per decoder;
- torchcodec `VideoDecoder`s in 2 threads, each taking the next file and
  decoding the same clips' frames with `get_frames_at`;
- for reference: framefeed `VideoDecoder`s in 2 threads, and a torchcodec loop.
Targets: pool >= 1.7x the loop's frames/s and >= 1.0x torchcodec in 2 threads.
Contenders are interleaved run by run; medians of `--runs` runs after
`--warmup` warm-up runs. Writes benchmarks/results/pool-cpu.{md,json}.

GPU mode (`--mode gpu`, the device check on an H200): 1080p H.264 and HEVC
files of 240 frames, two workloads (every frame of every file; 8 random
16-frame clips per file), sweeping 1, 4, 7, 14, 21 concurrent decoders for
- framefeed `DecodePool("cuda:0", sessions=n)` (RGB frames on the GPU);
- PyNvVideoCodec `SimpleDecoder`, one per thread (raw NV12, no colour
  conversion; reconfigured for the next file where it allows, else new);
- framefeed `VideoDecoder(device="cuda")`, one per thread (RGB).
Each contender runs in its own subprocess (a crash costs a row, and the
sweep resumes after it), every cell with NVML decoder utilisation sampled
during the timed run. Checks: pool frames/s >= 1.5x the best PyNvVideoCodec
figure, NVML >= 85% at the pool's best setting, 21 sessions >= 0.95x the
pool's best. Writes benchmarks/results/pool-gpu-<date>.{md,json}.

Usage:
    PYTHONPATH=. python benchmarks/pool_throughput.py --mode cpu [--runs 5]
    PYTHONPATH=. python benchmarks/pool_throughput.py --mode gpu [--files 64 --runs 3]
`--files` trims the file count (default 16 on the CPU, 8 on the GPU to fit
an 8-minute device check; the issue's full GPU size is 64). Files are encoded once with PyAV into
benchmarks/.cache/pool/ (`--distinct` different videos, the rest copies).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import queue
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "benchmarks" / ".cache" / "pool"
RESULTS = REPO / "benchmarks" / "results"
SEED = 2026
BATCH = 32


# -- inputs ----------------------------------------------------------------------------------


def encode(path: Path, codec: str, frames: int, variant: int, keyint: int) -> None:
    """A 1080p30 video with B-frames and a keyframe every `keyint` frames;
    `variant` changes the picture so distinct files differ."""
    import av
    import numpy as np

    width, height = 1920, 1080
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    params = f"keyint={keyint}:min-keyint={keyint}:scenecut=0:bframes=3"
    options = {"x264-params": params} if codec == "libx264" else {"x265-params": params + ":log-level=error"}
    options["preset"] = "veryfast"
    partial = path.with_name(path.stem + ".partial" + path.suffix)
    with av.open(str(partial), "w", format="mp4") as container:
        stream = container.add_stream(codec, rate=30, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            shift = index + 17 * variant
            red = 128 + 100 * np.sin((xx + 8 * shift) / (40.0 + variant))
            green = 128 + 100 * np.cos((yy - 5 * shift) / 30.0)
            blue = ((xx // 64 + yy // 64 + shift // 10) % 2) * 180 + 40
            picture = np.clip(np.stack([red, green, blue], -1), 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    partial.rename(path)


def _encode_job(job: tuple[str, str, int, int, int]) -> str:
    path, codec, frames, variant, keyint = job
    encode(Path(path), codec, frames, variant, keyint)
    return path


def input_files(codec: str, count: int, frames: int, distinct: int, keyint: int) -> list[str]:
    """`count` files of `codec` ("h264" or "hevc"): `distinct` encoded, the rest copies."""
    import multiprocessing

    CACHE.mkdir(parents=True, exist_ok=True)
    encoder = {"h264": "libx264", "hevc": "libx265"}[codec]
    distinct = max(1, min(distinct, count))
    originals = [CACHE / f"{codec}_{frames}f_k{keyint}_v{v}.mp4" for v in range(distinct)]
    missing = [(str(p), encoder, frames, v, keyint) for v, p in enumerate(originals) if not p.exists()]
    if missing:
        print(f"encoding {len(missing)} {codec} file(s) of {frames} 1080p frames...", flush=True)
        workers = min(len(missing), max((os.cpu_count() or 1) // 2, 1))
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            pool.map(_encode_job, missing)
    files = []
    for i in range(count):
        original = originals[i % distinct]
        if i < distinct:
            files.append(str(original))
            continue
        copy = CACHE / f"{original.stem}_copy{i}.mp4"
        if not copy.exists():
            shutil.copyfile(original, copy)
        files.append(str(copy))
    return files


def clip_indices(files: list[str], frames: int, clips: int, per_clip: int) -> list[list[int]]:
    """Each file's clip frame indices, drawn as `clips_at_random_indices`
    draws them (same seed, same order, same torch calls)."""
    import torch

    torch.manual_seed(SEED)
    end = max(frames - per_clip + 1, 1)
    out = []
    for _ in files:
        starts = torch.randint(low=0, high=end, size=(clips,)).tolist()
        out.append([s + k for s in starts for k in range(per_clip)])
    return out


# -- contenders ------------------------------------------------------------------------------
# Each returns a `run()` callable that decodes the workload once and returns
# the number of frames it produced, plus a `close()`.


class Contender:
    def __init__(self, name: str, run, close=lambda: None, stats=lambda: {}) -> None:
        self.name, self.run, self.close, self.stats = name, run, close, stats


def in_threads(count: int, files: list[str], work) -> int:
    """Run `work(slot, file_index)` over all files with `count` threads taking
    the next file from a shared queue; total frames."""
    todo: queue.Queue[int] = queue.Queue()
    for i in range(len(files)):
        todo.put(i)
    totals = [0] * count
    errors: list[BaseException] = []

    def loop(slot: int) -> None:
        try:
            while True:
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    return
                totals[slot] += work(slot, i)
        except BaseException as error:  # reported after join
            errors.append(error)

    threads = [threading.Thread(target=loop, args=(slot,)) for slot in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return sum(totals)


def pool_contender(device: str, sessions: int, files: list[str], workload: str, indices, args) -> Contender:
    import torch

    from framefeed.pool import DecodePool
    from framefeed.samplers import clips_at_random_indices

    pool = DecodePool(device, sessions=sessions)

    def run() -> int:
        if workload == "whole":
            return sum(len(batch) for batch in pool.map(files, lookahead=sessions + 2))
        torch.manual_seed(SEED)
        futures = clips_at_random_indices(pool.videos(files, lookahead=2 * sessions), num_clips=args.clips,
                                          num_frames_per_clip=args.clip_frames)
        return sum(f.result().pts_seconds.numel() for f in futures)

    def stats() -> dict:
        s = pool.stats()
        return {"frames_decoded": s.frames_decoded, "frames_returned": s.frames_returned,
                "decoders_created": s.decoders_created, "decoders_reused": s.decoders_reused,
                "cpu_fallbacks": s.cpu_fallbacks, "peak_bytes_in_flight": s.peak_bytes_in_flight,
                "session_busy_seconds": [round(x.busy_seconds, 2) for x in s.sessions]}

    return Contender(f"framefeed DecodePool ({device})", run, pool.close, stats)


def video_decoder_loop(device: str, files: list[str], workload: str, indices, args) -> Contender:
    import torch

    from framefeed import VideoDecoder
    from framefeed.samplers import clips_at_random_indices

    def run() -> int:
        torch.manual_seed(SEED)
        total = 0
        for path in files:
            with VideoDecoder(path, device=device) as decoder:
                if workload == "whole":
                    total += _whole_file(decoder)
                else:
                    clips = clips_at_random_indices(decoder, num_clips=args.clips, num_frames_per_clip=args.clip_frames)
                    total += clips.pts_seconds.numel()
        return total

    return Contender(f"framefeed VideoDecoder loop ({device})", run)


def _whole_file(decoder) -> int:
    count = len(decoder)
    for start in range(0, count, BATCH):
        decoder.get_frames_in_range(start, min(start + BATCH, count))
    return count


def video_decoder_threads(device: str, threads: int, files: list[str], workload: str, indices, args) -> Contender:
    from framefeed import VideoDecoder

    def work(slot: int, i: int) -> int:
        with VideoDecoder(files[i], device=device) as decoder:
            if workload == "whole":
                return _whole_file(decoder)
            return len(decoder.get_frames_at(indices[i]))

    def run() -> int:
        count = in_threads(threads, files, work)
        if device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
        return count

    return Contender(f"framefeed VideoDecoder per thread ({device})", run)


def torchcodec_threads(threads: int, files: list[str], workload: str, indices, args) -> Contender:
    from torchcodec.decoders import VideoDecoder

    def work(slot: int, i: int) -> int:
        decoder = VideoDecoder(files[i], seek_mode="exact", num_ffmpeg_threads=1)
        return len(decoder.get_frames_at(indices[i]))

    return Contender(f"torchcodec VideoDecoder per thread, {threads} thread(s)", lambda: in_threads(threads, files,
                                                                                                     work))


def pynvc_threads(threads: int, files: list[str], workload: str, indices, args) -> Contender:
    import PyNvVideoCodec as nvc

    decoders: list = [None] * threads
    reconfigurable = [True] * threads

    def open_decoder(slot: int, path: str):
        decoder = decoders[slot]
        if decoder is not None and reconfigurable[slot]:
            try:
                decoder.reconfigure_decoder(path)
                return decoder
            except Exception:  # no reconfiguration for this file: a new decoder from now on
                reconfigurable[slot] = False
        decoders[slot] = nvc.SimpleDecoder(path, gpu_id=0, use_device_memory=True,
                                           output_color_type=nvc.OutputColorType.NATIVE)
        return decoders[slot]

    def work(slot: int, i: int) -> int:
        decoder = open_decoder(slot, files[i])
        if workload == "whole":
            total, count = len(decoder), 0
            while count < total:
                frames = decoder.get_batch_frames(min(BATCH, total - count))
                if not frames:
                    break
                count += len(frames)
            return count
        if hasattr(decoder, "get_batch_frames_by_index"):
            return len(decoder.get_batch_frames_by_index(indices[i]))
        return sum(1 for index in indices[i] if decoder[index] is not None)

    return Contender(f"PyNvVideoCodec SimpleDecoder per thread (NV12), {threads} thread(s)",
                     lambda: in_threads(threads, files, work))


# -- NVML -------------------------------------------------------------------------------------


class NvmlSampler:
    """Mean NVDEC utilisation (percent) while running; None without NVML."""

    def __init__(self, period: float = 0.05) -> None:
        self._period = period
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml, self._handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:
            self._nvml = None
        self._samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> NvmlSampler:
        if self._nvml is not None:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._samples.append(float(self._nvml.nvmlDeviceGetDecoderUtilization(self._handle)[0]))
            except Exception:
                return
            self._stop.wait(self._period)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return round(statistics.fmean(self._samples), 1) if self._samples else None


# -- one subprocess per contender row (GPU mode) ------------------------------------------------


def make_contender(kind: str, count: int, files: list[str], workload: str, indices, args) -> Contender:
    if kind == "pool":
        return pool_contender("cuda:0", count, files, workload, indices, args)
    if kind == "pool-cpu":  # the same row on the CPU: checks this script's plumbing anywhere
        return pool_contender("cpu", count, files, workload, indices, args)
    if kind == "pynvc":
        return pynvc_threads(count, files, workload, indices, args)
    if kind == "framefeed-threads":
        return video_decoder_threads("cuda:0", count, files, workload, indices, args)
    raise ValueError(kind)


def run_cell_process(spec: dict) -> None:
    """Entry point of a contender subprocess: one row of the sweep, a JSON
    line per finished count (so a crash loses only the count it happened in)."""
    args = argparse.Namespace(**spec["args"])
    files, indices = spec["files"], spec["indices"]
    for count in spec["counts"]:
        print(f"START {count}", flush=True)
        contender = make_contender(spec["kind"], count, files, spec["workload"], indices, args)
        try:
            if args.warmup_full:
                contender.run()
            else:  # a short warm-up of its own: CUDA contexts, kernels, first decoders
                warm = max(1, len(files) // 8)
                short = make_contender(spec["kind"], count, files[:warm], spec["workload"], indices[:warm], args)
                try:
                    short.run()
                finally:
                    short.close()
            seconds, frames, utilisation = [], 0, []
            for _ in range(args.runs):
                with NvmlSampler() as nvml:
                    began = time.perf_counter()
                    frames = contender.run()
                    seconds.append(time.perf_counter() - began)
                utilisation.append(nvml.mean)
            row = {"count": count, "frames": frames, "seconds": seconds, "nvdec_percent": utilisation,
                   "stats": contender.stats()}
        finally:
            contender.close()
        print("RESULT " + json.dumps(row), flush=True)


def run_row(kind: str, codec: str, workload: str, files, indices, counts, args) -> list[dict]:
    """A contender row in subprocesses, resuming after a crash."""
    spec_args = {k: getattr(args, k) for k in ("runs", "clips", "clip_frames", "warmup_full")}
    rows, remaining = [], list(counts)
    while remaining:
        spec = {"kind": kind, "workload": workload, "files": files, "indices": indices, "counts": remaining,
                "args": spec_args}
        current = None
        spec_path = CACHE / f"cell-{kind}-{codec}-{workload}.json"
        spec_path.write_text(json.dumps(spec))
        try:
            process = subprocess.run([sys.executable, __file__, "--cell", str(spec_path)], capture_output=True,
                                     text=True, timeout=args.cell_timeout, env=os.environ.copy())
            output, code = process.stdout, process.returncode
            tail = (process.stderr or "").strip().splitlines()[-3:]
        except subprocess.TimeoutExpired as expired:
            output, code = (expired.stdout or b"").decode() if isinstance(expired.stdout, bytes) else (
                expired.stdout or ""), "timeout"
            tail = [f"timed out after {args.cell_timeout} s"]
        done = set()
        for line in output.splitlines():
            if line.startswith("START "):
                current = int(line.split()[1])
            elif line.startswith("RESULT "):
                row = json.loads(line[7:])
                row.update(kind=kind, codec=codec, workload=workload)
                rows.append(row)
                done.add(row["count"])
                print(describe(row), flush=True)
        remaining = [c for c in remaining if c not in done]
        if remaining and code != 0:
            failed = current if current in remaining else remaining[0]
            error = {"kind": kind, "codec": codec, "workload": workload, "count": failed,
                     "error": f"exit {code}: {tail[-1] if tail else 'no output'}", "stderr_tail": tail}
            rows.append(error)
            print(f"{kind} {codec} {workload} x{failed}: {error['error']}", flush=True)
            remaining = [c for c in remaining if c != failed]
        elif remaining:
            break
    return rows


def describe(row: dict) -> str:
    fps = row["frames"] / statistics.median(row["seconds"])
    util = row.get("nvdec_percent") or []
    return (f"{row['kind']:18s} {row['codec']:5s} {row['workload']:6s} x{row['count']:<3d} "
            f"{fps:9.1f} frames/s  NVDEC {util}")


def gpu_main(args: argparse.Namespace) -> int:
    import torch

    if not torch.cuda.is_available():
        print("pool_throughput --mode gpu: torch sees no CUDA GPU", file=sys.stderr)
        return 2
    counts = [int(c) for c in args.counts.split(",")]
    rows = []
    started = time.perf_counter()
    environment = {"date": dt.date.today().isoformat(), "gpu": torch.cuda.get_device_name(0),
                   "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                   "files_per_codec": args.files, "frames_per_file": args.frames, "runs": args.runs,
                   "clips": f"{args.clips} x {args.clip_frames} frames"}
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"pool-gpu-{environment['date']}"
    text = ""
    for codec in args.codecs.split(","):
        files = input_files(codec, args.files, args.frames, args.distinct, args.keyint)
        indices = clip_indices(files, args.frames, args.clips, args.clip_frames)
        for workload in args.workloads.split(","):
            for kind in ("pool", "pynvc", "framefeed-threads"):
                rows += run_row(kind, codec, workload, files, indices, counts, args)
                # Written after every row: a device check cut short keeps what it measured.
                environment["wall_seconds"] = round(time.perf_counter() - started, 1)
                text = gpu_report(environment, rows, counts)
                stem.with_suffix(".json").write_text(json.dumps({"environment": environment, "rows": rows},
                                                                indent=2) + "\n")
                stem.with_suffix(".md").write_text(text)
    print(text)
    return 0


def gpu_report(environment: dict, rows: list[dict], counts: list[int]) -> str:
    lines = [f"# DecodePool on {environment['gpu']} ({environment['date']})", "",
             f"{environment['files_per_codec']} files per codec of {environment['frames_per_file']} 1080p frames; "
             f"clips: {environment['clips']} per file; median of {environment['runs']} run(s); "
             "total frames/s (NVML decoder utilisation %, mean over the run).", ""]
    header = "| codec | workload | contender | " + " | ".join(f"{c}" for c in counts) + " |"
    lines += [header, "|" + " --- |" * (3 + len(counts))]
    cells: dict[tuple, dict] = {}
    for row in rows:
        cells[(row["codec"], row["workload"], row["kind"], row["count"])] = row
    keys = sorted({(r["codec"], r["workload"], r["kind"]) for r in rows})
    for codec, workload, kind in keys:
        out = []
        for count in counts:
            row = cells.get((codec, workload, kind, count))
            if row is None:
                out.append("-")
            elif "error" in row:
                out.append(f"crash ({row['error'][:60]})")
            else:
                fps = row["frames"] / statistics.median(row["seconds"])
                util = [u for u in row["nvdec_percent"] if u is not None]
                out.append(f"{fps:.0f} ({statistics.median(util):.0f}%)" if util else f"{fps:.0f}")
        lines.append(f"| {codec} | {workload} | {kind} | " + " | ".join(out) + " |")
    lines += ["", "## Checks", ""]
    def fps_of(codec, workload, kind, count):
        row = cells.get((codec, workload, kind, count))
        return None if row is None or "error" in row else row["frames"] / statistics.median(row["seconds"])

    for codec, workload in sorted({(k[0], k[1]) for k in keys}):
        pool = {c: v for c in counts if (v := fps_of(codec, workload, "pool", c))}
        peers = [v for c in counts if (v := fps_of(codec, workload, "pynvc", c))]
        if not pool:
            continue
        best_count = max(pool, key=pool.get)
        best = pool[best_count]
        best_row = cells[(codec, workload, "pool", best_count)]
        util = [u for u in best_row["nvdec_percent"] if u is not None]
        parts = [f"pool best {best:.0f} frames/s at {best_count} sessions"]
        if peers:
            parts.append(f"{best / max(peers):.2f}x the best PyNvVideoCodec ({max(peers):.0f}) [goal >= 1.5x]")
        if util:
            parts.append(f"NVDEC {statistics.median(util):.0f}% at that setting [goal >= 85%]")
        if max(counts) in pool:
            parts.append(f"{max(counts)} sessions: {pool[max(counts)] / best:.2f}x the best [goal >= 0.95x]")
        lines.append(f"- {codec} {workload}: " + "; ".join(parts))
    return "\n".join(lines) + "\n"


# -- CPU mode -------------------------------------------------------------------------------------


POOL, LOOP, PEER = ("framefeed DecodePool (cpu), 2 sessions", "framefeed VideoDecoder loop (cpu)",
                    "torchcodec VideoDecoder per thread, 2 threads")
CPU_CONTENDERS = {
    "pool": (POOL, lambda files, indices, args: pool_contender("cpu", 2, files, "clips", indices, args)),
    "loop": (LOOP, lambda files, indices, args: video_decoder_loop("cpu", files, "clips", indices, args)),
    "torchcodec2": (PEER, lambda files, indices, args: torchcodec_threads(2, files, "clips", indices, args)),
    "framefeed2": ("framefeed VideoDecoder per thread (cpu), 2 threads",
                   lambda files, indices, args: video_decoder_threads("cpu", 2, files, "clips", indices, args)),
    "torchcodec1": ("torchcodec VideoDecoder loop (1 thread)",
                    lambda files, indices, args: torchcodec_threads(1, files, "clips", indices, args)),
}


def cpu_main(args: argparse.Namespace) -> int:
    import torch

    files = input_files("h264", args.files, args.frames, args.distinct, args.keyint)
    indices = clip_indices(files, args.frames, args.clips, args.clip_frames)
    contenders = []
    for key in args.contenders.split(","):
        name, make = CPU_CONTENDERS[key]
        contender = make(files, indices, args)
        contender.name = name
        contenders.append(contender)
    times: dict[str, list[float]] = {c.name: [] for c in contenders}
    frames: dict[str, int] = {}
    pool_stats: dict = {}
    try:
        for round_ in range(args.warmup + args.runs):
            for contender in contenders:
                began = time.perf_counter()
                frames[contender.name] = contender.run()
                elapsed = time.perf_counter() - began
                if round_ >= args.warmup:
                    times[contender.name].append(elapsed)
                print(f"round {round_}: {contender.name}: {elapsed:.2f} s, {frames[contender.name]} frames",
                      flush=True)
        pool_stats = next((c.stats() for c in contenders if c.name == POOL), {})
    finally:
        for contender in contenders:
            contender.close()
    expected = len(files) * args.clips * args.clip_frames
    assert all(count == expected for count in frames.values()), frames
    text = cpu_report(args, files, times, frames, pool_stats, torch)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pool-cpu.md").write_text(text)
    (RESULTS / "pool-cpu.json").write_text(json.dumps(
        {"date": dt.date.today().isoformat(), "files": len(files), "frames_per_file": args.frames,
         "clips": [args.clips, args.clip_frames], "times_seconds": times, "frames": frames,
         "pool_stats": pool_stats}, indent=2) + "\n")
    return 0


def cpu_report(args, files, times, frames, pool_stats, torch) -> str:
    from _targets import TARGET_HEADER, RoundRatios

    fps = {name: frames[name] / statistics.median(values) for name, values in times.items()}
    lines = [
        "# DecodePool on the CPU: random clips from many files",
        "",
        f"Measured {dt.date.today().isoformat()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores "
        f"(shared machine, run nice'd), Python {platform.python_version()}, torch {torch.__version__}; "
        f"{len(files)} files of {args.frames} 1080p30 H.264 frames (x264 veryfast, keyframe every {args.keyint}, "
        f"3 B-frames; {min(args.distinct, len(files))} distinct videos, the rest copies), {args.clips} random clips of "
        f"{args.clip_frames} frames per file (seed {SEED}, the same clips for every contender), timed end to end "
        f"including opening every file; median of {args.runs} interleaved runs after {args.warmup} warm-up run(s).",
        "",
        "## Targets",
        "",
        "Frames/s ratios taken within each round (contenders run back to back, so a round shares the "
        "machine's load); a target passes on their median.",
        "",
        *TARGET_HEADER,
    ]
    for theirs, limit in ((LOOP, 1.7), (PEER, 1.0)):
        if POOL not in times or theirs not in times:
            continue
        figure = RoundRatios.of("rate", times[POOL], times[theirs], frames[POOL], frames[theirs])
        lines.append(figure.row(f"pool / {theirs} frames/s", limit))
    lines += ["", "## All contenders", "", "| contender | median | min | max | frames/s |", "| --- | --- | --- | --- | --- |"]
    for name, values in times.items():
        lines.append(f"| {name} | {statistics.median(values):.2f} s | {min(values):.2f} s | {max(values):.2f} s | "
                     f"{fps[name]:.1f} |")
    lines += ["", f"Pool counters over all runs: {json.dumps(pool_stats)}", ""]
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--files", type=int, help="files per codec (cpu 16, gpu 8; the issue's GPU size is 64)")
    parser.add_argument("--frames", type=int, help="frames per file (cpu 120, gpu 240)")
    parser.add_argument("--distinct", type=int, default=4, help="distinct videos per codec; the rest are copies")
    parser.add_argument("--keyint", type=int, default=60, help="frames between keyframes")
    parser.add_argument("--clips", type=int, help="random clips per file (cpu 4, gpu 8)")
    parser.add_argument("--clip-frames", type=int, help="frames per clip (cpu 8, gpu 16)")
    parser.add_argument("--runs", type=int, help="timed runs (cpu 5, gpu 1)")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up runs (cpu mode)")
    parser.add_argument("--contenders", default="pool,loop,torchcodec2,framefeed2,torchcodec1",
                        help=f"cpu: which of {', '.join(CPU_CONTENDERS)}")
    parser.add_argument("--warmup-full", action="store_true", help="gpu: warm up on every file, not an eighth")
    parser.add_argument("--counts", default="1,4,7,14,21", help="gpu: sessions / threads to sweep")
    parser.add_argument("--codecs", default="h264,hevc", help="gpu: codecs")
    parser.add_argument("--workloads", default="whole,clips", help="gpu: workloads")
    parser.add_argument("--cell-timeout", type=int, default=300, help="gpu: seconds per contender subprocess")
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    parser.add_argument("--prepare-only", action="store_true", help="encode the inputs and stop")
    args = parser.parse_args(argv)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    if args.cell:
        run_cell_process(json.loads(Path(args.cell).read_text()))
        return 0
    gpu = args.mode == "gpu"
    defaults = {"files": 8 if gpu else 16, "frames": 240 if gpu else 120, "clips": 8 if gpu else 4,
                "clip_frames": 16 if gpu else 8, "runs": 1 if gpu else 5}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.prepare_only:
        for codec in (args.codecs.split(",") if gpu else ["h264"]):
            input_files(codec, args.files, args.frames, args.distinct, args.keyint)
        return 0
    return gpu_main(args) if gpu else cpu_main(args)


if __name__ == "__main__":
    sys.exit(main())
