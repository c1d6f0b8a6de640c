"""An emulated NVDEC for CPU-only machines: `EmulatedNvdec` (FFmpeg's decoder
opened without extradata, as NVDEC's parser sees packets), a stand-in for
PyNvVideoCodec's module API with Hopper's `GetDecoderCaps` table
(`FakePyNvVideoCodec`, `HOPPER_CAPS`), and `emulated_runtime` /
`emulated_nvdec_decoders`, which hand framefeed's real NVDEC backend these
pieces with the torch reference colour conversion. The videos are the one
test corpus, `corpus.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import numpy as np

from framefeed.engine.packets import padded_packet


def demuxed_packets(path: Path) -> list[Any]:
    """Every non-empty packet of the first video stream (an independent demux)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [packet for packet in container.demux(stream) if packet.size]


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
            av_packet = padded_packet(data)  # as framefeed's own packet sources do
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
    colour conversion (with any transforms) is the torch reference of the
    fused kernel, output on the CPU. Hand it to
    `NvdecDecoders(0, runtime=...)`: no module global is patched."""
    import torch

    from framefeed.engine.backends.gpu_decode import NvdecRuntime
    from framefeed.engine.backends.gpu_decode.decoder_cache import PooledDecoder

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
        make_converter=lambda index, stream, fmt, traits, turns, transforms: ReferenceConverter(
            traits.colour, turns, transforms),
        prepare_kernel=lambda index, sample_bytes: None,
        output_device=lambda index: torch.device("cpu"),
    )


_NVC_NAMES = {ffmpeg: nvc for nvc, ffmpeg in FakePyNvVideoCodec.FFMPEG_NAMES.items()}


def emulated_nvdec_decoders(table: dict | None = None, **kwargs):
    """A fresh `NvdecDecoders` owner on `emulated_runtime`."""
    from framefeed.engine.backends.gpu_decode import NvdecDecoders

    return NvdecDecoders(0, runtime=emulated_runtime(table, **kwargs))


class ReferenceConverter:
    """The `SurfaceConverter` role on the CPU: the torch reference conversion,
    then (with `transforms`) the fused kernel's reference crop and resize."""

    def __init__(self, spec: Any, quarter_turns: int, transforms: Any = None) -> None:
        from framefeed.engine.backends.gpu_decode.resampling import resampling_for

        self._spec = spec
        self._turns = quarter_turns % 4
        self._resampling = resampling_for(transforms) if transforms else None

    def view(self, picture: FakePicture) -> tuple[Any, Any, Any]:
        return picture.planes

    def own(self, planes: tuple[Any, Any, Any]) -> tuple[Any, Any, Any]:
        return tuple(plane.clone() for plane in planes)

    def write(self, planes: tuple[Any, Any, Any], dst: Any) -> None:
        import torch

        from framefeed.engine.backends.gpu_decode.colour import reference_rgb, reference_rgb_float
        from framefeed.engine.backends.gpu_decode.resampling import reference_resampled

        convert = reference_rgb_float if dst.dtype == torch.float32 else reference_rgb
        rgb = torch.rot90(convert(*planes, self._spec), self._turns, dims=(0, 1))
        if self._resampling is not None:
            rgb = reference_resampled(rgb.contiguous(), self._resampling)
        dst.copy_(rgb)
