"""`framefeed doctor`: what to run first on a new machine.

It reports, in order:

1. versions: Python, framefeed, torch (and its CUDA), PyAV (and FFmpeg),
   PyNvVideoCodec, CuPy, nvidia-ml-py;
2. the GPU: name, compute capability, memory, driver and CUDA driver
   versions, the video clock (NVML `NVML_CLOCK_VIDEO`, current and maximum),
   NVDEC engines, and per codec what `GetDecoderCaps` answers;
3. parity: each codec's generated clip decoded on the CPU and on NVDEC,
   max and mean |difference| against the tolerance framefeed holds NVDEC
   to (2 levels; MPEG-2, whose decoders may legitimately differ, 12), in
   about `--parity-seconds` (20) in all;
4. a throughput probe: one `VideoDecoder(device="cuda")` per NVDEC engine
   decoding a generated 1080p H.264 clip for `--probe-seconds`, total
   frames/s with NVML decoder utilisation, against a roofline: engines x
   NVIDIA's published per-engine rate scaled to the measured video clock
   (Video Codec SDK, NVDEC application note: a Hopper-class engine decodes
   about 771 frames/s of 1080p H.264 and 1316 of HEVC at 1860 MHz).

Without a usable GPU it says why in one line and checks the CPU path
instead: a generated clip decoded by framefeed equals PyAV's plain decode.
`--json` prints the whole report as one JSON object. Exit status 0 when
every check passed, 1 when one failed. Generated clips are kept in
`$FRAMEFEED_CACHE/doctor` (default `~/.cache/framefeed/doctor`);
`--prepare-only` just makes them.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Per-engine 1080p decode rates at a 1860 MHz video clock (Hopper-class
# NVDEC), from the Video Codec SDK's NVDEC application note.
PUBLISHED_CLOCK_MHZ = 1860.0
PUBLISHED_FPS_1080P = {"h264": 771.0, "hevc": 1316.0}
# What framefeed holds NVDEC to against its CPU decoder (README, GPU section).
MAX_DIFF = 2
MPEG2_MAX_DIFF, MPEG2_MEAN_DIFF = 12, 1.0


@dataclass(frozen=True)
class ParityClip:
    """A generated clip for the parity check."""

    name: str
    codec: str
    encoder: str
    pix_fmt: str = "yuv420p"
    options: tuple[tuple[str, str], ...] = ()
    frames: int = 30

    @property
    def file_name(self) -> str:
        suffix = {"libvpx-vp9": "webm", "libsvtav1": "mkv", "mpeg2video": "ts"}.get(self.encoder, "mp4")
        return f"parity_{self.name}_640x360.{suffix}"


PARITY_CLIPS = (
    ParityClip("h264", "h264", "libx264", options=(("x264-params", "keyint=15:bframes=3"),)),
    ParityClip("hevc", "hevc", "libx265", options=(("x265-params", "keyint=15:bframes=3:log-level=error"),)),
    ParityClip("hevc-10bit", "hevc", "libx265", "yuv420p10le", (("x265-params", "keyint=15:log-level=error"),)),
    ParityClip("vp9", "vp9", "libvpx-vp9", options=(("deadline", "realtime"), ("cpu-used", "8"), ("g", "15"))),
    ParityClip("av1", "av1", "libsvtav1", options=(("preset", "12"), ("g", "15"))),
    ParityClip("mpeg2", "mpeg2video", "mpeg2video", options=(("g", "12"),)),
)
PROBE_CLIP = "probe_h264_1920x1080_120f.mp4"


def roofline_fps(codec: str, engines: int, clock_mhz: float | None) -> float | None:
    """The published 1080p ceiling: `engines` x the per-engine rate of
    `codec` scaled linearly to `clock_mhz` (None when either is unknown)."""
    rate = PUBLISHED_FPS_1080P.get(codec)
    if rate is None or not engines or not clock_mhz:
        return None
    return engines * rate * clock_mhz / PUBLISHED_CLOCK_MHZ


def cache_dir() -> Path:
    from framefeed.samples import default_cache_dir

    return default_cache_dir() / "doctor"


def clip_path(clip: ParityClip) -> Path:
    """The clip, generated on first use (640x360)."""
    from framefeed.samples import VideoSpec, encode_video

    path = cache_dir() / clip.file_name
    if not path.exists():
        encode_video(path, VideoSpec(codec=clip.encoder, width=640, height=360, num_frames=clip.frames,
                                     pix_fmt=clip.pix_fmt, codec_options=dict(clip.options)))
    return path


def probe_clip_path() -> Path:
    """A 1920x1080 H.264 clip with B-frames, 120 frames, generated on first use."""
    from framefeed.samples import VideoSpec, encode_video, x264_options

    path = cache_dir() / PROBE_CLIP
    if not path.exists():
        encode_video(path, VideoSpec(width=1920, height=1080, num_frames=120, fps=30,
                                     codec_options=x264_options(30)))
    return path


# -- versions and the GPU -----------------------------------------------------------------------


def _version(module: str) -> str | None:
    try:
        imported = __import__(module)
    except Exception as error:  # ImportError, or PyNvVideoCodec's OSError without the driver's libraries
        return f"not importable ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
    return str(getattr(imported, "__version__", "installed"))


def versions() -> dict[str, Any]:
    import av
    import torch

    import framefeed

    ffmpeg = getattr(av, "ffmpeg_version_info", None) or "?"
    return {"python": platform.python_version(), "framefeed": framefeed.__version__, "torch": torch.__version__,
            "torch_cuda": torch.version.cuda, "av": av.__version__, "ffmpeg": str(ffmpeg),
            "PyNvVideoCodec": _version("PyNvVideoCodec"), "cupy": _version("cupy"),
            "nvidia-ml-py": _version("pynvml")}


def gpu_facts(index: int) -> dict[str, Any]:
    """Name, capability, memory; driver, CUDA driver and video clock from NVML."""
    import torch

    properties = torch.cuda.get_device_properties(index)
    facts: dict[str, Any] = {"index": index, "name": properties.name,
                             "compute_capability": f"{properties.major}.{properties.minor}",
                             "memory_gib": round(properties.total_memory / 2**30, 1), "driver": None,
                             "cuda_driver": None, "video_clock_mhz": None, "video_clock_max_mhz": None}
    from framefeed.bench.nvml import device_handle, load_nvml

    nvml, reason = load_nvml()
    if nvml is None:
        facts["nvml"] = reason
        return facts
    handle = device_handle(nvml, index)
    for key, call in (("driver", lambda: nvml.nvmlSystemGetDriverVersion()),
                      ("cuda_driver", lambda: nvml.nvmlSystemGetCudaDriverVersion()),
                      ("video_clock_mhz", lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_VIDEO)),
                      ("video_clock_max_mhz",
                       lambda: nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_VIDEO))):
        try:
            value = call()
            facts[key] = value.decode() if isinstance(value, bytes) else value
        except Exception as error:  # NVMLError_NotSupported on some boards
            facts[key] = f"unavailable ({type(error).__name__})"
    if isinstance(facts["cuda_driver"], int):
        facts["cuda_driver"] = f"{facts['cuda_driver'] // 1000}.{facts['cuda_driver'] % 1000 // 10}"
    return facts


CAPS_QUERIES = (("h264", "420", 8), ("hevc", "420", 8), ("hevc", "420", 10), ("hevc", "444", 8), ("vp9", "420", 8),
                ("vp9", "420", 10), ("av1", "420", 8), ("mpeg2video", "420", 8), ("vp8", "420", 8))


def nvdec_facts(index: int) -> dict[str, Any]:
    """Whether NVDEC is usable, and `GetDecoderCaps` per codec (one query
    each: the binding creates a CUDA context per call)."""
    from framefeed.engine.backends.gpu_decode import nvdec_unavailable_reason
    from framefeed.engine.backends.gpu_decode.capabilities import (
        DecoderCapsCache,
        pynvvideocodec_caps_query,
    )
    from framefeed.engine.backends.gpu_decode.owner import default_decoders

    reason = nvdec_unavailable_reason()
    facts: dict[str, Any] = {"available": not reason, "reason": reason, "engines": None, "caps": {}}
    if reason:
        return facts
    runtime, _ = default_decoders(index).runtime()
    caps = DecoderCapsCache(pynvvideocodec_caps_query(runtime.nvc))
    for codec, chroma, depth in CAPS_QUERIES:
        label = f"{codec} {depth}-bit {chroma[0]}:{chroma[1]}:{chroma[2]}"
        try:
            answer = caps.get(index, codec, chroma, depth)
        except Exception as error:
            facts["caps"][label] = {"error": f"{type(error).__name__}: {error}"}
            continue
        facts["caps"][label] = answer
        if codec == "h264" and answer.get("supported"):
            facts["engines"] = int(answer.get("num_decoder_engines", 0)) or None
    return facts


# -- checks ------------------------------------------------------------------------------------


def _compare(ours: Any, theirs: Any) -> tuple[int, float]:
    diff = (ours.cpu().int() - theirs.int()).abs()
    return (int(diff.max()), float(diff.float().mean())) if diff.numel() else (0, 0.0)


def parity(device: str, budget_seconds: float) -> list[dict[str, Any]]:
    """Each parity clip on the CPU and on `device`; stops starting new clips
    once `budget_seconds` have passed."""
    from framefeed.decoders import VideoDecoder

    rows, began = [], time.perf_counter()
    for clip in PARITY_CLIPS:
        row: dict[str, Any] = {"clip": clip.name, "codec": clip.codec}
        rows.append(row)
        if time.perf_counter() - began > budget_seconds:
            row["status"] = "not run (time budget)"
            continue
        try:
            path = str(clip_path(clip))
            gpu, cpu = VideoDecoder(path, device=device), VideoDecoder(path, device="cpu")
            if gpu.cpu_fallback:
                row["status"] = f"cpu fallback: {gpu.cpu_fallback.reason}"  # e.g. AV1 on Hopper: not a failure
                continue
            ours, theirs = gpu.get_frames_in_range(0, len(cpu)), cpu.get_frames_in_range(0, len(cpu))
            worst, mean = _compare(ours.data, theirs.data)
            limit_max, limit_mean = (MPEG2_MAX_DIFF, MPEG2_MEAN_DIFF) if clip.codec == "mpeg2video" else (MAX_DIFF, None)
            same_times = bool((ours.pts_seconds == theirs.pts_seconds).all())
            ok = worst <= limit_max and (limit_mean is None or mean <= limit_mean) and same_times
            row.update(frames=len(cpu), max_abs_diff=worst, mean_abs_diff=round(mean, 4), same_pts=same_times,
                       limit=limit_max, status="ok" if ok else "FAILED")
        except Exception as error:
            row["status"] = f"error: {type(error).__name__}: {error}"
    return rows


def cpu_path_check() -> dict[str, Any]:
    """framefeed's CPU decode of a generated clip against PyAV's plain decode."""
    import av
    import torch

    from framefeed.decoders import VideoDecoder

    path = str(clip_path(PARITY_CLIPS[0]))
    began = time.perf_counter()
    ours = VideoDecoder(path, device="cpu").get_frames_in_range(0, PARITY_CLIPS[0].frames)
    seconds = time.perf_counter() - began
    with av.open(path) as container:
        frames = [torch.from_numpy(f.to_ndarray(format="rgb24")).permute(2, 0, 1) for f in container.decode(video=0)]
    worst, mean = _compare(ours.data, torch.stack(frames))
    return {"clip": path, "frames": len(frames), "max_abs_diff": worst, "mean_abs_diff": round(mean, 4),
            "seconds": round(seconds, 3), "status": "ok" if worst == 0 and len(ours) == len(frames) else "FAILED"}


def throughput_probe(device: str, threads: int, seconds: float, clock_mhz: float | None) -> dict[str, Any]:
    """`threads` VideoDecoders, one per thread, decoding the probe clip in
    batches over and over for `seconds`; total frames/s, NVML utilisation
    and the roofline."""
    import torch

    from framefeed.bench.nvml import DecoderUtilisation
    from framefeed.decoders import VideoDecoder

    path = str(probe_clip_path())
    index = torch.device(device).index or 0
    counts = [0] * threads
    errors: list[str] = []
    start = threading.Barrier(threads + 1)
    deadline = [0.0]

    def work(slot: int) -> None:
        try:
            consumer = torch.cuda.Stream(index)  # each thread's own consumer: no coupling on the legacy stream
            start.wait()
            with torch.cuda.stream(consumer):
                while time.perf_counter() < deadline[0]:
                    decoder = VideoDecoder(path, device=device)
                    for first in range(0, len(decoder), 30):
                        counts[slot] += len(decoder.get_frames_in_range(first, min(first + 30, len(decoder))))
                    decoder.close()
            consumer.synchronize()
        except Exception as error:
            errors.append(f"{type(error).__name__}: {error}")

    workers = [threading.Thread(target=work, args=(slot,), daemon=True) for slot in range(threads)]
    for worker in workers:
        worker.start()
    sampler = DecoderUtilisation(index)
    deadline[0] = time.perf_counter() + seconds
    sampler.start()
    began = time.perf_counter()
    start.wait()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - began
    utilisation = sampler.stop()
    fps = sum(counts) / elapsed if elapsed > 0 else 0.0
    ceiling = roofline_fps("h264", threads, clock_mhz)
    return {"clip": Path(path).name, "threads": threads, "seconds": round(elapsed, 2), "frames": sum(counts),
            "frames_per_second": round(fps, 1),
            "nvdec_utilisation_percent": None if utilisation is None else round(utilisation, 1),
            "roofline_fps": None if ceiling is None else round(ceiling, 1),
            "fraction_of_roofline": None if not ceiling else round(fps / ceiling, 3),
            "errors": errors[:3], "status": "ok" if not errors else "FAILED"}


# -- the command ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="framefeed doctor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument("--device", default="cuda:0", help="the CUDA device to check (default cuda:0)")
    parser.add_argument("--parity-seconds", type=float, default=20.0,
                        help="time for the CPU-vs-NVDEC parity check over all codecs (default 20)")
    parser.add_argument("--probe-seconds", type=float, default=8.0,
                        help="length of the throughput probe (default 8; 0 skips it)")
    parser.add_argument("--prepare-only", action="store_true", help="only generate the clips the checks use")
    return parser.parse_args(argv)


def collect(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """The report, and the lines `framefeed doctor` prints without --json."""
    import torch

    report: dict[str, Any] = {"versions": versions()}
    lines = ["versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items())]
    if not torch.cuda.is_available():
        report["gpu"] = None
        report["gpu_reason"] = (f"torch {torch.__version__} sees no CUDA GPU "
                                f"(CUDA build: {torch.version.cuda or 'no'})")
        lines.append(f"no GPU: {report['gpu_reason']}; checking the CPU path only")
        report["cpu_path"] = cpu_path_check()
        cpu = report["cpu_path"]
        lines.append(f"cpu path: {cpu['status']} ({cpu['frames']} frames of {Path(cpu['clip']).name}, "
                     f"max |diff| {cpu['max_abs_diff']} against PyAV)")
        return report, lines
    index = torch.device(args.device).index or 0
    gpu = report["gpu"] = gpu_facts(index)
    lines.append(f"gpu {index}: {gpu['name']} (sm {gpu['compute_capability']}, {gpu['memory_gib']} GiB), driver "
                 f"{gpu['driver']}, CUDA driver {gpu['cuda_driver']}, video clock {gpu['video_clock_mhz']} MHz "
                 f"(max {gpu['video_clock_max_mhz']})")
    nvdec = report["nvdec"] = nvdec_facts(index)
    if not nvdec["available"]:
        lines.append(f"NVDEC unusable: {nvdec['reason']}")
        report["cpu_path"] = cpu_path_check()
        return report, lines
    lines.append(f"NVDEC: {nvdec['engines']} engines")
    for label, answer in nvdec["caps"].items():
        if "error" in answer:
            lines.append(f"  {label:22s} error: {answer['error']}")
        elif answer.get("supported"):
            lines.append(f"  {label:22s} {answer.get('width_min')}x{answer.get('height_min')} .. "
                         f"{answer.get('width_max')}x{answer.get('height_max')}")
        else:
            lines.append(f"  {label:22s} not supported")
    report["parity"] = parity(args.device, args.parity_seconds)
    for row in report["parity"]:
        detail = (f"max |diff| {row['max_abs_diff']} (limit {row['limit']}), mean {row['mean_abs_diff']}, "
                  f"{row['frames']} frames" if "max_abs_diff" in row else "")
        lines.append(f"parity {row['clip']:11s} {row['status']} {detail}".rstrip())
    if args.probe_seconds > 0:
        clock = gpu["video_clock_mhz"] if isinstance(gpu["video_clock_mhz"], (int, float)) else None
        probe = report["throughput"] = throughput_probe(args.device, nvdec["engines"] or 1, args.probe_seconds,
                                                        clock)
        roof = ("" if probe["roofline_fps"] is None else
                f" = {probe['fraction_of_roofline']:.0%} of the {probe['roofline_fps']:.0f} fps roofline "
                f"({probe['threads']} engines x {PUBLISHED_FPS_1080P['h264']:.0f} fps x {clock}/"
                f"{PUBLISHED_CLOCK_MHZ:.0f} MHz)")
        utilisation = probe["nvdec_utilisation_percent"]
        lines.append(f"throughput: {probe['frames_per_second']:.0f} fps of 1080p H.264 with {probe['threads']} "
                     f"threads{roof}, NVDEC {'-' if utilisation is None else f'{utilisation:.0f}%'} busy (NVML)"
                     + (f"; errors: {probe['errors']}" if probe["errors"] else ""))
    return report, lines


def passed(report: dict[str, Any]) -> bool:
    rows = [report.get("cpu_path")] + list(report.get("parity") or []) + [report.get("throughput")]
    return not any(row and str(row.get("status", "ok")).startswith(("FAILED", "error")) for row in rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.prepare_only:
        for clip in PARITY_CLIPS:
            clip_path(clip)
        probe_clip_path()
        print(f"framefeed doctor: clips ready in {cache_dir()}")
        return 0
    report, lines = collect(args)
    report["ok"] = passed(report)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        for line in lines:
            print(line)
        print("all checks passed" if report["ok"] else "a check FAILED (see above)")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
