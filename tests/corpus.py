"""The test corpus: small videos that exercise what breaks decoders, on the
CPU and on NVDEC. The one corpus every test uses, whatever the backend.

Every file is generated with PyAV's encoders (never downloaded, never
committed) into a cache directory, once: `$FRAMEFEED_TEST_CACHE` or
`<repo>/.cache/test-corpus-v<N>` (bump `CORPUS_VERSION` when a recipe changes;
v5 merged the NVDEC tests' files into this corpus).

Each entry states its traits: codec, bit depth, chroma format, and whether
NVDEC on Hopper (H100/H200) decodes it or which CPU-fallback reason it gets
(`nvdec_fallback`), so the same file list serves the CPU, emulated-NVDEC and
CUDA runs (`backends_under_test`).

Ground truth (`reference_frames`) is PyAV's plain sequential decode of every
frame of the file, converted by swscale to RGB24 and rotated as the frame's
display matrix says: independent of framefeed's index, plan and seeking.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from framefeed.samples import VideoSpec, encode_video, x264_options, x265_options

CORPUS_VERSION = 5
REPO = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    root = os.environ.get("FRAMEFEED_TEST_CACHE") or str(REPO / ".cache" / f"test-corpus-v{CORPUS_VERSION}")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class CorpusFile:
    """One corpus entry: a file name, how to make it, and what it is.

    Attributes:
        name: file name (the extension picks the container).
        make: writes the file at the path it is given.
        codec: FFmpeg's codec name.
        bit_depth: bits per sample (8, 10).
        chroma: chroma format, "420", "422" or "444".
        nvdec_fallback: "" when NVDEC on Hopper (H100/H200) decodes the stream;
            otherwise text that the CPU-fallback reason must contain.
        variable_frame_rate: frame durations differ (header rate is not the truth).
        rotation: display-matrix rotation in degrees, None without one.
        video_stream_index: absolute index of the video stream.
        open_gop: keyframes that are not IDR / IRAP with parameter sets.
        has_discard_packets: holds discard-flagged packets (edit list).
    """

    name: str
    make: Callable[[Path], None]
    codec: str
    bit_depth: int = 8
    chroma: str = "420"
    nvdec_fallback: str = ""
    variable_frame_rate: bool = False
    rotation: float | None = None
    video_stream_index: int = 0
    open_gop: bool = False
    has_discard_packets: bool = False

    @property
    def ten_bit(self) -> bool:
        return self.bit_depth > 8

    @property
    def nvdec_on_hopper(self) -> bool:
        return not self.nvdec_fallback

    @property
    def path(self) -> Path:
        target = cache_dir() / self.name
        if not target.exists():
            self.make(target)
        return target


# -- recipes ------------------------------------------------------------------


def _encode(spec: VideoSpec) -> Callable[[Path], None]:
    return lambda path: encode_video(path, spec)


def _remux(source: str, *, shift_frames: int = 0, zero_durations: bool = False) -> Callable[[Path], None]:
    """Copy another corpus file's packets into a new container, optionally
    moving every timestamp `shift_frames` frames earlier (the MP4 muxer then
    writes an edit list and the demuxer flags the packets before it discard)
    or dropping packet durations."""

    def make(path: Path) -> None:
        src_path = BY_NAME[source].path
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")  # per process: concurrent makers
        fmt = {".mkv": "matroska", ".webm": "webm", ".mov": "mov", ".mp4": "mp4", ".ts": "mpegts"}[path.suffix]
        with av.open(str(src_path)) as src, av.open(str(partial), "w", format=fmt) as dst:
            in_stream = src.streams.video[0]
            out_stream = dst.add_stream_from_template(in_stream)
            step = int(round(1 / (in_stream.average_rate * in_stream.time_base)))
            for packet in src.demux(in_stream):
                if not packet.size:
                    continue
                packet.pts -= shift_frames * step
                packet.dts -= shift_frames * step
                if zero_durations:
                    packet.duration = 0
                packet.stream = out_stream
                dst.mux(packet)
        os.replace(partial, path)

    return make


def _audio_first(path: Path) -> None:
    """AAC as stream 0, H.264 (B-frames) as stream 1, audio interleaved first."""
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")  # per process: concurrent makers
    spec = VideoSpec(num_frames=50, codec_options=x264_options(25))
    from framefeed.samples import synthetic_frames

    with av.open(str(partial), "w", format="mp4") as container:
        audio = container.add_stream("aac", rate=48000)
        audio.layout = "stereo"
        video = container.add_stream(spec.codec, rate=spec.fps, options=spec.codec_options)
        video.width, video.height, video.pix_fmt = spec.width, spec.height, spec.pix_fmt
        video.codec_context.time_base = Fraction(1, spec.fps)
        samples_per_frame = 48000 // spec.fps
        tone = (0.1 * np.sin(np.arange(samples_per_frame * spec.num_frames) * 0.05)).astype(np.float32)
        for i, rgb in enumerate(synthetic_frames(spec.width, spec.height, spec.num_frames)):
            chunk = np.stack([tone[i * samples_per_frame : (i + 1) * samples_per_frame]] * 2)
            audio_frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            audio_frame.sample_rate, audio_frame.pts = 48000, i * samples_per_frame
            for packet in audio.encode(audio_frame):
                container.mux(packet)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
    os.replace(partial, path)


def _interlaced_x264(gop: int) -> dict[str, str]:
    """libx264 coding interlaced (MBAFF, top field first) pictures."""
    options = x264_options(gop, 2)
    return {**options, "x264-params": options["x264-params"] + ":interlaced=1:tff=1", "flags": "+ildct+ilme"}


# Irregular frame durations in milliseconds: a true variable frame rate.
_VFR_DURATIONS_MS = [40, 20, 60, 33, 100, 17, 50, 40]
_VFR_PTS = np.concatenate(([0], np.cumsum([_VFR_DURATIONS_MS[i % 8] for i in range(89)]))).tolist()

FILES: list[CorpusFile] = [
    CorpusFile("h264_bframes_long_gop.mp4",
               _encode(VideoSpec(num_frames=200, codec_options=x264_options(100))), "h264"),
    CorpusFile("h264_open_gop.mp4",
               _encode(VideoSpec(num_frames=120, codec_options=x264_options(30, open_gop=True))), "h264",
               open_gop=True),
    CorpusFile("hevc_cra.mp4",
               _encode(VideoSpec(codec="libx265", num_frames=90, codec_options=x265_options(30))), "hevc",
               open_gop=True),
    CorpusFile("vp9.webm",
               _encode(VideoSpec(codec="libvpx-vp9", num_frames=60, codec_options={"deadline": "realtime", "cpu-used": "8", "g": "30"})),
               "vp9"),
    CorpusFile("av1.mkv",
               _encode(VideoSpec(codec="libsvtav1", num_frames=60, codec_options={"preset": "12", "g": "30"})), "av1",
               nvdec_fallback="no AV1 decoder"),
    CorpusFile("vfr.mp4",
               _encode(VideoSpec(num_frames=90, time_base=Fraction(1, 1000), timestamps=_VFR_PTS,
                                 codec_options=x264_options(30))), "h264", variable_frame_rate=True),
    CorpusFile("vfr.mkv", _remux("vfr.mp4"), "h264", variable_frame_rate=True),
    CorpusFile("no_durations.webm", _remux("vp9.webm", zero_durations=True), "vp9"),
    CorpusFile("rotated_90.mp4",
               _encode(VideoSpec(num_frames=30, rotation_degrees=90, codec_options=x264_options(15))), "h264",
               rotation=90.0),
    CorpusFile("rotated_270.mov",
               _encode(VideoSpec(num_frames=30, rotation_degrees=270, codec_options=x264_options(15))), "h264",
               rotation=-90.0),
    CorpusFile("odd_321x241.webm",
               _encode(VideoSpec(codec="libvpx-vp9", width=321, height=241, num_frames=30,
                                 codec_options={"deadline": "realtime", "cpu-used": "8"})), "vp9",
               nvdec_fallback="odd frame size 321x241"),
    CorpusFile("odd_321x241_444.mkv",
               _encode(VideoSpec(width=321, height=241, num_frames=30, pix_fmt="yuv444p",
                                 codec_options=x264_options(15))), "h264", chroma="444",
               nvdec_fallback="odd frame size 321x241"),
    CorpusFile("h264_10bit.mp4",
               _encode(VideoSpec(num_frames=40, pix_fmt="yuv420p10le", codec_options=x264_options(20))), "h264",
               bit_depth=10, nvdec_fallback="NVDEC decodes only 8-bit 4:2:0 H.264"),
    CorpusFile("hevc_10bit.mkv",
               _encode(VideoSpec(codec="libx265", num_frames=40, pix_fmt="yuv420p10le",
                                 codec_options=x265_options(20))), "hevc", bit_depth=10,
               open_gop=True),
    CorpusFile("audio_first.mp4", _audio_first, "h264", video_stream_index=1),
    CorpusFile("h264_bframes.mkv", _remux("h264_bframes_long_gop.mp4"), "h264"),
    CorpusFile("h264_bframes.mov", _remux("h264_bframes_long_gop.mp4"), "h264"),
    # MPEG-TS: no index (seeks bisect the file), a non-zero start time.
    CorpusFile("h264_bframes.ts", _remux("h264_bframes_long_gop.mp4"), "h264"),
    CorpusFile("discard_edit_list.mp4", _remux("h264_open_gop.mp4", shift_frames=10), "h264",
               open_gop=True, has_discard_packets=True),
    CorpusFile("full_range_bt709.mp4",
               _encode(VideoSpec(num_frames=20, pix_fmt="yuvj420p", colorspace=1, color_range=2,
                                 codec_options=x264_options(10))), "h264"),
    CorpusFile("limited_bt709.mkv",
               _encode(VideoSpec(num_frames=20, colorspace=1, color_range=1, codec_options=x264_options(10))),
               "h264"),
    # What only NVDEC routing needs: formats it refuses or takes that the files
    # above lack. Small (HEVC's NVDEC minimum is 144x144), few frames.
    CorpusFile("h264_422.mp4",
               _encode(VideoSpec(width=128, height=96, num_frames=12, pix_fmt="yuv422p",
                                 codec_options=x264_options(12, 2))), "h264", chroma="422",
               nvdec_fallback="chroma subsampling"),
    CorpusFile("h264_interlaced.mp4",
               _encode(VideoSpec(width=128, height=96, num_frames=12, codec_options=_interlaced_x264(12))),
               "h264", nvdec_fallback="interlaced"),
    CorpusFile("hevc_444.mp4",
               _encode(VideoSpec(codec="libx265", width=192, height=160, num_frames=24, pix_fmt="yuv444p",
                                 codec_options=x265_options(12, 2))), "hevc", chroma="444", open_gop=True),
    CorpusFile("hevc_444_10bit.mp4",
               _encode(VideoSpec(codec="libx265", width=192, height=160, num_frames=12, pix_fmt="yuv444p10le",
                                 codec_options=x265_options(12, 2))), "hevc", bit_depth=10, chroma="444",
               open_gop=True),
    CorpusFile("hevc_below_minimum.mp4",
               _encode(VideoSpec(codec="libx265", width=96, height=64, num_frames=6,
                                 codec_options=x265_options(12, 2))), "hevc", nvdec_fallback="below", open_gop=True),
    CorpusFile("vp8.webm",
               _encode(VideoSpec(codec="libvpx", width=128, height=96, num_frames=24,
                                 codec_options={"deadline": "realtime", "cpu-used": "8", "g": "12"})), "vp8"),
    CorpusFile("mpeg2.ts",
               _encode(VideoSpec(codec="mpeg2video", width=128, height=96, num_frames=24, codec_options={"g": "12"})),
               "mpeg2video"),
    CorpusFile("mpeg4_part2.mp4", _encode(VideoSpec(codec="mpeg4", width=128, height=96, num_frames=12)), "mpeg4",
               nvdec_fallback="no NVDEC path"),
]
BY_NAME = {f.name: f for f in FILES}


# -- ground truth ----------------------------------------------------------------


@dataclass
class ReferenceFrame:
    pts: int
    seconds: float  # PyAV's frame.time: the exact rational pts * time_base, rounded once
    rgb: np.ndarray  # (H, W, 3) uint8, rotated for display
    yuv_planes: tuple[np.ndarray, ...] | None  # 10-bit files: the decoder's full-depth planes


@functools.lru_cache(maxsize=None)
def reference_frames(name: str) -> list[ReferenceFrame]:
    """Every frame of corpus file `name`, by PyAV's sequential decode."""
    entry = BY_NAME[name]
    frames = []
    with av.open(str(entry.path)) as container:
        stream = container.streams[entry.video_stream_index]
        for frame in container.decode(stream):
            rgb = _whole_frame(frame).to_ndarray(format="rgb24", interpolation="BICUBIC")
            turns = round((frame.rotation or 0) / 90) % 4
            if turns:
                rgb = np.ascontiguousarray(np.rot90(rgb, turns))
            planes = None
            if entry.ten_bit:
                planes = tuple(
                    np.frombuffer(p, np.uint16).reshape(p.height, p.line_size // 2)[:, : p.width].copy()
                    for p in frame.planes
                )
            frames.append(ReferenceFrame(frame.pts, frame.time, rgb, planes))
    return frames


def _whole_frame(frame: av.VideoFrame) -> av.VideoFrame:
    """`frame`, flagged progressive. PyAV 18 converts frames flagged interlaced
    field by field (swscale's frame API); FFmpeg's CLI, torchcodec and
    framefeed convert the whole picture, which the reference follows."""
    if not frame.interlaced_frame:
        return frame
    copy = av.VideoFrame(frame.width, frame.height, frame.format.name)
    for source, target in zip(frame.planes, copy.planes, strict=True):
        rows = np.frombuffer(target, np.uint8).reshape(-1, target.line_size)
        width = min(source.line_size, target.line_size)
        rows[:, :width] = np.frombuffer(source, np.uint8).reshape(-1, source.line_size)[: rows.shape[0], :width]
    copy.colorspace, copy.color_range = frame.colorspace, frame.color_range
    return copy
