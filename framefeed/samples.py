"""Synthetic sample videos, generated locally with PyAV's encoders.

The CLI's default clips, the benchmarks and the tests all use these, so no
command ever needs a download. Content is a moving gradient, a moving block
and fixed noise: every frame differs from its neighbours, and the noise keeps
bitrates (and decoding cost) closer to camera footage than flat colour would.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def synthetic_frames(width: int, height: int, count: int, seed: int = 0) -> Iterator[np.ndarray]:
    """`count` RGB24 frames `(height, width, 3)` uint8."""
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack(
        [xx * 255 // max(width - 1, 1), yy * 255 // max(height - 1, 1), (xx + yy) * 255 // max(width + height - 2, 1)],
        axis=-1,
    ).astype(np.uint8)
    noise = np.random.default_rng(seed).integers(0, 24, size=(height, width, 3), dtype=np.uint8)
    block = max(min(width, height) // 6, 2)
    for i in range(count):
        frame = np.roll(base, (i * 3) % max(width, 1), axis=1)
        frame += noise
        x = (i * 7) % max(width - block, 1)
        y = (i * 5) % max(height - block, 1)
        frame[y : y + block, x : x + block] = ((37 * i) % 256, (255 - 11 * i) % 256, (90 + 5 * i) % 256)
        yield frame


@dataclass
class VideoSpec:
    """How to encode a sample video.

    `timestamps`: optional per-frame pts in `time_base` units (variable frame
    rate); by default frame i has pts i at `time_base = 1/fps`.
    `codec_options`: encoder options, e.g. `{"x264-params": "keyint=60"}`.
    """

    codec: str = "libx264"
    width: int = 320
    height: int = 240
    num_frames: int = 60
    fps: int = 25
    pix_fmt: str = "yuv420p"
    codec_options: dict[str, str] = field(default_factory=dict)
    container_format: str | None = None
    time_base: Fraction | None = None
    timestamps: Sequence[int] | None = None
    rotation_degrees: float | None = None
    colorspace: int | None = None  # FFmpeg's AVColorSpace number, e.g. 1 = BT.709
    color_range: int | None = None  # 1 = limited (MPEG), 2 = full (JPEG)
    seed: int = 0


def encode_video(path: str | os.PathLike, spec: VideoSpec) -> Path:
    """Encode `spec` to `path` (written atomically) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")  # per process: concurrent makers
    time_base = spec.time_base or Fraction(1, spec.fps)
    with _scheduling_kept(), av.open(str(partial), "w", format=spec.container_format or _format_for(path)) as container:
        stream = container.add_stream(spec.codec, rate=spec.fps, options=dict(spec.codec_options))
        stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, spec.pix_fmt
        stream.codec_context.time_base = time_base
        if spec.colorspace is not None:
            stream.codec_context.colorspace = spec.colorspace
        if spec.color_range is not None:
            stream.codec_context.color_range = spec.color_range
        if spec.rotation_degrees:
            stream.set_display_rotation(spec.rotation_degrees)
        for i, rgb in enumerate(synthetic_frames(spec.width, spec.height, spec.num_frames, spec.seed)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = spec.timestamps[i] if spec.timestamps is not None else i
            frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(partial, path)
    return path


@contextmanager
def _scheduling_kept() -> Iterator[None]:
    """Restore the calling thread's scheduling policy after encoding.

    SVT-AV1 (libsvtav1), run as root, makes the thread that opens it SCHED_FIFO
    at priority 99 and leaves it so. Every process started from that thread
    afterwards inherits the real-time policy, and busy-waiting programs then
    starve their own threads (buildah ran at full CPU without progress)."""
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        yield
    finally:
        if (os.sched_getscheduler(0), os.sched_getparam(0)) != (policy, param):
            os.sched_setscheduler(0, policy, param)  # lowering a priority needs no privilege


def _format_for(path: Path) -> str | None:
    return {".mkv": "matroska", ".webm": "webm", ".mov": "mov", ".mp4": "mp4", ".ts": "mpegts"}.get(path.suffix)


def x264_options(gop: int, bframes: int = 3, *, open_gop: bool = False, preset: str = "veryfast") -> dict[str, str]:
    """libx264 options for a fixed GOP with always-on B-frames."""
    params = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={bframes}:b-adapt=0"
    if open_gop:
        params += ":open-gop=1"
    return {"preset": preset, "x264-params": params}


def x265_options(gop: int, bframes: int = 3, *, preset: str = "ultrafast") -> dict[str, str]:
    """libx265 options: fixed GOP, B-frames, open GOP (CRA pictures), quiet."""
    params = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={bframes}:open-gop=1:log-level=error"
    return {"preset": preset, "x265-params": params}


def loop_remux(source: str | os.PathLike, destination: str | os.PathLike, times: int) -> Path:
    """Concatenate `times` copies of `source`'s video stream into `destination`
    without re-encoding (like `ffmpeg -stream_loop N -c copy`)."""
    destination = Path(destination)
    partial = destination.with_name(f"{destination.name}.{os.getpid()}.partial")
    with av.open(str(source)) as src, av.open(str(partial), "w", format=_format_for(destination)) as dst:
        in_stream = src.streams.video[0]
        out_stream = dst.add_stream_from_template(in_stream)
        packets = [p for p in src.demux(in_stream) if p.size]
        start = min(p.pts for p in packets)
        span = max(p.pts + (p.duration or 0) for p in packets) - start
        for k in range(times):
            for p in packets:
                copy = av.Packet(bytes(p))
                copy.pts, copy.dts = p.pts + k * span, p.dts + k * span
                copy.duration, copy.is_keyframe, copy.time_base = p.duration, p.is_keyframe, p.time_base
                copy.stream = out_stream
                dst.mux(copy)
    os.replace(partial, destination)
    return destination


def default_cache_dir() -> Path:
    """Where generated sample videos are kept: $FRAMEFEED_CACHE, else
    ~/.cache/framefeed."""
    root = os.environ.get("FRAMEFEED_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "framefeed")
    return Path(root)


def sample_video(cache_dir: str | os.PathLike | None = None) -> Path:
    """A small H.264 sample (640x360, 25 fps, 4 s, B-frames), generated once."""
    path = Path(cache_dir or default_cache_dir()) / "sample_h264_640x360.mp4"
    if not path.exists():
        encode_video(path, VideoSpec(width=640, height=360, num_frames=100, fps=25, codec_options=x264_options(50)))
    return path


def encode_size_changes(path: str | os.PathLike, codec: str, parts: Sequence[tuple[int, int, int]],
                        codec_options: dict[str, str] | None = None, fps: int = 25) -> Path:
    """One video stream whose frame size changes: `parts` is `(width, height,
    frames)` per stretch, each encoded by its own encoder and muxed into the
    same stream (what splicing two files, or an adaptive-bitrate switch, gives).
    The container's header describes the first stretch (MPEG-TS: whatever
    FFmpeg's probe sees). Frame i has pts i at `1 / fps`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")  # per process: concurrent makers
    time_base = Fraction(1, fps)
    options = dict(codec_options or {})
    with _scheduling_kept(), av.open(str(partial), "w", format=_format_for(path)) as container:
        stream = None
        pts = 0
        for width, height, count in parts:
            encoder = av.CodecContext.create(codec, "w")
            encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
            encoder.time_base, encoder.framerate, encoder.options = time_base, fps, options
            if stream is None:
                stream = container.add_stream(codec, rate=fps, options=options)
                stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
                stream.codec_context.time_base = time_base
            for rgb in synthetic_frames(width, height, count, seed=width):
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
                frame.pts, frame.time_base = pts, time_base
                pts += 1
                for packet in encoder.encode(frame):
                    packet.stream = stream
                    container.mux(packet)
            for packet in encoder.encode():
                packet.stream = stream
                container.mux(packet)
    os.replace(partial, path)
    return path


# -- the README's example files: `python -m framefeed.samples DIR` -------------------------------------

# Name -> how it is encoded: three short clips of three codecs (320x240, 25 fps).
EXAMPLE_VIDEOS: dict[str, VideoSpec] = {
    "h264_bframes.mp4": VideoSpec(num_frames=200, codec_options=x264_options(100)),  # 8 s, B-frames, GOP 4 s
    "hevc_cra.mp4": VideoSpec(codec="libx265", num_frames=90, codec_options=x265_options(30)),  # open GOP
    "vp9.webm": VideoSpec(codec="libvpx-vp9", num_frames=60,
                          codec_options={"deadline": "realtime", "cpu-used": "8", "g": "30"}),
}
# A folder of training clips: 640x360 H.264, 4 s each (B-frames, a keyframe every 2 s).
EXAMPLE_CLIPS, EXAMPLE_CLIP_SPEC = 8, VideoSpec(width=640, height=360, num_frames=100, codec_options=x264_options(50))
# Not a video: an MP4 box header and then bytes no demuxer takes.
BROKEN_NAME = "broken.mp4"


def write_examples(directory: str | os.PathLike, *, force: bool = False) -> list[Path]:
    """Write the files the README's examples read into `directory` (created
    if needed) and return their paths: `EXAMPLE_VIDEOS`, `clips/clip_00.mp4`
    ... (`EXAMPLE_CLIPS` of them) and `broken.mp4`, a file that is not a
    video. Files already there are kept unless `force`. The same files on
    every machine (fixed seeds), generated with PyAV's encoders.

    Raises:
        OSError: `directory` cannot be created or written.
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    jobs = [(root / name, spec) for name, spec in EXAMPLE_VIDEOS.items()]
    jobs += [(root / "clips" / f"clip_{i:02d}.mp4", _with_seed(EXAMPLE_CLIP_SPEC, i)) for i in range(EXAMPLE_CLIPS)]
    written = []
    for path, spec in jobs:
        if force or not path.exists():
            encode_video(path, spec)
        written.append(path)
    broken = root / BROKEN_NAME
    if force or not broken.exists():
        broken.write_bytes(b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
                           + np.random.default_rng(0).integers(0, 256, 4072, dtype=np.uint8).tobytes())
    written.append(broken)
    return written


def _with_seed(spec: VideoSpec, seed: int) -> VideoSpec:
    from dataclasses import replace

    return replace(spec, seed=seed, codec_options=dict(spec.codec_options))


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m framefeed.samples [DIR]`: write the README's example files."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m framefeed.samples",
                                     description="Write the video files the README's examples read "
                                     "(generated locally with PyAV's encoders; nothing is downloaded).")
    parser.add_argument("directory", nargs="?", default="samples", help="where to write them (default: ./samples)")
    parser.add_argument("--force", action="store_true", help="write them again even if they exist")
    args = parser.parse_args(argv)
    try:
        paths = write_examples(args.directory, force=args.force)
    except OSError as error:
        print(f"{parser.prog}: error: cannot write {error.filename or args.directory}: "
              f"{error.strerror or error}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
