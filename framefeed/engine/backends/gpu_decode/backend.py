"""`NvdecBackend`: the `FrameBackend` (see `framefeed.engine.executor`) on NVDEC.

Packets from framefeed's demuxer go through `bitstream.PacketPreparer`
(Annex-B, parameter sets after every flush) into PyNvVideoCodec's low-level
decoder; the pictures it returns are converted by our own kernel straight
into the output slots. The session decides seeks and which frames it wants,
exactly as with the CPU backend.

Frame lifetime: pictures returned by one `Decode()` live in decoder memory
that the next `Decode()` overwrites, asynchronously, on the decoder's CUDA
stream. Every conversion or copy of a picture is therefore enqueued on that
same stream before the next `Decode()` call, and FIFO order makes the read
happen before the overwrite without any host synchronisation. Frames handed
out by `send`/`drain` are only valid until the next `send`/`drain`/`reset`
(the session's contract); `retain` copies one into owned memory. Using an
expired frame raises instead of reading overwritten pixels.

Streams (`streams.py`): the backend's `producer` is its decoder's own
stream. Callers run decode calls inside `ordering.producing(producer)`, so
output slots are allocated on that stream and the kernel writing them needs
no wait; the caller's stream then waits on the producer's event. A caller
that allocates slots on another stream (the engine used directly) still gets
ordered pixels: `write_rgb` makes the producer follow that stream before the
launch and signal it after.

Failures: an exception from PyNvVideoCodec's `Decode` means the parser call
was cut short, so pictures of that packet or later ones are lost and the
decoder's state is unknown. That is never a damaged packet (NVDEC's parser
skips those without raising), so it is not a `DecodingError`, which the
executor counts and skips: it is an `NvdecFailure` naming the packet, and
the decoder is destroyed instead of being reused.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, Protocol

import torch

from framefeed.engine.backends.gpu_decode.bitstream import PacketPreparer, PreparedPacket
from framefeed.engine.backends.gpu_decode.colour import ColourSpec
from framefeed.engine.backends.gpu_decode.kernels import (
    ResampleTables,
    resample_tables,
)
from framefeed.engine.backends.gpu_decode.resampling import resampling_for
from framefeed.engine.backends.gpu_decode.streams import OwnedStream
from framefeed.engine.backends.gpu_decode.surfaces import (
    SurfacePlanes,
    planes_of_decoded_frame,
)
from framefeed.transforms import TransformPipeline

# pts handed to NVDEC for packets without timestamps; frames carrying it have no pts.
NO_PTS = -(1 << 62)
# After a flush, packets before the first keyframe are not sent (see `send`),
# unless this many go by without one (a stream whose packets carry no key flags).
MAX_PACKETS_BEFORE_KEYFRAME = 300


class SurfaceConverter(Protocol):
    """Turns decoder pictures into RGB (the CUDA implementation is
    `CudaSurfaceConverter`; tests substitute a CPU one)."""

    def view(self, picture: Any) -> Any:
        """A description of a decoder-owned picture's planes (valid until the next Decode)."""

    def own(self, planes: Any) -> Any:
        """An owned copy of those planes that survives later Decode calls."""

    def write(self, planes: Any, dst: torch.Tensor) -> None:
        """Convert into `dst`, an `(H, W, 3)` uint8 or float32 (values in
        [0, 1]) view (after rotation and the converter's transforms, if it
        was given any)."""


class NvdecFrame:
    """A decoded frame as the session sees it.

    `picture` is the decoder's `DecodedFrame` while `owned` is None; after
    `retain`, `owned` holds the copied planes and the frame never expires.
    """

    __slots__ = ("pts", "duration", "picture", "owned", "generation")

    def __init__(self, pts: int | None, duration: int | None, picture: Any, generation: int) -> None:
        self.pts = pts
        self.duration = duration
        self.picture = picture
        self.owned: Any = None
        self.generation = generation

    def __repr__(self) -> str:
        state = "owned" if self.owned is not None else f"decoder memory, generation {self.generation}"
        return f"NvdecFrame(pts={self.pts}, {state})"


class NvdecFailure(RuntimeError):
    """PyNvVideoCodec's decoder raised: pictures may be lost and the decoder is
    not reused. Not a `DecodingError` (which the executor skips as a damaged
    packet): it reaches the caller, as `DecodingError` at the public API."""


def _is_nvdec_error(error: BaseException) -> bool:
    # PyNvVideoCodec 2.2.4 raises PyNvVCException / PyNvVCExceptionUnsupported
    # (both in the wheel's module), and RuntimeError/ValueError for
    # std::runtime_error/std::invalid_argument; match by name so this module
    # never imports PyNvVideoCodec itself.
    return any(cls.__name__.startswith("PyNvVC") for cls in type(error).__mro__)


class NvdecBackend:
    """Decodes one stream's packets with an NVDEC decoder (see module docstring).

    Args:
        decoder: object with `Decode(packet_data) -> list[picture]`, each picture
            with `getPTS()`; an empty packet (`bsl == 0`) means end of stream.
        make_packet: creates an empty PyNvVideoCodec `PacketData`.
        preparer: the stream's `PacketPreparer`.
        converter: the `SurfaceConverter` for this stream.
        output_device: where output tensors live.
        flush_first: the decoder was used before (decoder cache): flush it first.
        prepare: called once after that flush, before any packet (reconfigures
            a reused decoder for this stream's size).
        on_failure: called when the decoder raised (marks it broken).
        on_close: called once with no argument when the backend is closed or
            collected (gives the decoder back to the cache).
        transforms: the pipeline `converter` applies while converting (its
            frames then have `transforms.output_size`); None for full frames.
            Exposed as `applied_transforms`, so `with_transforms` does not
            apply it a second time.
        producer: the decoder's own stream, where its pictures are written
            and converted (`ordering.producing`); None off the GPU.

    `PacketData.discardable` is never set. The field exists in 2.2.4 (the
    wheel's `PacketData` binding lists it), but the 2.0.2 sources read only
    `bsl_data`, `bsl`, `pts` and `decode_flag` in `PyNvDecoder::Decode`, and
    the only 2.2.4 text about it (a muxer docstring) says the decoder layer
    suppresses the picture of such packets. Whichever is true, frames of
    discard-flagged packets are dropped here by pts, so the result does not
    depend on it (`benchmarks/gpu_probe.py` records what 2.2.4 does).
    """

    name = "nvdec"
    channels_first_output = True  # the kernel writes any layout; planar slots coalesce best

    def __init__(self, *, decoder: Any, make_packet: Callable[[], Any], preparer: PacketPreparer,
                 converter: SurfaceConverter, output_device: torch.device, flush_first: bool = False,
                 prepare: Callable[[], None] | None = None, on_failure: Callable[[], None] | None = None,
                 on_close: Callable[[], None] | None = None, transforms: TransformPipeline | None = None,
                 producer: OwnedStream | None = None) -> None:
        self._decoder = decoder
        self.applied_transforms = transforms if transforms else None
        self._make_packet = make_packet
        self._preparer = preparer
        self._converter = converter
        self.output_device = output_device
        self.producer = producer
        self._on_failure = on_failure
        self._generation = 0
        self._discarded: set[int] = set()  # pts of discard-flagged packets not yet output
        self._durations: dict[int, int] = {}  # pts -> packet duration, until the frame comes out
        self._awaiting_keyframe = True
        self._skipped_before_keyframe = 0
        # Whether data went in since the last end-of-stream packet: a flush of a
        # decoder that never saw a picture has nothing to do, so it is not sent.
        self._unflushed = flush_first
        self.frames_decoded = 0
        self._closer = weakref.finalize(self, on_close) if on_close is not None else None
        if self._closer is not None:
            self._closer.atexit = False  # never touch CUDA during interpreter shutdown
        if flush_first:
            self._end_of_stream()
        if prepare is not None:
            self._guarded(prepare, "reconfiguring the reused decoder")

    # -- FrameBackend ---------------------------------------------------------

    def reset(self) -> None:
        """Drop decoder state after a seek: an end-of-stream packet flushes the
        decoder (its output is discarded); parameter sets go out again next."""
        self._generation += 1
        self._end_of_stream()
        self._preparer.reset()
        self._discarded.clear()
        self._durations.clear()
        self._awaiting_keyframe = True
        self._skipped_before_keyframe = 0

    def send(self, packet: Any) -> list[NvdecFrame]:
        """Decode one demuxed packet; the frames completed, in display order.

        After a flush, packets before the first keyframe are dropped: they
        cannot decode correctly, and FFmpeg outputs nothing for them either, so
        the session seeks earlier instead of taking a broken picture (seeks in
        MPEG-TS can land between keyframes).
        """
        self._generation += 1
        if self._awaiting_keyframe:
            if not packet.is_keyframe and self._skipped_before_keyframe < MAX_PACKETS_BEFORE_KEYFRAME:
                self._skipped_before_keyframe += 1
                return []
            self._awaiting_keyframe = False
        frames: list[NvdecFrame] = []
        for prepared in self._preparer.prepare(packet):
            frames = self._keep(frames) + self._decode(prepared)
        return frames

    def drain(self) -> list[NvdecFrame]:
        """End of stream: the frames still held by the decoder."""
        self._generation += 1
        frames: list[NvdecFrame] = []
        for prepared in self._preparer.finish():
            frames = self._keep(frames) + self._decode(prepared)
        frames = self._keep(frames)
        frames += self._wrap(self._end_of_stream())
        self._preparer.reset()  # the decoder stays usable; it needs parameter sets again
        self._awaiting_keyframe = True
        self._skipped_before_keyframe = 0
        return frames

    @staticmethod
    def pts_of(frame: NvdecFrame) -> int | None:
        return frame.pts

    @staticmethod
    def duration_of(frame: NvdecFrame) -> int | None:
        """The duration of the packet the frame came from (NVDEC reports none)."""
        return frame.duration

    def retain(self, frame: NvdecFrame) -> NvdecFrame:
        """A copy of `frame` in owned device memory (made on the decoder stream)."""
        if frame.owned is not None:
            return frame
        kept = NvdecFrame(frame.pts, frame.duration, None, frame.generation)
        kept.owned = self._converter.own(self._planes(frame))
        return kept

    def write_rgb(self, frame: NvdecFrame, dst: torch.Tensor) -> None:
        """Convert `frame` into `dst`, an `(H, W, 3)` uint8 or float32 view on
        the output device (transformed by `applied_transforms` when set)."""
        planes = frame.owned if frame.owned is not None else self._planes(frame)
        self._converter.write(planes, dst)

    # -- lifetime -------------------------------------------------------------

    def close(self) -> None:
        """Give the decoder back now (also happens when the backend is
        collected). The backend cannot decode afterwards."""
        if self._closer is not None:
            self._closer()
        self._decoder = _ClosedDecoder()

    # -- internals ------------------------------------------------------------

    def _planes(self, frame: NvdecFrame) -> Any:
        if frame.generation != self._generation:
            raise RuntimeError(
                f"{frame!r} was used after a later decode call overwrote its picture; "
                "frames must be retained to outlive the next send/drain/reset"
            )
        return self._converter.view(frame.picture)

    def _keep(self, frames: list[NvdecFrame]) -> list[NvdecFrame]:
        """Frames from an earlier Decode() of this call, copied out before the
        next Decode() overwrites their pictures (rare: a packet the bitstream
        filter splits in two)."""
        return [self.retain(frame) for frame in frames]

    def _decode(self, prepared: PreparedPacket) -> list[NvdecFrame]:
        self._generation += 1  # pictures of earlier Decode() calls are about to be overwritten
        packet = self._make_packet()
        packet.bsl_data = prepared.address
        packet.bsl = prepared.size
        stamp = prepared.pts if prepared.pts is not None else prepared.dts
        stamp = NO_PTS if stamp is None else int(stamp)
        packet.pts = stamp
        if prepared.dts is not None:
            packet.dts = int(prepared.dts)
        packet.key = 1 if prepared.is_keyframe else 0
        if prepared.is_discard:
            # FFmpeg decodes discard packets (later pictures may reference them)
            # but outputs nothing for them; we drop their frames by pts below
            # (`discardable` is left alone: see the class docstring).
            self._discarded.add(stamp)
        if prepared.duration and stamp != NO_PTS:
            self._durations[stamp] = int(prepared.duration)
        self._unflushed = True
        pictures = self._call_decoder(packet, f"the packet with pts {prepared.pts} (dts {prepared.dts})")
        del prepared  # the payload had to stay alive until Decode returned
        return self._wrap(pictures)

    def _end_of_stream(self) -> list[Any]:
        if not self._unflushed:
            return []
        self._generation += 1
        self._unflushed = False
        return self._call_decoder(self._make_packet(), "the end-of-stream flush")

    def _call_decoder(self, packet: Any, what: str) -> list[Any]:
        return self._guarded(lambda: list(self._decoder.Decode(packet)), f"decoding {what}")

    def _guarded(self, call: Callable[[], Any], what: str) -> Any:
        """Run a decoder call; its failure is an `NvdecFailure` naming `what`
        and the decoder is marked broken."""
        if isinstance(self._decoder, _ClosedDecoder):
            return call()
        try:
            return call()
        except Exception as error:
            if not (_is_nvdec_error(error) or isinstance(error, (RuntimeError, ValueError))) \
                    or isinstance(error, NvdecFailure):
                raise
            if self._on_failure is not None:
                self._on_failure()
            self._decoder = _ClosedDecoder()
            raise NvdecFailure(f"NVDEC failed while {what}: {error}; frames from this packet on may be "
                               "lost, so the request fails instead of skipping them") from error

    def _wrap(self, pictures: list[Any]) -> list[NvdecFrame]:
        frames = []
        for picture in pictures:
            pts = int(picture.getPTS())
            if pts in self._discarded:
                self._discarded.discard(pts)
                continue
            duration = self._durations.pop(pts, None)
            frames.append(NvdecFrame(None if pts == NO_PTS else pts, duration, picture, self._generation))
        self.frames_decoded += len(frames)
        return frames


class _ClosedDecoder:
    """Stands in for a decoder that was given back: any use is an error."""

    def Decode(self, packet: Any) -> list[Any]:  # noqa: N802 - PyNvVideoCodec's name
        raise RuntimeError("this NVDEC backend was closed; its decoder belongs to another one now")


class OwnedSurface:
    """A picture copied out of decoder memory: the buffer and its planes."""

    __slots__ = ("buffer", "planes")

    def __init__(self, buffer: torch.Tensor, planes: SurfacePlanes) -> None:
        self.buffer = buffer
        self.planes = planes


class KernelLaunch(Protocol):
    """Enqueues the fused conversion of one picture (`kernels.CupyKernelLaunch`
    on a GPU; the tests' host stand-in reads the same addresses on the CPU)."""

    def __call__(self, planes: SurfacePlanes, dst: torch.Tensor, *, stream: OwnedStream, surface: Any) -> None:
        """Convert `planes` into `dst` (a uint8 or float32 `(H, W, 3)` view) on `stream`;
        `surface` is the converter (its coefficients, rotation and tables)."""


class CudaSurfaceConverter:
    """Converts NVDEC pictures with the fused kernel on the decoder's stream.

    Args:
        device: where destinations live (the CUDA device).
        stream: the decoder's `OwnedStream`: pictures are written there by
            the decoder, so reading them there needs no wait.
        surface_format: "NV12", "P016", "YUV444" or "YUV444_16Bit".
        width, height: the stream's picture size (before rotation).
        spec: the colour conversion.
        quarter_turns: display rotation, counter-clockwise.
        transforms: crops and resizes (after rotation) performed by the same
            launch (`resampling`); destinations then have its output size.
        launch: enqueues the kernel (`kernels.CupyKernelLaunch`).

    Raises:
        ValueError: `transforms` resolved for frames of another size.
    """

    def __init__(self, device: torch.device, stream: OwnedStream, surface_format: str, width: int,
                 height: int, spec: ColourSpec, quarter_turns: int,
                 transforms: TransformPipeline | None = None, *, launch: KernelLaunch) -> None:
        self.device = device
        self.stream = stream
        self.surface_format = surface_format
        self.width, self.height = width, height
        self.spec = spec
        self.coefficients = spec.coefficients()
        self.sample_shift = 16 - spec.bit_depth if surface_format in ("P016", "YUV444_16Bit") else 0
        self.turns = quarter_turns % 4
        self.walks: dict[tuple, Any] = {}  # destination layout -> kernels.DestinationWalk
        self._launch = launch
        self.tables: ResampleTables | None = None
        self.resampling = resampling_for(transforms) if transforms else None
        self._table_tensors: tuple[torch.Tensor, ...] = ()
        if self.resampling is not None:
            with stream.scope():  # made where they are read: no cross-stream wait
                self.tables, self._table_tensors = resample_tables(self.resampling, self.turns, width, height,
                                                                   device)

    def view(self, picture: Any) -> SurfacePlanes:
        return planes_of_decoded_frame(picture, self.surface_format, self.width, self.height)

    def own(self, planes: SurfacePlanes | OwnedSurface) -> OwnedSurface:
        if isinstance(planes, OwnedSurface):
            return planes
        stream = self.stream
        buffer = stream.calls.copy_bytes(stream.device_index, planes.base, planes.size, stream.handle)
        return OwnedSurface(buffer, planes.moved_to(buffer.data_ptr()))

    def write(self, planes: SurfacePlanes | OwnedSurface, dst: torch.Tensor) -> None:
        if isinstance(planes, OwnedSurface):
            planes = planes.planes
        if dst.device != self.device or dst.dtype not in (torch.uint8, torch.float32):
            raise ValueError(f"destination must be uint8 or float32 on {self.device}, got {dst.dtype} on {dst.device}")
        stream = self.stream
        consumer = int(stream.calls.current_stream(stream.device_index).cuda_stream)
        stream.follow(consumer)  # no-op inside `producing`: the slot was allocated on this stream
        self._launch(planes, dst, stream=stream, surface=self)
        stream.signal(consumer)
