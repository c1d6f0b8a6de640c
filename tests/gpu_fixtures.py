"""An emulated NVDEC for CPU-only machines, faithful where framefeed's GPU
code depends on it, and a recording stand-in for the CUDA runtime.

What is modelled, and on what it rests. "Sources" are NVIDIA's PyNvVideoCodec
sources as mirrored in suzuca-ai/PyNvVideoCodec@12cae8be (2.0.2:
`src/PyNvVideoCodec/src/PyNvDecoder.cpp`, `utils/PyNvVideoCodecUtils.hpp`,
`src/VideoCodecSDKUtils/helper_classes/NvCodec/NvDecoder/NvDecoder.cpp`);
"the wheel" is PyNvVideoCodec 2.2.4's `PyNvVideoCodec_130.cpython-*.so`
(`pip download PyNvVideoCodec==2.2.4`), whose strings hold the same
keywords, fields and error messages:

- `FakePyNvVideoCodec.CreateDecoder` takes exactly the 2.2.4 keywords
  (gpuid, codec, cudacontext, cudastream, usedevicememory, maxwidth,
  maxheight, outputColorType, enableSEIMessage, bWaitForSessionWarmUp,
  latency, enableDecodeStats); `GetDecoderCaps` answers the dict the binding
  builds from `CUVIDDECODECAPS` (codec_id, chromaformat_id, bitdepth,
  supported, num_decoder_engines, width/height min/max, mb_num_max), and
  counts its calls (each creates a CUDA context in the binding).
- `FakePacketData` has the 2.2.4 fields (the wheel's `PacketData` repr and
  attribute names); unknown attributes raise, as on the pybind11 class.
- Pictures (`FakeDecodedFrame`) live in output buffers the decoder reuses
  across `Decode` calls (`m_vpFrame`: buffer i holds the i-th picture of a
  call, allocated at the size current when first needed) and are packed
  (`GenerateNativeOutput`: pitch = width x bytes per sample, chroma right
  after the luma rows). `cuda()` gives `CAIMemoryView`s whose
  `__cuda_array_interface__` is the binding's: version 3, shape lists
  (`[H, W, 1]`, NV12 chroma `[H/2, W/2, 2]`), strides in samples (so 16-bit
  pictures report `[W, 1, 1]`), typestr "|u1"/"|u2", data `(address,
  False)`, gpuIdx 0 and **stream 2** (`self->stream == 0 ? 0 : 2`), not the
  decoder's stream. The buffers are host memory here, so the tests' kernel
  stand-in reads exactly the addresses the GPU kernel would.
- Display delay and end-of-stream burst: the parser is created with
  `ulMaxDisplayDelay = 1` (NATIVE latency), so a picture comes out one
  `Decode` later than FFmpeg's decoder gives it; an empty packet (`bsl` 0)
  is `CUVID_PKT_ENDOFSTREAM` (`NvDecoder::Decode`) and returns every picture
  still held, in one call. The decoder stays usable afterwards.
- Reconfigure (`NvDecoder::HandleVideoSequence`, `ReconfigureDecoder`,
  `setReconfigParams`): the maximum size is `ALIGN(maxwidth, 32)` and at
  least the first coded size; a later coded size above it, a bit depth or a
  chroma format change throw *inside the parser callback* ("Reconfigure Not
  supported when width/height > maxwidth/maxheight", "... for bit depth
  change"), a C++ exception crossing the driver's C frames: the stand-in
  raises `ParserCallbackAbort`, a BaseException nothing in framefeed may
  catch, because on a GPU it can take the process down. A new coded size
  without a preceding `setReconfigParams` keeps the old display rectangle
  and target size, so pictures come out *scaled* to the old size; a new
  display size with the same coded size reuses output buffers sized for the
  old one (a device heap overflow on a GPU; `ParserCallbackAbort` here).
  `setReconfigParams(w, h)` above the maximum raises RuntimeError ("Resize
  dimensions must be lower than max width and height"), otherwise marks the
  next change as the application's and frees output buffers of another size.
- Exceptions: `PyNvVCException` and `PyNvVCExceptionUnsupported` (the
  wheel's module), raised by `CreateDecoder` and `GetDecoderCaps`.
- Every picture is written on the decoder's `cudastream` and every later
  `Decode` overwrites the buffers (here: filled with a poison value first),
  both recorded by the CUDA stand-in.

`RecordingCudaCalls` is `framefeed.engine.backends.gpu_decode.streams.CudaCalls`
on the host: streams, events and per-thread current streams as numbers, with
a happens-before record of every write and read of device memory (decoder
buffers, owned copies, output slots). It collects `violations` of the rules
framefeed's GPU code must keep: no kernel, copy or decode on a default
stream (0, 1, 2); no producer waiting on a default stream; no read of memory
before its write is ordered (same stream, an event wait, or a host wait); no
write (the next `Decode`) that may overtake an earlier read on another stream.
`assert_visible(tensor, stream)` checks a consumer's view of a result.

`emulated_runtime` hands framefeed's real NVDEC backend, converter, decoder
creation and reaper these pieces; `HostKernelLaunch` stands in for the CUDA
kernel launch (the torch reference conversion read from the same
addresses). The videos are the one test corpus, `corpus.py`.
"""

from __future__ import annotations

import ctypes
import itertools
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch

from framefeed.engine.packets import padded_packet

# The parser's display delay with NATIVE latency (NvDecoder.cpp: ulMaxDisplayDelay = bLowLatency ? 0 : 1).
DISPLAY_DELAY = 1
DEFAULT_STREAMS = (0, 1, 2)


def demuxed_packets(path: Path) -> list[Any]:
    """Every non-empty packet of the first video stream (an independent demux)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [packet for packet in container.demux(stream) if packet.size]


# -- the binding's exceptions ------------------------------------------------------------


class PyNvVCException(Exception):  # noqa: N818 - PyNvVideoCodec's name
    """PyNvVideoCodec's generic error (PYNVVC_THROW_ERROR)."""


class PyNvVCExceptionUnsupported(Exception):  # noqa: N818 - PyNvVideoCodec's name
    """PyNvVideoCodec's "not supported" error (PYNVVC_THROW_ERROR_UNSUPPORTED)."""


class ParserCallbackAbort(BaseException):
    """A C++ exception thrown inside NVDEC's parser callback: through the
    driver's C frames it is undefined behaviour and can abort the process.
    A BaseException so that no `except Exception` in framefeed hides it."""


# -- a recording stand-in for the CUDA runtime -------------------------------------------


@dataclass
class _Stream:
    handle: int
    seq: int = 0
    known: dict[int, int] = field(default_factory=dict)


@dataclass
class _Region:
    base: int
    size: int
    kind: str
    last_write: tuple[int, int] | None = None
    reads: list[tuple[int, int]] = field(default_factory=list)


class FakeTorchStream:
    """What `CudaCalls.current_stream` returns here: something with `cuda_stream`."""

    def __init__(self, handle: int) -> None:
        self.cuda_stream = handle

    def __repr__(self) -> str:
        return f"FakeTorchStream({self.cuda_stream})"


class RecordingCudaCalls:
    """`CudaCalls` on the host, recording ordering (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._streams: dict[int, _Stream] = {h: _Stream(h) for h in DEFAULT_STREAMS}
        self._events: dict[int, dict[int, int] | None] = {}
        self._event_origin: dict[int, int] = {}
        self._host: dict[int, int] = {}
        self._memory: dict[int, _Region] = {}  # decoder pictures and owned copies, while they live
        self._slots: dict[int, _Region] = {}  # output storage written by kernels, by base address
        self._handles = itertools.count(0x7000, 0x10)
        self._local = threading.local()
        self.violations: list[str] = []
        self.log: list[tuple] = []
        self.streams_created = 0
        self.streams_destroyed = 0
        self.events_created = 0

    # -- CudaCalls ------------------------------------------------------------------------

    def create_stream(self, device_index: int) -> int:
        with self._lock:
            handle = next(self._handles)
            self._streams[handle] = _Stream(handle)
            self.streams_created += 1
            self.log.append(("create_stream", handle))
            return handle

    def destroy_stream(self, device_index: int, handle: int) -> None:
        with self._lock:
            if self._streams.pop(handle, None) is None:
                self.violations.append(f"destroy of unknown stream {handle:#x}")
            self.streams_destroyed += 1
            self.log.append(("destroy_stream", handle))

    def create_event(self, device_index: int) -> int:
        with self._lock:
            handle = next(self._handles) + 1
            self._events[handle] = None
            self.events_created += 1
            return handle

    def destroy_event(self, device_index: int, handle: int) -> None:
        with self._lock:
            self._events.pop(handle, None)

    def record(self, device_index: int, event: int, stream: int) -> None:
        with self._lock:
            state = self._stream(stream)
            snapshot = dict(state.known)
            snapshot[stream] = state.seq
            self._events[event] = snapshot
            self._event_origin[event] = stream
            self.log.append(("record", event, stream))

    def wait(self, device_index: int, stream: int, event: int) -> None:
        with self._lock:
            snapshot = self._events.get(event)
            origin = self._event_origin.get(event)
            if stream not in DEFAULT_STREAMS and origin in DEFAULT_STREAMS:
                self.violations.append(f"stream {stream:#x} waits on the default stream {origin}")
            if snapshot is not None:
                self._merge(self._stream(stream).known, snapshot)
            self.log.append(("wait", stream, event))

    def synchronize(self, device_index: int, event: int) -> None:
        with self._lock:
            snapshot = self._events.get(event)
            if snapshot is not None:
                self._merge(self._host, snapshot)
            self.log.append(("synchronize", event, threading.current_thread().name))

    def current_stream(self, device_index: int) -> FakeTorchStream:
        stack = getattr(self._local, "stack", None)
        return FakeTorchStream(stack[-1] if stack else 0)

    def stream_scope(self, device_index: int, handle: int) -> Any:
        calls = self

        class Scope:
            def __enter__(self) -> None:
                stack = getattr(calls._local, "stack", None)
                if stack is None:
                    stack = calls._local.stack = []
                stack.append(handle)
                calls.log.append(("scope", handle, threading.current_thread().name))

            def __exit__(self, *exc: Any) -> None:
                calls._local.stack.pop()

        return Scope()

    def record_stream(self, tensor: torch.Tensor, stream: Any) -> None:
        with self._lock:
            self.log.append(("record_stream", tensor.data_ptr(), int(stream.cuda_stream)))

    def copy_bytes(self, device_index: int, address: int, size: int, stream: int) -> torch.Tensor:
        with self._lock:
            self._work(stream, "a copy")
            self.read(stream, address, size, "copying a picture")
            owned = torch.empty(size, dtype=torch.uint8)
            owned.numpy()[:] = host_bytes(address, size)
            self.register(owned.data_ptr(), size, "owned copy", owned)
            self.write(stream, owned.data_ptr(), size)
            return owned

    # -- device memory ----------------------------------------------------------------------

    def register(self, base: int, size: int, kind: str, owner: Any) -> None:
        """Device memory owned by `owner` (known until `owner` is collected)."""
        with self._lock:
            self._memory[base] = _Region(base, size, kind)
            weakref.finalize(owner, self._forget, base)

    def _forget(self, base: int) -> None:
        with self._lock:
            self._memory.pop(base, None)

    def region(self, address: int, size: int) -> _Region | None:
        with self._lock:
            for region in self._memory.values():
                if region.base <= address and address + size <= region.base + region.size:
                    return region
            return None

    def write(self, stream: int, address: int, size: int) -> None:
        with self._lock:
            self._work(stream, "a write")
            region = self.region(address, size)
            if region is None:  # an output slot's storage
                region = self._slots[address] = _Region(address, size, "output")
            state = self._stream(stream)
            for reader, seq in region.reads:
                if self._known(state, reader) < seq:
                    self.violations.append(f"a write on {stream:#x} to {region.kind} may overtake a read on "
                                           f"{reader:#x}")
            state.seq += 1
            region.last_write = (stream, state.seq)
            region.reads = []

    def read(self, stream: int, address: int, size: int, what: str) -> None:
        with self._lock:
            region = self.region(address, size)
            if region is None:
                self.violations.append(f"{what}: {size} bytes at {address:#x} are no known device memory")
                raise AssertionError(self.violations[-1])
            state = self._stream(stream)
            if region.last_write is not None:
                writer, seq = region.last_write
                if self._known(state, writer) < seq:
                    self.violations.append(f"{what}: read on {stream:#x} not ordered after the write on {writer:#x}")
            state.seq += 1
            region.reads.append((stream, state.seq))

    def assert_visible(self, tensor: torch.Tensor, stream: int | None = None) -> None:
        """The last write into `tensor`'s memory is ordered before work a
        consumer queues on `stream` (default: the thread's current stream)."""
        stream = self.current_stream(0).cuda_stream if stream is None else stream
        with self._lock:
            storage = tensor.untyped_storage()
            region = self._slots.get(storage.data_ptr()) or self.region(storage.data_ptr(), max(storage.nbytes(), 1))
            assert region is not None and region.last_write is not None, "nothing was written there"
            writer, seq = region.last_write
            known = self._known(self._stream(stream), writer)
            assert known >= seq, f"stream {stream:#x} does not wait for the write on {writer:#x}"

    # -- internals ------------------------------------------------------------------------

    def _stream(self, handle: int) -> _Stream:
        state = self._streams.get(handle)
        if state is None:
            self.violations.append(f"use of unknown or destroyed stream {handle:#x}")
            state = self._streams[handle] = _Stream(handle)
        return state

    def _known(self, state: _Stream, other: int) -> int:
        if state.handle == other:
            return state.seq
        return max(state.known.get(other, 0), self._host.get(other, 0))

    def _work(self, stream: int, what: str) -> None:
        if stream in DEFAULT_STREAMS:
            self.violations.append(f"{what} queued on the default stream {stream}")

    @staticmethod
    def _merge(into: dict[int, int], snapshot: dict[int, int]) -> None:
        for handle, seq in snapshot.items():
            if into.get(handle, 0) < seq:
                into[handle] = seq


def host_bytes(address: int, size: int) -> np.ndarray:
    """A uint8 numpy view of host memory (the stand-in's "device" memory)."""
    if size == 0:
        return np.empty(0, dtype=np.uint8)
    return np.ctypeslib.as_array((ctypes.c_uint8 * size).from_address(address))


# -- a CPU stand-in for PyNvVideoCodec's low-level decoder ---------------------------------


class FakePacketData:
    """PyNvVideoCodec 2.2.4's `PacketData` fields (the wheel's binding);
    unknown attributes raise, as they do on the pybind11 class."""

    __slots__ = ("key", "pts", "dts", "pos", "bsl", "bsl_data", "duration", "decode_flag", "stream_index",
                 "is_video", "discardable", "seek_pts", "bDiscontinuity")

    def __init__(self) -> None:
        self.key, self.pts, self.dts, self.pos, self.bsl, self.bsl_data, self.duration = 0, 0, 0, 0, 0, 0, 0
        self.decode_flag, self.stream_index, self.is_video, self.seek_pts = 0, 0, 1, 0
        self.discardable, self.bDiscontinuity = False, False


class CAIMemoryView:
    """The binding's per-plane view (`CAIMemoryView`)."""

    def __init__(self, shape: list[int], stride: list[int], typestr: str, data: int) -> None:
        self.shape, self.stride, self.typestr, self.data = shape, stride, typestr, data
        self.dataptr = data

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:  # noqa: PLW3201
        # As `CAIMemoryView.__cuda_array_interface__` in PyNvDecoder.cpp: the stream
        # field is 2 whenever the decoder has a stream, whichever stream it is.
        return {"version": 3, "shape": list(self.shape), "strides": list(self.stride), "typestr": self.typestr,
                "stream": 2, "data": (self.data, False), "gpuIdx": 0}


class FakeDecodedFrame:
    """A decoded picture in an output buffer of the decoder (`DecodedFrame`)."""

    def __init__(self, pts: int, surface_format: str, width: int, height: int, address: int, event: int,
                 buffer: np.ndarray) -> None:
        self.timestamp = pts
        self.format = surface_format
        self.decoder_stream_event = event
        self._views = _views(surface_format, width, height, address)
        self._buffer = buffer  # host memory stays valid in the stand-in (the binding does not promise it)

    def getPTS(self) -> int:  # noqa: N802 - PyNvVideoCodec's name
        return self.timestamp

    def cuda(self) -> list[CAIMemoryView]:
        return list(self._views)

    def GetPtrToPlane(self, index: int) -> int:  # noqa: N802 - PyNvVideoCodec's name
        return self._views[index].data


def _views(surface_format: str, w: int, h: int, data: int) -> list[CAIMemoryView]:
    """`GetCAIMemoryViewAndDLPack`'s views (PyNvVideoCodecUtils.hpp), byte offsets and all."""
    if surface_format == "NV12":
        return [CAIMemoryView([h, w, 1], [w, 1, 1], "|u1", data),
                CAIMemoryView([h // 2, w // 2, 2], [w // 2 * 2, 2, 1], "|u1", data + w * h)]
    if surface_format == "P016":
        return [CAIMemoryView([h, w, 1], [w, 1, 1], "|u2", data),
                CAIMemoryView([h // 2, w // 2, 2], [w // 2 * 2, 2, 1], "|u2", data + 2 * w * h)]
    if surface_format == "YUV444":
        return [CAIMemoryView([h, w, 1], [w, 1, 1], "|u1", data + k * w * h) for k in range(3)]
    # YUV444_16Bit: the sources offset the chroma views by w*h elements, not bytes
    return [CAIMemoryView([h, w, 1], [w, 1, 1], "|u2", data + k * w * h) for k in range(3)]


def _surface_format(frame: av.VideoFrame) -> tuple[str, int, bool]:
    """(NVDEC native format, bit depth, 4:2:0) of a decoded frame (NvDecoder:
    4:2:0 -> NV12/P016, 4:4:4 -> YUV444/YUV444_16Bit)."""
    bits = frame.format.components[0].bits
    four_two_zero = frame.format.chroma_width(16) == 8 and frame.format.chroma_height(16) == 8
    if four_two_zero:
        return ("P016" if bits > 8 else "NV12"), bits, True
    return ("YUV444_16Bit" if bits > 8 else "YUV444"), bits, False


def _native_bytes(frame: av.VideoFrame, out_size: tuple[int, int], scale_from: tuple[int, int] | None) -> np.ndarray:
    """The packed native surface NVDEC would copy out for `frame`, `out_size`
    = (width, height). With `scale_from` (the coded size), the picture is
    first padded to it and scaled to `out_size` as a reconfigure that kept
    the old target size does."""
    surface_format, bits, four_two_zero = _surface_format(frame)
    wide = bits > 8
    dtype = np.uint16 if wide else np.uint8
    planes = []
    for index, plane in enumerate(frame.planes[:3]):
        pw = frame.width if index == 0 else frame.format.chroma_width(frame.width)
        ph = frame.height if index == 0 else frame.format.chroma_height(frame.height)
        rows = np.frombuffer(plane, dtype=dtype).reshape(-1, plane.line_size // np.dtype(dtype).itemsize)
        planes.append(rows[:ph, :pw])
    out_w, out_h = out_size
    if scale_from is not None or (out_w, out_h) != (frame.width, frame.height):
        coded_w, coded_h = scale_from or (frame.width, frame.height)
        scaled = []
        for index, plane in enumerate(planes):
            sub_x = 2 if (index and four_two_zero) else 1
            padded = np.pad(plane, ((0, max(-(-coded_h // sub_x) - plane.shape[0], 0)),
                                    (0, max(-(-coded_w // sub_x) - plane.shape[1], 0))), mode="edge")
            target_h, target_w = -(-out_h // sub_x), -(-out_w // sub_x)
            rows = (np.arange(target_h) * padded.shape[0]) // target_h
            cols = (np.arange(target_w) * padded.shape[1]) // target_w
            scaled.append(padded[rows][:, cols])
        planes = scaled
    shift = 16 - bits if wide else 0
    luma = planes[0].astype(dtype) << shift
    if four_two_zero:
        chroma = np.stack([planes[1], planes[2]], axis=-1).reshape(planes[1].shape[0], -1).astype(dtype) << shift
        surface = np.concatenate([luma, chroma[:, :out_w]], axis=0)
    else:
        surface = np.concatenate([luma] + [p.astype(dtype) << shift for p in planes[1:]], axis=0)
    return np.ascontiguousarray(surface).view(np.uint8).reshape(-1)


class EmulatedNvdec:
    """PyNvVideoCodec's low-level decoder (`PyNvDecoder`) on the CPU: FFmpeg's
    decoder opened *without* the stream's extradata, so it can only use what
    the packets carry (start codes, in-band parameter sets), like NVDEC's
    parser; with NVDEC's display delay, end-of-stream burst, output buffers
    and reconfigure rules (module docstring). Records every packet it
    receives in `log` as `(bytes, pts, key, discardable)`, end-of-stream
    packets as `None`; `reconfigured` lists `setReconfigParams` calls.
    `fail_at`: the data packet (counted from 1) at which `Decode` raises
    `PyNvVCException`, as a failing `cuvidParseVideoData` does."""

    POISON = 77

    def __init__(self, codec_name: str, *, calls: RecordingCudaCalls | None = None, stream: int = 0x6000,
                 max_width: int = 0, max_height: int = 0, caps: Any = None) -> None:
        self._codec_name = codec_name
        self._context = av.CodecContext.create(codec_name, "r")
        self._calls = calls
        self._stream = stream
        self._caps = caps  # (chroma, depth) -> GetDecoderCaps answer, or None
        self.log: list[tuple[bytes, int, int, bool] | None] = []
        self.reconfigured: list[tuple[int, int]] = []
        self._max = (-(-max_width // 32) * 32, -(-max_height // 32) * 32)  # NvDecoder: ALIGN(max, 32)
        self._configured = False
        self._coded: tuple[int, int] = (0, 0)
        self._display: tuple[int, int] = (0, 0)
        self._out: tuple[int, int] = (0, 0)
        self._target: tuple[int, int] = (0, 0)  # the decoder's target (surface) size
        self._scale_from: tuple[int, int] | None = None
        self._format: tuple[int, bool] | None = None
        self._resize = (0, 0)
        self._external = False
        self._held: list[tuple[int, bytes, str, tuple[int, int]]] = []
        self._buffers: list[np.ndarray] = []
        self._events: list[int] = []
        self.fail_at: int | None = None
        self._packets = 0

    # -- the binding's calls ----------------------------------------------------------------

    def Decode(self, packet: FakePacketData) -> list[FakeDecodedFrame]:  # noqa: N802 - PyNvVideoCodec's name
        for buffer in self._buffers:  # the next Decode() overwrites earlier pictures
            self._overwrite(buffer)
        if packet.bsl == 0:
            self.log.append(None)
            frames = self._context.decode(None)
            self._context.flush_buffers()  # usable again after end of stream, as NVDEC is
        else:
            data = ctypes.string_at(packet.bsl_data, packet.bsl)
            self.log.append((data, packet.pts, packet.key, packet.discardable))
            self._packets += 1
            if self._packets == self.fail_at:
                raise PyNvVCException("cuvidParseVideoData(m_hParser, &packet) returned error 999 "
                                      "(CUDA_ERROR_UNKNOWN)")
            av_packet = padded_packet(data)  # as framefeed's own packet sources do
            av_packet.pts = packet.pts
            try:
                frames = self._context.decode(av_packet)
            except av.error.InvalidDataError:
                frames = []  # NVDEC's parser skips what it cannot parse
        for frame in frames:
            self._sequence(frame)
            surface_format = _surface_format(frame)[0]
            self._held.append((frame.pts, _native_bytes(frame, self._out, self._scale_from), surface_format,
                               self._out))
        ready = len(self._held) if packet.bsl == 0 else max(len(self._held) - DISPLAY_DELAY, 0)
        shown, self._held = self._held[:ready], self._held[ready:]
        return [self._display_picture(i, *picture) for i, picture in enumerate(shown)]

    def setReconfigParams(self, width: int = 0, height: int = 0) -> int:  # noqa: N802 - PyNvVideoCodec's name
        self.reconfigured.append((width, height))
        if width == 0 and height == 0:
            return 0
        if width > self._max[0] or height > self._max[1]:
            raise RuntimeError("Resize dimensions must be lower than max width and height, please recreate decoder "
                               "instance")
        self._external = True
        if (width, height) != self._resize:
            self._buffers, self._events = [], []  # output buffers of another size are freed
        self._resize = (width, height)
        return 1

    # -- the parser's callbacks -------------------------------------------------------------

    def _sequence(self, frame: av.VideoFrame) -> None:
        """HandleVideoSequence / ReconfigureDecoder for the frame's sequence."""
        coded = (self._context.coded_width or frame.width, self._context.coded_height or frame.height)
        display = (frame.width, frame.height)
        _, bits, four_two_zero = _surface_format(frame)
        if not self._configured:
            self._configured = True
            self._max = (max(self._max[0], coded[0]), max(self._max[1], coded[1]))
            caps = self._caps((("420" if four_two_zero else "444"), bits)) if self._caps else None
            if caps is not None and (self._max[0] > caps["width_max"] or self._max[1] > caps["height_max"]):
                raise ParserCallbackAbort("Resolution not supported on this GPU")
            self._format, self._coded, self._display = (bits, four_two_zero), coded, display
            self._out = self._resize if self._resize != (0, 0) else display
            self._target = self._resize if self._resize != (0, 0) else coded
            return
        if (bits, four_two_zero) != self._format:
            what = "bit depth" if bits != self._format[0] else "chroma format"
            raise ParserCallbackAbort(f"Reconfigure Not supported for {what} change")
        if coded[0] > self._max[0] or coded[1] > self._max[1]:
            if self._codec_name != "vp9" or self._external:
                raise ParserCallbackAbort("Reconfigure Not supported when width/height > maxwidth/maxheight")
            return  # VP9: the driver handles it
        if coded == self._coded:
            if display != self._display:  # 1920x1080 vs 1920x1088: new output size, same buffers
                self._display = self._out = display
            return
        self._coded = coded
        if self._external:  # the application's reconfigure: everything follows the new stream
            self._external = False
            self._display = display
            self._out = self._resize if self._resize != (0, 0) else display
            self._target = self._out
            self._scale_from = None
        else:  # keeps the display rectangle and target: the picture is scaled into the old size
            self._scale_from = coded if coded != self._target else None

    def _display_picture(self, index: int, pts: int, surface: np.ndarray, surface_format: str,
                         size: tuple[int, int]) -> FakeDecodedFrame:
        """HandlePictureDisplay: buffer `index` of this call, allocated when first needed."""
        if index >= len(self._buffers):
            self._buffers.append(np.empty(surface.nbytes, dtype=np.uint8))
            event = self._calls.create_event(0) if self._calls else 0
            self._events.append(event)
            if self._calls:
                buffer = self._buffers[-1]
                self._calls.register(buffer.ctypes.data, buffer.nbytes, "decoder picture", buffer)
        buffer = self._buffers[index]
        if buffer.nbytes < surface.nbytes:
            raise ParserCallbackAbort(f"a {size[0]}x{size[1]} picture written into an output buffer of "
                                      f"{buffer.nbytes} bytes (sized for an earlier stream): a device heap overflow")
        buffer[: surface.nbytes] = surface
        if self._calls:
            self._calls.write(self._stream, buffer.ctypes.data, buffer.nbytes)
            self._calls.record(0, self._events[index], self._stream)
        return FakeDecodedFrame(pts, surface_format, size[0], size[1], buffer.ctypes.data, self._events[index],
                                buffer)

    def _overwrite(self, buffer: np.ndarray) -> None:
        if self._calls:
            self._calls.write(self._stream, buffer.ctypes.data, buffer.nbytes)
        buffer.fill(self.POISON)


class FakePyNvVideoCodec:
    """The slice of PyNvVideoCodec's module API framefeed uses, decoding with
    `EmulatedNvdec`. Keyword names are the 2.2.4 binding's: a misspelt
    keyword raises TypeError, as pybind11 would. `table` maps (codec,
    chroma, depth) to `caps(...)` answers; missing entries are unsupported."""

    class cudaVideoCodec:  # noqa: N801 - PyNvVideoCodec's name
        H264, HEVC, VP8, VP9, AV1, MPEG1, MPEG2 = "H264", "HEVC", "VP8", "VP9", "AV1", "MPEG1", "MPEG2"

    cudaVideoChromaFormat = type("cudaVideoChromaFormat", (), {"420": "420", "422": "422", "444": "444"})
    OutputColorType = type("OutputColorType", (), {"NATIVE": "NATIVE", "RGB": "RGB", "RGBP": "RGBP"})
    PacketData = FakePacketData
    PyNvVCException = PyNvVCException
    PyNvVCExceptionUnsupported = PyNvVCExceptionUnsupported
    FFMPEG_NAMES = {"H264": "h264", "HEVC": "hevc", "VP8": "vp8", "VP9": "vp9", "AV1": "av1",
                    "MPEG1": "mpeg1video", "MPEG2": "mpeg2video"}
    _CREATE_KEYWORDS = {"gpuid", "codec", "cudacontext", "cudastream", "usedevicememory", "maxwidth", "maxheight",
                        "outputColorType", "enableSEIMessage", "bWaitForSessionWarmUp", "latency",
                        "enableDecodeStats"}
    ENGINES = 7

    def __init__(self, table: dict, calls: RecordingCudaCalls | None = None) -> None:
        self.table = table
        self.calls = calls
        self.created: list[dict] = []
        self.decoders: list[EmulatedNvdec] = []
        self.caps_queries: list[tuple] = []
        self.fail_at: int | None = None  # given to every decoder created from now on (`EmulatedNvdec.fail_at`)

    def CreateDecoder(self, **kwargs):  # noqa: N802
        unknown = set(kwargs) - self._CREATE_KEYWORDS
        if unknown:
            raise TypeError(f"CreateDecoder() got unexpected keywords {unknown}")
        if kwargs.get("gpuid", 0) != 0:  # ValidateGpuId (PyNvVideoCodecUtils.hpp), one GPU here
            raise PyNvVCException("GPU ordinal out of range. Should be within [0, 0]")
        self.created.append(kwargs)
        name = self.FFMPEG_NAMES[kwargs["codec"]]
        decoder = EmulatedNvdec(name, calls=self.calls, stream=kwargs.get("cudastream", 0),
                                max_width=kwargs.get("maxwidth", 0), max_height=kwargs.get("maxheight", 0),
                                caps=lambda key: self.table.get((name, *key)))
        decoder.fail_at = self.fail_at
        self.decoders.append(decoder)
        return decoder

    def GetDecoderCaps(self, *, gpuid=0, codec="H264", chromaformat="420", bitdepth=8):  # noqa: N802
        self.caps_queries.append((gpuid, codec, chromaformat, bitdepth))
        answer = self.table.get((self.FFMPEG_NAMES[codec], chromaformat, bitdepth))
        if answer is None:  # the driver answers bIsSupported = 0 and zero limits
            answer = caps(0, 0, 0, 0, 0, supported=0)
        return {"codec_id": list(self.FFMPEG_NAMES).index(codec), "chromaformat_id": {"420": 1, "422": 2,
                "444": 3}[chromaformat], "bitdepth": bitdepth, **answer}


def caps(width_min, height_min, width_max, height_max, mb_num_max, supported=1, engines=FakePyNvVideoCodec.ENGINES):
    """A `GetDecoderCaps` answer's limits (the binding adds codec_id, chromaformat_id, bitdepth)."""
    return {"supported": supported, "num_decoder_engines": engines, "width_min": width_min,
            "height_min": height_min, "width_max": width_max, "height_max": height_max, "mb_num_max": mb_num_max}


UNSUPPORTED = caps(0, 0, 0, 0, 0, supported=0)

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


# -- the kernel launch on the host ---------------------------------------------------------


class HostKernelLaunch:
    """`backend.KernelLaunch` on the CPU: reads the picture from the addresses
    the GPU kernel would read (checked against known memory and ordered by
    the recorder), converts with the kernel's torch reference (and its
    reference crop and resize), writes the destination."""

    def __init__(self, calls: RecordingCudaCalls) -> None:
        self.calls = calls
        self.launches = 0

    def __call__(self, planes: Any, dst: torch.Tensor, *, stream: Any, surface: Any) -> None:
        from framefeed.engine.backends.gpu_decode.colour import (
            native_planes,
            reference_rgb,
            reference_rgb_float,
        )
        from framefeed.engine.backends.gpu_decode.resampling import reference_resampled

        calls = self.calls
        calls._work(stream.handle, "a kernel")
        calls.read(stream.handle, planes.base, planes.size, "the colour kernel")
        raw = host_bytes(planes.base, planes.size)
        dtype = np.uint16 if planes.sample_bytes == 2 else np.uint8
        rows = planes.size // planes.luma_pitch
        pixels = raw[: rows * planes.luma_pitch].view(dtype).reshape(rows, planes.luma_pitch // planes.sample_bytes)
        surface_tensor = torch.from_numpy(pixels.astype(np.int32))
        y, cb, cr = native_planes(surface_tensor, surface.surface_format, planes.height, planes.width)
        convert = reference_rgb_float if dst.dtype == torch.float32 else reference_rgb  # output_dtype
        rgb = convert(y, cb, cr, surface.spec, sample_shift=surface.sample_shift)
        if surface.turns:
            rgb = torch.rot90(rgb, surface.turns, dims=(0, 1))
        if surface.resampling is not None:
            rgb = reference_resampled(rgb.contiguous(), surface.resampling)
        dst.copy_(rgb)
        storage = dst.untyped_storage()
        calls.write(stream.handle, storage.data_ptr(), storage.nbytes())
        self.launches += 1


# -- the emulated runtime ------------------------------------------------------------------


def emulated_runtime(table: dict | None = None, *, compute_capability=(9, 0), device_name="NVIDIA H200",
                     calls: RecordingCudaCalls | None = None):
    """An `NvdecRuntime` for a CPU-only machine: an 'H200' whose
    PyNvVideoCodec is `FakePyNvVideoCodec`, whose CUDA runtime is
    `RecordingCudaCalls` (`runtime.calls`), with framefeed's real decoder
    creation, converter and reaper; the kernel is `HostKernelLaunch` and
    output lands on the CPU. Hand it to `NvdecDecoders(0, runtime=...)`: no
    module global is patched."""
    from framefeed.engine.backends.gpu_decode import NvdecRuntime
    from framefeed.engine.backends.gpu_decode.backend import CudaSurfaceConverter
    from framefeed.engine.backends.gpu_decode.owner import create_pynvvideocodec_decoder
    from framefeed.engine.backends.gpu_decode.reaper import reaper

    calls = calls or RecordingCudaCalls()
    nvc = FakePyNvVideoCodec(HOPPER_CAPS if table is None else table, calls)
    launch = HostKernelLaunch(calls)

    def make_converter(index, stream, fmt, traits, turns, transforms):
        return CudaSurfaceConverter(torch.device("cpu"), stream, fmt, traits.width, traits.height, traits.colour,
                                    turns, transforms, launch=launch)

    runtime = NvdecRuntime(
        nvc=nvc,
        device_facts=lambda index: (compute_capability, device_name),
        create_decoder=lambda key: create_pynvvideocodec_decoder(nvc, calls, lambda index: 777, key),
        retire=reaper().retire,
        make_converter=make_converter,
        prepare_kernel=lambda index, sample_bytes: None,
        output_device=lambda index: torch.device("cpu"),
        calls=calls,
    )
    return runtime


def emulated_nvdec_decoders(table: dict | None = None, **kwargs):
    """A fresh `NvdecDecoders` owner on `emulated_runtime`."""
    from framefeed.engine.backends.gpu_decode import NvdecDecoders

    return NvdecDecoders(0, runtime=emulated_runtime(table, **kwargs))


def host_converter(traits: Any, quarter_turns: int = 0, transforms: Any = None,
                   calls: RecordingCudaCalls | None = None) -> Any:
    """framefeed's real `CudaSurfaceConverter` for one stream on the host
    stand-ins (its own recorder and stream), for backends built by hand."""
    from framefeed.engine.backends.gpu_decode.backend import CudaSurfaceConverter
    from framefeed.engine.backends.gpu_decode.colour import surface_format_for
    from framefeed.engine.backends.gpu_decode.streams import OwnedStream

    calls = calls or RecordingCudaCalls()
    stream = OwnedStream(calls, 0)
    return CudaSurfaceConverter(torch.device("cpu"), stream, surface_format_for(traits.colour), traits.width,
                                traits.height, traits.colour, quarter_turns, transforms,
                                launch=HostKernelLaunch(calls))


def hand_built_nvdec(codec_name: str, converter: Any) -> EmulatedNvdec:
    """An `EmulatedNvdec` writing on the stream of `converter` (from `host_converter`)."""
    return EmulatedNvdec(codec_name, calls=converter.stream.calls, stream=converter.stream.handle)
