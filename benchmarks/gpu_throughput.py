"""NVDEC throughput: framefeed on CUDA against PyNvVideoCodec's own decoders
and against framefeed's CPU backend on every core.

For 1080p H.264 and 1080p HEVC it measures, as total frames per second
over all decoders:
- framefeed `VideoDecoder(device="cuda")`: RGB uint8 frames in CUDA memory
  (NCHW), one decoder per thread, decoding the whole file in batches;
- PyNvVideoCodec `SimpleDecoder` and `ThreadedDecoder`: raw NV12 frames
  (NATIVE output, no colour conversion), one decoder per thread;
each at every thread count of `--threads` (default 1, 7, 14 and 21; Hopper
has 7 NVDEC engines);
- framefeed `VideoDecoder(device="cpu")`: RGB frames, one process per core,
  one FFmpeg thread each.

Every figure is the median of `--runs` runs after one warm-up run; a run
keeps every decoder decoding the file again until `--min-seconds` (1 s) have
passed, so NVML samples several periods even for one thread. Each run has
NVML's decoder utilisation (mean % over each timed run, then over the runs;
"-" without nvidia-ml-py) and, where they differ, the frames the decoders
decoded against the frames they returned. Each decoder runs in a process of
its own (`framefeed.bench.isolation`): a decoder that crashes or hangs (the
ThreadedDecoder segfaulted at 7 threads on 2026-11-28) becomes a row saying
so ("crashed: signal 11", "timed out") and the run goes on. The table is
printed, and the JSON (date, GPU, driver, versions) under
`benchmarks/results/` or `--output` is rewritten after every row, so a run
cut short keeps what it measured. framefeed's decoders each get a consumer
stream of their own thread (`torch.cuda.Stream()`), as a training loop per
thread would, so no two threads meet on the legacy default stream.

Usage (on a GPU machine, from the repository root):
    PYTHONPATH=. python benchmarks/gpu_throughput.py [--h264 FILE] [--hevc FILE] [--threads 1,7,14,21]
Without files, 1080p test videos are encoded once with PyAV into
`benchmarks/.cache/`. `--help` works anywhere; nothing heavy is imported
before the GPU check.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = Path(__file__).resolve().parent
THREAD_COUNTS = (1, 7, 14, 21)
BATCH = 32
# The worker processes import the contenders below from this module.
MODULE = "gpu_throughput"
DEFAULT_TIMEOUT_SECONDS = 180.0


def fail(message: str) -> None:
    print(f"gpu_throughput: {message}", file=sys.stderr)
    raise SystemExit(2)


# -- environment -----------------------------------------------------------------------------


def check_environment() -> dict:
    """torch with CUDA, PyNvVideoCodec and framefeed's NVDEC path, or a clear exit."""
    try:
        import torch
    except ImportError as error:
        fail(f"torch is not installed ({error})")
    if not torch.cuda.is_available():
        fail("no CUDA GPU is visible to torch (torch.cuda.is_available() is False). "
             "This benchmark measures NVDEC: run it on a machine with an NVIDIA GPU.")
    try:
        import PyNvVideoCodec as nvc
    except Exception as error:  # ImportError, or its RuntimeError without libnvcuvid
        fail(f"PyNvVideoCodec cannot be imported ({type(error).__name__}: {str(error).splitlines()[0]}). "
             "Install PyNvVideoCodec>=2.2.4; in Docker set NVIDIA_DRIVER_CAPABILITIES=compute,utility,video.")
    from framefeed.bench.nvml import load_nvml
    from framefeed.engine.backends.gpu_decode import nvdec_unavailable_reason

    reason = nvdec_unavailable_reason()
    if reason:
        fail(f"framefeed's NVDEC path is unavailable: {reason}")
    nvml, nvml_reason = load_nvml()
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "gpu": torch.cuda.get_device_name(0),
        "compute_capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
        "driver": driver_version(),
        "cuda_runtime_torch": torch.version.cuda,
        "torch": torch.__version__,
        "pynvvideocodec": getattr(nvc, "__version__", "unknown"),
        "nvml": "available" if nvml is not None else nvml_reason,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }


def driver_version() -> str:
    try:
        output = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=30, check=True).stdout
        return output.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        pass
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
        return text.split("Kernel Module")[1].split()[0]
    except (OSError, IndexError):
        return "unknown"


# -- inputs ----------------------------------------------------------------------------------


def make_video(path: Path, codec: str, frames: int) -> None:
    """A 1080p30 test video with B-frames and a keyframe every 2 s."""
    import av
    import numpy as np

    print(f"encoding {path.name} ({frames} frames, {codec})...", flush=True)
    width, height = 1920, 1080
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    options = ({"x264-params": "keyint=60:bframes=3"} if codec == "libx264"
               else {"x265-params": "keyint=60:bframes=3:log-level=error"})
    options["preset"] = "veryfast"
    tmp = path.with_suffix(".partial" + path.suffix)
    with av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream(codec, rate=30, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            red = 128 + 100 * np.sin((xx + 8 * index) / 40.0)
            green = 128 + 100 * np.cos((yy - 5 * index) / 30.0)
            blue = ((xx // 64 + yy // 64 + index // 10) % 2) * 180 + 40
            picture = np.clip(np.stack([red, green, blue], -1), 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.rename(path)


def input_files(args: argparse.Namespace) -> dict[str, Path]:
    cache = BENCHMARKS / ".cache"
    files = {}
    for label, given, codec, name in (("1080p H.264", args.h264, "libx264", f"bench_1080p_h264_{args.frames}.mp4"),
                                      ("1080p HEVC", args.hevc, "libx265", f"bench_1080p_hevc_{args.frames}.mp4")):
        if given:
            path = Path(given)
            if not path.exists():
                fail(f"{path} does not exist")
        else:
            cache.mkdir(parents=True, exist_ok=True)
            path = cache / name
            if not path.exists():
                make_video(path, codec, args.frames)
        files[label] = path
    return files


# -- decoders under test (each runs inside a worker process) ----------------------------------
# Each `throughput` call runs params["threads"] decoders at once, one per
# thread, each over the whole file, and returns the frames they returned;
# `counts` also says how many pictures they decoded.


def _contender_base() -> type:
    """framefeed's `Contender` (imported on first use: it pulls in torch)."""
    from framefeed.bench.contenders import Contender

    return Contender


def framefeed_cuda(path: str) -> tuple[int, int]:
    """(returned, decoded) by one framefeed CUDA decoder over the whole file."""
    import torch

    from framefeed.decoders import VideoDecoder

    decoder = VideoDecoder(path, device="cuda:0")
    if decoder.cpu_fallback:
        raise RuntimeError(f"framefeed fell back to the CPU: {decoder.cpu_fallback}")
    count = len(decoder)
    for start in range(0, count, BATCH):
        decoder.get_frames_in_range(start, min(start + BATCH, count))
    torch.cuda.current_stream(0).synchronize()  # this thread's consumer stream (run_threads)
    decoded = _frames_decoded(decoder, count)
    decoder.close()
    return count, decoded


def _frames_decoded(decoder: Any, default: int) -> int:
    decoded = getattr(getattr(decoder, "_backend", None), "frames_decoded", None)
    return int(decoded) if decoded is not None else default


def drain_batches(decoder: Any) -> int:
    """Frames fetched in batches, never past the decoder's own frame count
    (PyNvVideoCodec logs "INVALID INDEX" for each index beyond it). Frame
    objects are dropped before the caller drops the decoder."""
    total, count = len(decoder), 0
    while count < total:
        frames = decoder.get_batch_frames(min(BATCH, total - count))
        if not frames:
            break
        count += len(frames)
        del frames
    return count


def pynvc_simple(path: str) -> tuple[int, int]:
    """Raw NV12 frames from one PyNvVideoCodec SimpleDecoder (whole file)."""
    import PyNvVideoCodec as nvc

    decoder = nvc.SimpleDecoder(path, gpu_id=0, use_device_memory=True,
                                output_color_type=nvc.OutputColorType.NATIVE)
    count = drain_batches(decoder)
    del decoder
    return count, count


def pynvc_threaded(path: str) -> tuple[int, int]:
    """Raw NV12 frames from one PyNvVideoCodec ThreadedDecoder (whole file)."""
    import PyNvVideoCodec as nvc

    decoder = nvc.ThreadedDecoder(path, buffer_size=BATCH, gpu_id=0, use_device_memory=True,
                                  output_color_type=nvc.OutputColorType.NATIVE)
    try:
        count = drain_batches(decoder)
    finally:
        decoder.end()
    del decoder
    return count, count


def run_threads(method: Any, path: str, threads: int, min_seconds: float = 0.0) -> tuple[int, int]:
    """(returned, decoded) summed over `threads` concurrent decoders, one per
    thread, each decoding the file again until `min_seconds` have passed.
    framefeed's decoders get a consumer stream of their thread's own."""
    import time

    counts: list[tuple[int, int]] = [(0, 0)] * threads
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def work(slot: int) -> None:
        try:
            stream = None
            if method is framefeed_cuda:
                import torch

                stream = torch.cuda.Stream(0)
            barrier.wait()
            until = time.perf_counter() + min_seconds
            returned = decoded = 0
            while True:
                if stream is not None:
                    import torch

                    with torch.cuda.stream(stream):
                        done = method(path)
                else:
                    done = method(path)
                returned, decoded = returned + done[0], decoded + done[1]
                if time.perf_counter() >= until:
                    break
            counts[slot] = (returned, decoded)
        except BaseException as error:  # reported after join
            errors.append(error)

    workers = [threading.Thread(target=work, args=(slot,)) for slot in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


def cpu_worker(path: str) -> tuple[int, int]:
    from framefeed.decoders import VideoDecoder

    decoder = VideoDecoder(path, device="cpu", num_ffmpeg_threads=1)
    count = len(decoder)
    for start in range(0, count, BATCH):
        decoder.get_frames_in_range(start, min(start + BATCH, count))
    return count, _frames_decoded(decoder, count)


def _contender_class(name: str, library: str, method: Any) -> type:
    """A `Contender` whose `throughput` runs `method` in params["threads"] threads."""

    def throughput(self: Any, path: str, params: dict) -> int:
        returned, decoded = run_threads(method, path, int(params["threads"]), float(params.get("min_seconds", 0)))
        self.counts = {"returned": returned, "decoded": decoded}
        return returned

    return type(name, (_contender_base(),), {"library": library, "throughput": throughput, "__module__": MODULE})


class _CpuProcesses:
    """framefeed on the CPU, one decoder per process (a spawned pool kept
    across runs, so process start-up is outside the timed runs after the
    warm-up). Never forked from a process holding a CUDA context."""

    library = "framefeed-cpu-processes"

    def throughput(self: Any, path: str, params: dict) -> int:
        import multiprocessing

        processes = int(params["processes"])
        pool = getattr(self, "_pool", None)
        if pool is None or getattr(self, "_pool_size", None) != processes:
            if pool is not None:
                pool.terminate()
            pool = self._pool = multiprocessing.get_context("spawn").Pool(processes)
            self._pool_size = processes
        results = pool.map(cpu_worker, [path] * processes)
        self.counts = {"returned": sum(r[0] for r in results), "decoded": sum(r[1] for r in results)}
        return self.counts["returned"]


def __getattr__(name: str) -> type:
    """The contender classes, built on first use (they subclass framefeed's
    `Contender`, whose import pulls in torch)."""
    classes = {
        "FramefeedCuda": ("framefeed-cuda", framefeed_cuda),
        "PyNvSimple": ("pynvvideocodec-simple", pynvc_simple),
        "PyNvThreaded": ("pynvvideocodec-threaded", pynvc_threaded),
    }
    if name in classes:
        library, method = classes[name]
        cls = _contender_class(name, library, method)
    elif name == "FramefeedCpuProcesses":
        cls = type(name, (_CpuProcesses, _contender_base()), {"__module__": MODULE})
    else:
        raise AttributeError(name)
    globals()[name] = cls
    return cls


@dataclass(frozen=True)
class Method:
    """A row of the table: which contender class runs it, on which device,
    and whether its parameter is a thread or a process count."""

    label: str
    module: str
    qualname: str
    device: str
    unit: str = "threads"


GPU_METHODS = (
    Method("framefeed cuda (RGB)", MODULE, "FramefeedCuda", "cuda:0"),
    Method("PyNvVideoCodec SimpleDecoder (NV12)", MODULE, "PyNvSimple", "cuda:0"),
    Method("PyNvVideoCodec ThreadedDecoder (NV12)", MODULE, "PyNvThreaded", "cuda:0"),
)
CPU_METHOD = Method("framefeed cpu (RGB)", MODULE, "FramefeedCpuProcesses", "cpu", unit="processes")


# -- measuring, each method in its own process ------------------------------------------------------


def measure_method(method: Method, label: str, path: Path, counts: list[int], runs: int,
                   timeout: float, min_seconds: float = 0.0, on_row: Any = None) -> list[dict]:
    """One row per count for `method` on `path`: warm-up, then `runs` timed runs
    in the method's worker process. A crash or hang ends that row only (the
    next count gets a fresh process); a contender that hung is not run again."""
    from framefeed.bench.isolation import ContenderProcess

    rows: list[dict] = []
    with ContenderProcess(method.module, method.qualname, method.device, 1, timeout) as process:
        reason, supported = process.probe(["throughput"])
        hung = False
        for count in counts:
            row = {"file": label, "method": method.label, method.unit: count, "status": "ok", "error": None,
                   "signal": None, "median_fps": None, "runs_fps": [], "nvdec_percent": None,
                   "frames_returned": None, "frames_decoded": None}
            rows.append(row)
            if reason or "throughput" not in supported:
                row.update(status="skipped", error=reason or "no throughput workload")
                continue
            if hung:
                row.update(status="not run", error="not run: it timed out earlier")
                continue
            utilisation: list[float] = []
            for run_index in range(runs + 1):  # the first run is the warm-up
                outcome = process.run("throughput", str(path), {method.unit: count, "min_seconds": min_seconds})
                if not outcome.ok:
                    row.update(status=outcome.status, error=outcome.error, signal=outcome.signal)
                    hung = outcome.status == "timed out"
                    break
                if run_index == 0:
                    continue
                row["runs_fps"].append(round(outcome.frames / outcome.seconds, 1))
                if outcome.nvdec_percent is not None:
                    utilisation.append(outcome.nvdec_percent)
                row["frames_returned"] = (outcome.counts or {}).get("returned", outcome.frames)
                row["frames_decoded"] = (outcome.counts or {}).get("decoded", outcome.frames)
            if row["status"] == "ok":
                row["median_fps"] = round(statistics.median(row["runs_fps"]), 1)
                row["nvdec_percent"] = round(sum(utilisation) / len(utilisation), 1) if utilisation else None
            if on_row is not None:
                on_row(row)
    return rows


def cell(row: dict) -> str:
    """A table cell: "2051 fps 71%" (fps, NVDEC utilisation), "*" when
    decoded and returned frames differ, or what went wrong."""
    if row["status"] != "ok":
        text = row["error"] if row["status"] == "crashed" else row["status"]
        return (text or row["status"]).split(" (last output")[0]
    utilisation = "-" if row["nvdec_percent"] is None else f"{row['nvdec_percent']:.0f}%"
    marker = "*" if row["frames_decoded"] != row["frames_returned"] else ""
    return f"{row['median_fps']:.0f} {utilisation}{marker}"


def print_table(environment: dict, results: list[dict], thread_counts: list[int]) -> None:
    print(f"\n{environment.get('gpu')} (driver {environment.get('driver')}), {environment.get('cpu_count')} CPU "
          f"cores, {environment.get('date')}; total frames/s and NVDEC utilisation (NVML, mean over the timed "
          "runs), median of runs")
    width = 20
    header = f"{'file':12s} {'decoder':40s}" + "".join(f"{f'{n} thr':>{width}s}" for n in thread_counts)
    print(header)
    print("-" * len(header))
    rows: dict[tuple[str, str], dict] = {}
    for result in results:
        key = result.get("threads", f"{result.get('processes')} procs")
        rows.setdefault((result["file"], result["method"]), {})[key] = result
    for (label, method), cells in rows.items():
        line = f"{label:12s} {method:40s}"
        for key, result in cells.items():
            if not isinstance(key, int):  # process counts: one cell with its own label
                line += f"  {cell(result)} ({key})"
                break
        else:
            line += "".join(f"{cell(cells[n]) if n in cells else '-':>{width}s}" for n in thread_counts)
        print(line)
    for result in results:
        if result["status"] == "ok" and result["frames_decoded"] != result["frames_returned"]:
            count = result.get("threads", result.get("processes"))
            print(f"* {result['file']} {result['method']} at {count}: decoded {result['frames_decoded']} "
                  f"frames, returned {result['frames_returned']}")
        elif result["status"] in ("crashed", "timed out") and result["error"]:
            count = result.get("threads", result.get("processes"))
            print(f"! {result['file']} {result['method']} at {count}: {result['error']}")


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--h264", help="1080p H.264 file (default: generated)")
    parser.add_argument("--hevc", help="1080p HEVC file (default: generated)")
    parser.add_argument("--frames", type=int, default=240, help="frames in generated files (default 240)")
    parser.add_argument("--runs", type=int, default=3, help="measured runs per figure (median reported)")
    parser.add_argument("--threads", default=",".join(map(str, THREAD_COUNTS)),
                        help="comma-separated thread counts (default 1,7,14,21)")
    parser.add_argument("--cpu-processes", type=int, default=os.cpu_count() or 1,
                        help="processes for the framefeed CPU row (0: no CPU row)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS,
                        help="seconds one run of one decoder set may take before its process is killed")
    parser.add_argument("--output", help="JSON path (default: benchmarks/results/gpu_throughput_<date>.json)")
    parser.add_argument("--min-seconds", type=float, default=1.0,
                        help="each run lasts at least this long (decoders loop over the file; default 1)")
    parser.add_argument("--methods", default="framefeed,simple,threaded",
                        help="GPU rows: framefeed, simple, threaded (PyNvVideoCodec's ThreadedDecoder)")
    parser.add_argument("--prepare-only", action="store_true", help="encode the inputs and stop")
    args = parser.parse_args(argv)
    try:
        args.thread_counts = [int(n) for n in args.threads.split(",") if n.strip()]
    except ValueError:
        parser.error(f"--threads: expected comma-separated integers, got {args.threads!r}")
    if not args.thread_counts or min(args.thread_counts) < 1:
        parser.error(f"--threads: expected positive integers, got {args.threads!r}")
    return args


def worker_environment() -> None:
    """Workers import this module as `gpu_throughput` and framefeed from this checkout."""
    paths = [str(BENCHMARKS), str(REPO), os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    for path in (str(REPO), str(BENCHMARKS)):
        if path not in sys.path:
            sys.path.insert(0, path)


METHOD_KEYS = {"framefeed": "FramefeedCuda", "simple": "PyNvSimple", "threaded": "PyNvThreaded"}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    worker_environment()
    if args.prepare_only:
        input_files(args)
        return 0
    environment = check_environment()
    files = input_files(args)
    chosen = {METHOD_KEYS[key.strip()] for key in args.methods.split(",") if key.strip() in METHOD_KEYS}
    results: list[dict] = []
    output = Path(args.output) if args.output else (
        BENCHMARKS / "results" / f"gpu_throughput_{environment['date'][:10]}.json")
    output.parent.mkdir(parents=True, exist_ok=True)

    def write(row: dict) -> None:  # after every row: a run cut short keeps what it measured
        results.append(row)
        report = {"benchmark": "gpu_throughput", "environment": environment, "batch": BATCH, "runs": args.runs,
                  "min_seconds": args.min_seconds,
                  "files": {label: {"name": path.name, "bytes": path.stat().st_size} for label, path in files.items()},
                  "results": results}
        output.write_text(json.dumps(report, indent=2) + "\n")
        count = f"{row['threads']:3d} threads" if "threads" in row else f"{row['processes']:3d} procs  "
        print(f"{row['file']:12s} {row['method']:40s} {count}: {cell(row)}", flush=True)

    for label, path in files.items():
        for method in GPU_METHODS:
            if method.qualname in chosen:
                measure_method(method, label, path, args.thread_counts, args.runs, args.timeout, args.min_seconds,
                               write)
        if args.cpu_processes:
            measure_method(CPU_METHOD, label, path, [args.cpu_processes], args.runs, args.timeout, args.min_seconds,
                           write)
    print_table(environment, results, args.thread_counts)
    print(f"\nwritten {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
