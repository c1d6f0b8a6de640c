"""NVDEC throughput: framefeed on CUDA against PyNvVideoCodec's own decoders
and against framefeed's CPU backend on every core.

For 1080p H.264 and 1080p HEVC it measures, as total frames per second
over all decoders:
- framefeed `VideoDecoder(device="cuda")`: RGB uint8 frames in CUDA memory
  (NCHW), one decoder per thread, decoding the whole file in batches;
- PyNvVideoCodec `SimpleDecoder` and `ThreadedDecoder`: raw NV12 frames
  (NATIVE output, no colour conversion), one decoder per thread;
each with 1, 7, 14 and 21 concurrent threads (Hopper has 7 NVDEC engines);
- framefeed `VideoDecoder(device="cpu")`: RGB frames, one process per core,
  one FFmpeg thread each.
Every figure is the median of `--runs` runs after one warm-up run. The table
is printed and written as JSON (date, GPU, driver, versions) under
`benchmarks/results/`.

Usage (on a GPU machine, from the repository root):
    PYTHONPATH=. python benchmarks/gpu_throughput.py [--h264 FILE] [--hevc FILE]
Without files, 1080p test videos are encoded once with PyAV into
`benchmarks/.cache/`. Nothing heavy is imported before the GPU check.
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
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
THREAD_COUNTS = (1, 7, 14, 21)
BATCH = 32


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
    from framefeed.gpu_decode import nvdec_unavailable_reason

    reason = nvdec_unavailable_reason()
    if reason:
        fail(f"framefeed's NVDEC path is unavailable: {reason}")
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "gpu": torch.cuda.get_device_name(0),
        "compute_capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
        "driver": driver_version(),
        "cuda_runtime_torch": torch.version.cuda,
        "torch": torch.__version__,
        "pynvvideocodec": getattr(nvc, "__version__", "unknown"),
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
    cache = REPO / "benchmarks" / ".cache"
    files = {}
    for label, given, codec, name in (("1080p H.264", args.h264, "libx264", "bench_1080p_h264.mp4"),
                                      ("1080p HEVC", args.hevc, "libx265", "bench_1080p_hevc.mp4")):
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


# -- decoders under test -----------------------------------------------------------------------


def framefeed_cuda(path: Path) -> int:
    """RGB frames decoded by one framefeed CUDA decoder (whole file)."""
    import torch

    from framefeed.decoders import VideoDecoder

    decoder = VideoDecoder(str(path), device="cuda:0")
    if decoder.cpu_fallback:
        raise RuntimeError(f"framefeed fell back to the CPU: {decoder.cpu_fallback}")
    count = len(decoder)
    for start in range(0, count, BATCH):
        decoder.get_frames_in_range(start, min(start + BATCH, count))
    torch.cuda.current_stream(0).synchronize()
    return count


def pynvc_simple(path: Path) -> int:
    """Raw NV12 frames from one PyNvVideoCodec SimpleDecoder (whole file)."""
    import PyNvVideoCodec as nvc

    decoder = nvc.SimpleDecoder(str(path), gpu_id=0, use_device_memory=True,
                                output_color_type=nvc.OutputColorType.NATIVE)
    return drain_batches(decoder)


def drain_batches(decoder) -> int:
    """Frames fetched in batches until the decoder's frame count or an empty batch."""
    total, count = len(decoder), 0
    while count < total:
        frames = decoder.get_batch_frames(min(BATCH, total - count))
        if not frames:
            break
        count += len(frames)
    return count


def pynvc_threaded(path: Path) -> int:
    """Raw NV12 frames from one PyNvVideoCodec ThreadedDecoder (whole file)."""
    import PyNvVideoCodec as nvc

    decoder = nvc.ThreadedDecoder(str(path), buffer_size=BATCH, gpu_id=0, use_device_memory=True,
                                  output_color_type=nvc.OutputColorType.NATIVE)
    try:
        return drain_batches(decoder)
    finally:
        decoder.end()


GPU_METHODS = {
    "framefeed cuda (RGB)": framefeed_cuda,
    "PyNvVideoCodec SimpleDecoder (NV12)": pynvc_simple,
    "PyNvVideoCodec ThreadedDecoder (NV12)": pynvc_threaded,
}


def run_threads(method, path: Path, threads: int) -> float:
    """Total frames per second of `threads` concurrent decoders, one per thread."""
    counts = [0] * threads
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads + 1)

    def work(slot: int) -> None:
        try:
            barrier.wait()
            counts[slot] = method(path)
        except BaseException as error:  # reported after join
            errors.append(error)

    workers = [threading.Thread(target=work, args=(slot,)) for slot in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    start = time.perf_counter()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return sum(counts) / elapsed


def cpu_worker(path: str) -> int:
    from framefeed.decoders import VideoDecoder

    decoder = VideoDecoder(path, device="cpu", num_ffmpeg_threads=1)
    count = len(decoder)
    for start in range(0, count, BATCH):
        decoder.get_frames_in_range(start, min(start + BATCH, count))
    return count


def run_cpu_processes(path: Path, processes: int) -> float:
    """Total RGB frames per second of one CPU decoder per process (spawned,
    never forked from a process holding a CUDA context)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        pool.map(cpu_worker, [str(path)] * processes)  # start-up and imports out of the timing
        start = time.perf_counter()
        counts = pool.map(cpu_worker, [str(path)] * processes)
        elapsed = time.perf_counter() - start
    return sum(counts) / elapsed


# -- main -------------------------------------------------------------------------------------


def median_of(runs: int, measure) -> tuple[float, list[float]]:
    measure()  # warm-up: contexts, kernels, decoder caches
    values = [measure() for _ in range(runs)]
    return statistics.median(values), values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--h264", help="1080p H.264 file (default: generated)")
    parser.add_argument("--hevc", help="1080p HEVC file (default: generated)")
    parser.add_argument("--frames", type=int, default=300, help="frames in generated files")
    parser.add_argument("--runs", type=int, default=3, help="measured runs per figure (median reported)")
    parser.add_argument("--threads", default=",".join(map(str, THREAD_COUNTS)), help="thread counts")
    parser.add_argument("--cpu-processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--output", help="JSON path (default: benchmarks/results/gpu_throughput_<date>.json)")
    args = parser.parse_args(argv)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))

    environment = check_environment()
    files = input_files(args)
    thread_counts = [int(n) for n in args.threads.split(",") if n.strip()]
    results = []
    for label, path in files.items():
        for method_name, method in GPU_METHODS.items():
            for threads in thread_counts:
                fps, runs = median_of(args.runs, lambda m=method, t=threads, p=path: run_threads(m, p, t))
                results.append({"file": label, "method": method_name, "threads": threads,
                                "median_fps": round(fps, 1), "runs_fps": [round(v, 1) for v in runs]})
                print(f"{label:12s} {method_name:40s} {threads:3d} threads: {fps:9.1f} frames/s", flush=True)
        fps, runs = median_of(args.runs, lambda p=path: run_cpu_processes(p, args.cpu_processes))
        results.append({"file": label, "method": "framefeed cpu (RGB)", "processes": args.cpu_processes,
                        "median_fps": round(fps, 1), "runs_fps": [round(v, 1) for v in runs]})
        print(f"{label:12s} {'framefeed cpu (RGB)':40s} {args.cpu_processes:3d} procs:   {fps:9.1f} frames/s",
              flush=True)

    print_table(environment, results, thread_counts)
    report = {"benchmark": "gpu_throughput", "environment": environment, "batch": BATCH,
              "files": {label: {"path": str(path), "bytes": path.stat().st_size} for label, path in files.items()},
              "results": results}
    output = Path(args.output) if args.output else (
        REPO / "benchmarks" / "results" / f"gpu_throughput_{environment['date'][:10]}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten {output}")
    return 0


def print_table(environment: dict, results: list[dict], thread_counts: list[int]) -> None:
    print(f"\n{environment['gpu']} (driver {environment['driver']}), {environment['cpu_count']} CPU cores, "
          f"{environment['date']}; total frames/s, median of runs")
    header = f"{'file':12s} {'decoder':40s}" + "".join(f"{f'{n} thr':>10s}" for n in thread_counts)
    print(header)
    print("-" * len(header))
    rows: dict[tuple[str, str], dict] = {}
    for result in results:
        rows.setdefault((result["file"], result["method"]), {})[result.get("threads", "cpu")] = result
    for (label, method), cells in rows.items():
        if "cpu" in cells:
            cell = cells["cpu"]
            print(f"{label:12s} {method:40s} {cell['median_fps']:10.1f}  ({cell['processes']} processes)")
            continue
        print(f"{label:12s} {method:40s}" + "".join(
            f"{cells[n]['median_fps']:10.1f}" if n in cells else f"{'-':>10s}" for n in thread_counts))


if __name__ == "__main__":
    sys.exit(main())
