"""A 30-second probe of the facts issue 22 rests on, on the real binding.

1. streams: 14 threads, each a `VideoDecoder(device="cuda")` decoding the
   1080p H.264 probe clip over and over, with the decoders' streams made
   three ways: framefeed's own non-blocking stream per decoder ("owned"),
   torch's pooled streams (`torch.cuda.Stream()`, 32 round-robin: what
   framefeed used before), and the legacy default stream ("legacy");
   total frames/s and NVML decoder utilisation each.
2. `PacketData`: its attributes in this PyNvVideoCodec, and whether
   `Decode` suppresses the picture of a packet marked `discardable`.
3. the CAI stream field of a decoded picture, and `decoder_stream_event`.
4. `cupy.cuda.Stream.from_external` lifetime (in a child process): does
   collecting the wrapper destroy the wrapped stream?
5. 1080 -> 1088 reuse: HEVC 1920x1080 coded as 1080 rows, then 1088, on
   framefeed's default owner (one decoder, frames within 2 of the CPU), and
   in a child process the way framefeed did it before (no maximum size).
6. a frame size that changes mid-stream (issue 20), in a child process: VP9
   320x240 -> 160x120 (inside the decoder's size bucket) and H.264/MPEG-TS
   160x120 -> 320x240 (past it: the binding's parser callback must
   reconfigure beyond its maximum). Records whether framefeed raises
   FrameSizeChangedError / DecodingError, or the process dies.

Each part prints one line and the JSON (`--output`) is rewritten after
every part, so a probe cut short keeps what it found. Without a GPU it says
so in one line and exits 0. Inputs come from `benchmarks/gpu_inputs.py`
(made here when missing).

Usage: PYTHONPATH=. python benchmarks/gpu_probe.py [--output probe.json] [--seconds-per-mode 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "benchmarks" / ".cache" / "probe"


def reuse_clips() -> list[Path]:
    """HEVC 1920x1080 coded as 1080 rows (x265 min-cu-size 8) and as 1088 (16)."""
    from framefeed.samples import VideoSpec, encode_video, x265_options

    paths = []
    for min_cu in (8, 16):
        path = CACHE / f"hevc_1080p_mincu{min_cu}.mp4"
        if not path.exists():
            options = dict(x265_options(8))
            options["x265-params"] += f":min-cu-size={min_cu}"
            encode_video(path, VideoSpec(codec="libx265", width=1920, height=1080, num_frames=16, fps=30,
                                         codec_options=options))
        paths.append(path)
    return paths


def size_change_clips() -> list[Path]:
    """Streams whose frame size changes mid-stream (`framefeed.samples.encode_size_changes`)."""
    from framefeed.samples import encode_size_changes

    made = []
    for name, codec, options, parts in [
        ("vp9_shrinks.webm", "libvpx-vp9", {"deadline": "realtime", "cpu-used": "8", "g": "3"},
         [(320, 240, 6), (160, 120, 6), (320, 240, 6)]),
        ("h264_grows.ts", "libx264", {"x264-params": "keyint=3:bframes=0"},
         [(160, 120, 6), (320, 240, 6), (160, 120, 6)]),
    ]:
        path = CACHE / name
        if not path.exists():
            encode_size_changes(path, codec, parts, options)
        made.append(path)
    return made


def prepare() -> None:
    from framefeed.doctor import probe_clip_path

    probe_clip_path()
    reuse_clips()
    size_change_clips()


# -- 1. streams -----------------------------------------------------------------------------------


def stream_calls(mode: str) -> Any:
    """`CudaCalls` whose `create_stream` gives framefeed's own streams
    ("owned"), torch's pooled ones ("torch-pool") or the legacy stream."""
    import torch

    from framefeed.engine.backends.gpu_decode.streams import CupyCudaCalls

    class Pooled(CupyCudaCalls):
        def __init__(self) -> None:
            super().__init__()
            self.kept: dict[int, Any] = {}

        def create_stream(self, device_index: int) -> int:
            stream = torch.cuda.Stream(device_index)
            self.kept[stream.cuda_stream] = stream
            return stream.cuda_stream

        def destroy_stream(self, device_index: int, handle: int) -> None:
            self.kept.pop(handle, None)

        def torch_stream(self, device_index: int, handle: int) -> Any:
            return self.kept.get(handle) or super().torch_stream(device_index, handle)

    class Legacy(CupyCudaCalls):
        def create_stream(self, device_index: int) -> int:
            return 0

        def destroy_stream(self, device_index: int, handle: int) -> None:
            pass

        def torch_stream(self, device_index: int, handle: int) -> Any:
            return torch.cuda.default_stream(device_index)

    return {"owned": CupyCudaCalls, "torch-pool": Pooled, "legacy": Legacy}[mode]()


def stream_mode(mode: str, threads: int, seconds: float) -> dict[str, Any]:
    import dataclasses
    import functools

    import torch

    from framefeed.bench.nvml import DecoderUtilisation
    from framefeed.decoders import VideoDecoder
    from framefeed.doctor import probe_clip_path
    from framefeed.engine.backends.gpu_decode import NvdecDecoders
    from framefeed.engine.backends.gpu_decode.owner import (
        _primary_context,
        create_pynvvideocodec_decoder,
        cuda_runtime,
    )
    from framefeed.engine.backends.registry import open_backend

    runtime, reason = cuda_runtime()
    if runtime is None:
        return {"mode": mode, "status": f"skipped: {reason}"}
    calls = stream_calls(mode)
    runtime = dataclasses.replace(runtime, calls=calls, create_decoder=functools.partial(
        create_pynvvideocodec_decoder, runtime.nvc, calls, _primary_context))
    owner = NvdecDecoders(0, runtime=runtime)

    class Decoder(VideoDecoder):
        def _open_backend(self, params: Any, context: Any) -> Any:
            return open_backend(params, torch.device("cuda", 0), dataclasses.replace(context, nvdec=owner))

    path = str(probe_clip_path())
    counts, errors = [0] * threads, []
    barrier = threading.Barrier(threads + 1)
    deadline = [0.0]

    def work(slot: int) -> None:
        try:
            barrier.wait()
            while time.perf_counter() < deadline[0]:
                decoder = Decoder(path, device="cuda:0")
                for first in range(0, len(decoder), 30):
                    counts[slot] += len(decoder.get_frames_in_range(first, min(first + 30, len(decoder))))
                decoder.close()
            torch.cuda.current_stream(0).synchronize()
        except Exception as error:
            errors.append(f"{type(error).__name__}: {error}")

    workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    sampler = DecoderUtilisation(0)
    deadline[0] = time.perf_counter() + seconds
    sampler.start()
    began = time.perf_counter()
    barrier.wait()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - began
    utilisation = sampler.stop()
    owner.close()
    return {"mode": mode, "threads": threads, "seconds": round(elapsed, 2), "frames": sum(counts),
            "frames_per_second": round(sum(counts) / elapsed, 1),
            "nvdec_percent": None if utilisation is None else round(utilisation, 1), "errors": errors[:3],
            "status": "ok" if not errors else "failed"}


# -- 2, 3. PacketData, pictures ---------------------------------------------------------------------


def binding_facts() -> dict[str, Any]:
    """PacketData's attributes; whether `discardable` suppresses a picture;
    a picture's CAI stream field and decoder_stream_event."""
    import av
    import PyNvVideoCodec as nvc
    import torch

    from framefeed.doctor import probe_clip_path
    from framefeed.engine.backends.gpu_decode.bitstream import PacketPreparer
    from framefeed.engine.backends.gpu_decode.owner import _primary_context

    packet = nvc.PacketData()
    facts: dict[str, Any] = {"pynvvideocodec": getattr(nvc, "__version__", "?"),
                             "packetdata_attributes": sorted(a for a in dir(packet) if not a.startswith("_"))}
    stream = torch.cuda.Stream(0)
    results = {}
    for mark in (False, True):
        decoder = nvc.CreateDecoder(gpuid=0, codec=nvc.cudaVideoCodec.H264, cudacontext=_primary_context(0),
                                    cudastream=stream.cuda_stream, usedevicememory=True,
                                    outputColorType=nvc.OutputColorType.NATIVE)
        shown, first = 0, None
        with av.open(str(probe_clip_path())) as container:
            video = container.streams.video[0]
            preparer = PacketPreparer(video)
            packets = [p for p in container.demux(video) if p.size]
            for index, raw in enumerate(packets + [None]):
                prepared = preparer.prepare(raw) if raw is not None else []
                for item in prepared:
                    data = nvc.PacketData()
                    data.bsl_data, data.bsl, data.pts = item.address, item.size, int(item.pts or 0)
                    if mark and index == 0:
                        data.discardable = True
                    frames = decoder.Decode(data)
                    shown += len(frames)
                    if frames and first is None:
                        first = frames[0]
                        cai = first.cuda()[0].__cuda_array_interface__
                        facts["cai"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cai.items()
                                        if k != "data"}
                        facts["decoder_stream_event"] = hasattr(first, "decoder_stream_event")
                        facts["decoder_stream"] = stream.cuda_stream
                if raw is None:
                    shown += len(decoder.Decode(nvc.PacketData()))
        results[mark] = shown
        del decoder, first
    facts["frames"] = {"plain": results[False], "first packet discardable": results[True]}
    facts["discardable_suppresses_picture"] = results[True] < results[False]
    return facts


# -- 4, 5. in child processes ------------------------------------------------------------------------

FROM_EXTERNAL = r"""
import gc, torch, cupy
s = torch.cuda.Stream(0)
handle = s.cuda_stream
w = cupy.cuda.Stream.from_external(s)
del w
gc.collect()
try:
    cupy.cuda.runtime.streamQuery(handle)
    print("alive")
except Exception as error:
    print("destroyed", type(error).__name__, error)
"""

OLD_REUSE = r"""
import sys, av, torch
import PyNvVideoCodec as nvc
from framefeed.engine.backends.gpu_decode.bitstream import PacketPreparer
from framefeed.engine.backends.gpu_decode.owner import _primary_context
s = torch.cuda.Stream(0)
decoder = nvc.CreateDecoder(gpuid=0, codec=nvc.cudaVideoCodec.HEVC, cudacontext=_primary_context(0),
                            cudastream=s.cuda_stream, usedevicememory=True, outputColorType=nvc.OutputColorType.NATIVE)
for path in sys.argv[1:]:
    shown = 0
    with av.open(path) as container:
        video = container.streams.video[0]
        preparer = PacketPreparer(video)
        for raw in container.demux(video):
            if raw.size:
                for item in preparer.prepare(raw):
                    p = nvc.PacketData(); p.bsl_data, p.bsl, p.pts = item.address, item.size, int(item.pts or 0)
                    shown += len(decoder.Decode(p))
        shown += len(decoder.Decode(nvc.PacketData()))
    print(path.rsplit("/", 1)[-1], shown, "frames", flush=True)
"""


SIZE_CHANGE = """
import sys
from framefeed import VideoDecoder
from framefeed.errors import DecodingError
decoder = VideoDecoder(sys.argv[1], device="cuda:0")
print("fallback:", decoder.cpu_fallback.is_fallback, flush=True)
try:
    decoder.get_frames_in_range(0, len(decoder))
    print("no error: frames of another size were returned", flush=True)
except DecodingError as error:
    print(type(error).__name__ + ":", str(error)[:200], flush=True)
"""


def child(code: str, *args: str, timeout: float = 20) -> dict[str, Any]:
    try:
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                              cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"status": "timed out"}
    tail = (done.stdout + done.stderr).strip().splitlines()[-6:]
    status = "ok" if done.returncode == 0 else (f"killed by signal {-done.returncode}" if done.returncode < 0
                                                else f"exit {done.returncode}")
    return {"status": status, "output": tail}


def reuse_now() -> dict[str, Any]:
    from framefeed.decoders import VideoDecoder
    from framefeed.engine.backends.gpu_decode import default_decoders

    cache = default_decoders(0).decoder_cache
    created, rows = cache.created, []
    paths = reuse_clips()
    for path in [*paths, paths[0]]:
        cuda, cpu = VideoDecoder(str(path), device="cuda:0"), VideoDecoder(str(path), device="cpu")
        ours, theirs = cuda.get_frames_in_range(0, len(cpu)), cpu.get_frames_in_range(0, len(cpu))
        rows.append({"file": path.name, "max_abs_diff": int((ours.data.cpu().int() - theirs.data.int()).abs().max()),
                     "frames": len(ours)})
        cuda.close()
    return {"rows": rows, "decoders_created": cache.created - created,
            "status": "ok" if all(r["max_abs_diff"] <= 2 for r in rows) else "failed"}


# -- main ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", help="JSON written after every part (default: benchmarks/results/probe.json)")
    parser.add_argument("--threads", type=int, default=14)
    parser.add_argument("--seconds-per-mode", type=float, default=5.0)
    parser.add_argument("--prepare-only", action="store_true", help="make the inputs and stop")
    args = parser.parse_args(argv)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    if args.prepare_only:
        prepare()
        return 0
    import torch

    if not torch.cuda.is_available():
        print("gpu_probe: no CUDA GPU visible to torch: skipped")
        return 0
    output = Path(args.output) if args.output else REPO / "benchmarks" / "results" / "probe.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"gpu": torch.cuda.get_device_name(0), "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    prepare()

    def part(name: str, call: Any) -> None:
        began = time.perf_counter()
        try:
            report[name] = call()
        except Exception as error:
            report[name] = {"status": f"error: {type(error).__name__}: {error}"}
        print(f"{name} ({time.perf_counter() - began:.1f}s): {json.dumps(report[name], default=str)}", flush=True)
        output.write_text(json.dumps(report, indent=2, default=str) + "\n")

    for mode in ("owned", "torch-pool", "legacy"):
        part(f"streams_{mode}", lambda mode=mode: stream_mode(mode, args.threads, args.seconds_per_mode))
    part("binding", binding_facts)
    part("from_external", lambda: child(FROM_EXTERNAL))
    part("reuse_1080_1088", reuse_now)
    part("reuse_1080_1088_before", lambda: child(OLD_REUSE, *(str(p) for p in reuse_clips())))
    for path in size_change_clips():
        part(f"size_change_{path.stem}", lambda path=path: child(SIZE_CHANGE, str(path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
