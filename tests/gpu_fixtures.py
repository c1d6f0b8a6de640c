"""Small videos for the NVDEC backend's tests, generated with PyAV's encoders.

Each file is made once per pytest session under the session's base temp
directory (`build_corpus`), never committed. `GPU_CORPUS` also says how each
file must be routed on a Hopper GPU (H100/H200): decoded by NVDEC, or sent
to the CPU with a reason containing `reason_part`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np


def picture(index: int, width: int, height: int) -> np.ndarray:
    """A moving RGB test picture: smooth gradients plus sharp edges (so
    chroma siting and motion both show), compressible enough to stay small."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    red = 128 + 100 * np.sin((xx + 3 * index) / 9.0)
    green = 128 + 100 * np.cos((yy - 2 * index) / 7.0)
    blue = np.where(((xx + index) // 16 + yy // 16) % 2 == 0, 40.0, 215.0)
    return np.clip(np.stack([red, green, blue], axis=-1), 0, 255).astype(np.uint8)


def encode(path: Path, codec: str, width: int, height: int, frames: int, *, pix_fmt: str = "yuv420p",
           options: dict[str, str] | None = None, container_format: str | None = None, rate: int = 25,
           colour: dict[str, int] | None = None, first_pts: int = 0) -> None:
    """Encode `frames` test pictures. `first_pts < 0` makes the MP4 muxer write
    an edit list whose leading packets FFmpeg then flags as discard."""
    container = av.open(str(path), "w", format=container_format)
    try:
        stream = container.add_stream(codec, rate=rate, options=options or {})
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        for name, value in (colour or {}).items():
            setattr(stream.codec_context, name, value)
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(picture(index, width, height), format="rgb24")
            if first_pts:
                frame.pts, frame.time_base = index + first_pts, Fraction(1, rate)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()


def _x264(**extra: str) -> dict[str, str]:
    params = ":".join(f"{k}={v}" for k, v in {"keyint": "12", "min-keyint": "12", "scenecut": "0",
                                               "bframes": "2", **extra}.items())
    return {"x264-params": params}


def _x265(**extra: str) -> dict[str, str]:
    params = ":".join(f"{k}={v}" for k, v in {"keyint": "12", "min-keyint": "12", "scenecut": "0",
                                               "bframes": "2", "log-level": "error", **extra}.items())
    return {"x265-params": params}


@dataclass(frozen=True)
class CorpusFile:
    """One generated file and its expected routing on Hopper.

    Attributes:
        name: file name (the extension picks the container).
        make: writes the file.
        nvdec_on_hopper: NVDEC decodes it on H100/H200.
        reason_part: text the CPU-fallback reason must contain otherwise.
        ten_bit: 10-bit samples (their CUDA-vs-CPU differences are printed).
        open_gop: keyframes that are not IDR/IRAP-with-parameter-sets.
        has_discard: holds discard-flagged packets (edit list).
        caps: (codec, chroma, depth) for the fake `GetDecoderCaps`.
    """

    name: str
    make: Callable[[Path], None]
    nvdec_on_hopper: bool
    reason_part: str = ""
    ten_bit: bool = False
    open_gop: bool = False
    has_discard: bool = False
    tags: tuple[str, ...] = field(default_factory=tuple)


GPU_CORPUS: tuple[CorpusFile, ...] = (
    CorpusFile("h264_closed_gop.mp4", lambda p: encode(p, "libx264", 128, 96, 36, options=_x264()), True),
    CorpusFile("h264_open_gop.mp4",
               lambda p: encode(p, "libx264", 128, 96, 36, options=_x264(**{"open-gop": "1"})), True,
               open_gop=True),
    CorpusFile("h264_edit_list.mp4",
               lambda p: encode(p, "libx264", 96, 64, 30, options=_x264(), first_pts=-3), True,
               has_discard=True),
    CorpusFile("h264_annexb.ts",
               lambda p: encode(p, "libx264", 128, 96, 30, options=_x264(), container_format="mpegts"), True),
    CorpusFile("h264_matroska.mkv",
               lambda p: encode(p, "libx264", 160, 96, 30, options=_x264(), container_format="matroska"), True),
    CorpusFile("h264_full_range_bt709.mp4",
               lambda p: encode(p, "libx264", 128, 96, 24, options=_x264(),
                                colour={"color_range": 2, "colorspace": 1, "color_primaries": 1, "color_trc": 1}),
               True),
    CorpusFile("h264_high10.mp4",
               lambda p: encode(p, "libx264", 128, 96, 12, pix_fmt="yuv420p10le", options=_x264()), False,
               "8-bit 4:2:0 H.264", ten_bit=True),
    CorpusFile("h264_422.mp4",
               lambda p: encode(p, "libx264", 128, 96, 12, pix_fmt="yuv422p", options=_x264()), False,
               "chroma subsampling"),
    CorpusFile("h264_interlaced.mp4",
               lambda p: encode(p, "libx264", 128, 96, 12, options={**_x264(interlaced="1", tff="1"),
                                                                  "flags": "+ildct+ilme"}),
               False, "interlaced"),
    # NVDEC's minimum picture is 144x144 for HEVC and 128x128 for VP9 and AV1.
    CorpusFile("hevc_cra.mp4", lambda p: encode(p, "libx265", 192, 160, 36, options=_x265()), True, open_gop=True),
    CorpusFile("hevc_main10.mp4",
               lambda p: encode(p, "libx265", 192, 160, 24, pix_fmt="yuv420p10le", options=_x265()), True,
               ten_bit=True, open_gop=True),
    CorpusFile("hevc_444.mp4",
               lambda p: encode(p, "libx265", 192, 160, 24, pix_fmt="yuv444p", options=_x265()), True,
               open_gop=True),
    CorpusFile("hevc_444_10bit.mp4",
               lambda p: encode(p, "libx265", 192, 160, 12, pix_fmt="yuv444p10le", options=_x265()), True,
               ten_bit=True, open_gop=True),
    CorpusFile("hevc_below_minimum.mp4", lambda p: encode(p, "libx265", 96, 64, 6, options=_x265()), False,
               "below"),
    CorpusFile("vp9.webm", lambda p: encode(p, "libvpx-vp9", 160, 128, 30, options={"g": "12"}), True),
    CorpusFile("vp9_odd_size.webm", lambda p: encode(p, "libvpx-vp9", 127, 95, 12), False, "odd frame size"),
    CorpusFile("vp8.webm", lambda p: encode(p, "libvpx", 128, 96, 24, options={"g": "12"}), True),
    CorpusFile("av1.mkv",
               lambda p: encode(p, "libsvtav1", 160, 128, 12, container_format="matroska",
                                options={"preset": "12", "svtav1-params": "keyint=12"}),
               False, "no AV1 decoder"),
    CorpusFile("mpeg2.ts",
               lambda p: encode(p, "mpeg2video", 128, 96, 24, container_format="mpegts", options={"g": "12"}),
               True),
    CorpusFile("mpeg4_part2.mp4", lambda p: encode(p, "mpeg4", 128, 96, 12), False, "no NVDEC path"),
)

CORPUS_BY_NAME = {entry.name: entry for entry in GPU_CORPUS}

_built: dict[Path, dict[str, Path]] = {}
_build_lock = threading.Lock()


def build_corpus(tmp_path_factory: Any) -> dict[str, Path]:
    """Every corpus file, generated once per session; name -> path."""
    root = Path(tmp_path_factory.getbasetemp()) / "gpu-corpus"
    with _build_lock:
        if root not in _built:
            root.mkdir(parents=True, exist_ok=True)
            paths = {}
            for entry in GPU_CORPUS:
                path = root / entry.name
                if not path.exists():
                    entry.make(path)
                paths[entry.name] = path
            _built[root] = paths
        return _built[root]


def demuxed_packets(path: Path) -> list[Any]:
    """Every non-empty packet of the first video stream (an independent demux)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [packet for packet in container.demux(stream) if packet.size]


def decode_all_rgb(path: Path) -> tuple[list[np.ndarray], list[int]]:
    """PyAV's plain sequential decode: swscale rgb24 (bicubic) pictures and pts."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pictures, stamps = [], []
        for frame in container.decode(stream):
            pictures.append(frame.to_ndarray(format="rgb24", interpolation="BICUBIC"))
            stamps.append(frame.pts)
    return pictures, stamps


# -- a CPU stand-in for PyNvVideoCodec's low-level decoder ---------------------


class FakePacketData:
    """PyNvVideoCodec's `PacketData` fields; unknown attributes raise, as
    they do on the pybind11 class."""

    __slots__ = ("bsl_data", "bsl", "pts", "dts", "key", "discardable", "decode_flag")

    def __init__(self) -> None:
        self.bsl_data, self.bsl, self.pts, self.dts, self.key = 0, 0, 0, 0, 0
        self.discardable, self.decode_flag = False, 0


class FakePicture:
    """A decoded picture in "decoder memory": its planes are overwritten
    (filled with a poison value) by the next `Decode()`, as NVDEC's are."""

    def __init__(self, pts: int, planes: tuple[Any, Any, Any]) -> None:
        self._pts = pts
        self.planes = planes

    def getPTS(self) -> int:  # noqa: N802 - PyNvVideoCodec's name
        return self._pts


class EmulatedNvdec:
    """Decodes what the backend feeds it with FFmpeg's decoder opened
    *without* the stream's extradata, so it can only use what the packets
    themselves carry (start codes, in-band parameter sets), like NVDEC's
    parser. Records every packet it receives in `log` as
    `(bytes, pts, key, discardable)`, end-of-stream packets as `None`."""

    POISON = 77

    def __init__(self, codec_name: str) -> None:
        import torch

        self._torch = torch
        self._codec_name = codec_name
        self._context = av.CodecContext.create(codec_name, "r")
        self.log: list[tuple[bytes, int, int, bool] | None] = []
        self._outstanding: list[FakePicture] = []

    def Decode(self, packet: FakePacketData) -> list[FakePicture]:  # noqa: N802 - PyNvVideoCodec's name
        import ctypes

        for old in self._outstanding:  # the next Decode() overwrites earlier pictures
            for plane in old.planes:
                plane.fill_(self.POISON)
        self._outstanding = []
        if packet.bsl == 0:
            self.log.append(None)
            frames = self._context.decode(None)
            self._context.flush_buffers()  # usable again after end of stream, as NVDEC is
        else:
            data = ctypes.string_at(packet.bsl_data, packet.bsl)
            self.log.append((data, packet.pts, packet.key, packet.discardable))
            av_packet = av.Packet(data)
            av_packet.pts = packet.pts
            try:
                frames = self._context.decode(av_packet)
            except av.error.InvalidDataError:
                frames = []  # NVDEC's parser skips what it cannot parse
        pictures = [FakePicture(frame.pts, self._planes(frame)) for frame in frames]
        self._outstanding = pictures
        return pictures

    def _planes(self, frame: Any) -> tuple[Any, Any, Any]:
        torch = self._torch
        wide = frame.format.components[0].bits > 8
        dtype = np.uint16 if wide else np.uint8
        planes = []
        for index, plane in enumerate(frame.planes[:3]):
            width = frame.width if index == 0 else frame.format.chroma_width(frame.width)
            height = frame.height if index == 0 else frame.format.chroma_height(frame.height)
            rows = np.frombuffer(plane, dtype=dtype).reshape(-1, plane.line_size // np.dtype(dtype).itemsize)
            planes.append(torch.from_numpy(rows[:height, :width].astype(np.int32)))
        return tuple(planes)


class FakePyNvVideoCodec:
    """The slice of PyNvVideoCodec's module API framefeed uses, decoding with
    `EmulatedNvdec`. Keyword names are checked against the real signatures
    (read from PyNvVideoCodec 2.2.4's bindings): a misspelt keyword raises
    TypeError, as pybind11 would. `table` maps (codec, chroma, depth) to
    `GetDecoderCaps` answers; missing entries are unsupported."""

    class cudaVideoCodec:  # noqa: N801 - PyNvVideoCodec's name
        H264, HEVC, VP8, VP9, AV1, MPEG1, MPEG2 = "H264", "HEVC", "VP8", "VP9", "AV1", "MPEG1", "MPEG2"

    cudaVideoChromaFormat = type("cudaVideoChromaFormat", (), {"420": "420", "422": "422", "444": "444"})
    OutputColorType = type("OutputColorType", (), {"NATIVE": "NATIVE", "RGB": "RGB", "RGBP": "RGBP"})
    PacketData = FakePacketData
    FFMPEG_NAMES = {"H264": "h264", "HEVC": "hevc", "VP8": "vp8", "VP9": "vp9", "AV1": "av1",
                    "MPEG1": "mpeg1video", "MPEG2": "mpeg2video"}
    _CREATE_KEYWORDS = {"gpuid", "codec", "cudacontext", "cudastream", "usedevicememory", "maxwidth", "maxheight",
                        "outputColorType", "enableSEIMessage", "bWaitForSessionWarmUp", "latency",
                        "enableDecodeStats"}
    UNSUPPORTED = {"supported": 0, "num_decoder_engines": 7}

    def __init__(self, table: dict) -> None:
        self.table = table
        self.created: list[dict] = []
        self.caps_queries: list[tuple] = []

    def CreateDecoder(self, **kwargs):  # noqa: N802
        unknown = set(kwargs) - self._CREATE_KEYWORDS
        if unknown:
            raise TypeError(f"CreateDecoder() got unexpected keywords {unknown}")
        self.created.append(kwargs)
        return EmulatedNvdec(self.FFMPEG_NAMES[kwargs["codec"]])

    def GetDecoderCaps(self, *, gpuid, codec, chromaformat, bitdepth):  # noqa: N802
        self.caps_queries.append((gpuid, codec, chromaformat, bitdepth))
        return self.table.get((self.FFMPEG_NAMES[codec], chromaformat, bitdepth), self.UNSUPPORTED)


def caps(width_min, height_min, width_max, height_max, mb_num_max, supported=1):
    return {"supported": supported, "num_decoder_engines": 7, "width_min": width_min, "height_min": height_min,
            "width_max": width_max, "height_max": height_max, "mb_num_max": mb_num_max}


# NVDEC limits per codec, chroma format and bit depth on Hopper (H100/H200),
# after NVIDIA's NVDEC application note; what is absent is unsupported.
HOPPER_CAPS = {
    ("h264", "420", 8): caps(48, 16, 4096, 4096, 65536),
    **{("hevc", chroma, depth): caps(144, 144, 8192, 8192, 262144)
       for chroma in ("420", "444") for depth in (8, 10, 12)},
    **{("vp9", "420", depth): caps(128, 128, 8192, 8192, 262144) for depth in (8, 10, 12)},
    ("vp8", "420", 8): caps(48, 16, 4096, 4096, 65536),
    ("mpeg1video", "420", 8): caps(48, 16, 4080, 4080, 65280),
    ("mpeg2video", "420", 8): caps(48, 16, 4080, 4080, 65280),
}


def emulated_runtime(table: dict | None = None, *, compute_capability=(9, 0), device_name="NVIDIA H200"):
    """An `NvdecRuntime` for a CPU-only machine: an 'H200' whose PyNvVideoCodec
    is `FakePyNvVideoCodec`, whose decoders are `EmulatedNvdec` and whose
    colour conversion is the torch reference, output on the CPU. Hand it to
    `NvdecDecoders(0, runtime=...)`: no module global is patched."""
    import torch

    from framefeed.gpu_decode import NvdecRuntime
    from framefeed.gpu_decode.decoder_cache import PooledDecoder

    nvc = FakePyNvVideoCodec(HOPPER_CAPS if table is None else table)

    def create_decoder(key):
        decoder = nvc.CreateDecoder(gpuid=key.device_index, codec=getattr(nvc.cudaVideoCodec, _NVC_NAMES[key.codec]),
                                    cudacontext=777, cudastream=4242, usedevicememory=True,
                                    outputColorType=nvc.OutputColorType.NATIVE)
        return PooledDecoder(key, decoder, None)

    return NvdecRuntime(
        nvc=nvc,
        device_facts=lambda index: (compute_capability, device_name),
        create_decoder=create_decoder,
        retire=None,
        make_converter=lambda index, stream, fmt, traits, turns: ReferenceConverter(traits.colour, turns),
        prepare_kernel=lambda index, sample_bytes: None,
        output_device=lambda index: torch.device("cpu"),
    )


_NVC_NAMES = {ffmpeg: nvc for nvc, ffmpeg in FakePyNvVideoCodec.FFMPEG_NAMES.items()}


def emulated_nvdec_decoders(table: dict | None = None, **kwargs):
    """A fresh `NvdecDecoders` owner on `emulated_runtime`."""
    from framefeed.gpu_decode import NvdecDecoders

    return NvdecDecoders(0, runtime=emulated_runtime(table, **kwargs))


class ReferenceConverter:
    """The `SurfaceConverter` role on the CPU: the torch reference conversion."""

    def __init__(self, spec: Any, quarter_turns: int) -> None:
        self._spec = spec
        self._turns = quarter_turns % 4

    def view(self, picture: FakePicture) -> tuple[Any, Any, Any]:
        return picture.planes

    def own(self, planes: tuple[Any, Any, Any]) -> tuple[Any, Any, Any]:
        return tuple(plane.clone() for plane in planes)

    def write(self, planes: tuple[Any, Any, Any], dst: Any) -> None:
        import torch

        from framefeed.gpu_decode.colour import reference_rgb

        rgb = reference_rgb(*planes, self._spec)
        dst.copy_(torch.rot90(rgb, self._turns, dims=(0, 1)))
