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

Output tensors belong to torch's current stream: the decoder stream first
waits for it (the slot's memory may have just been allocated there), and the
current stream then waits for the decoder stream, so the session's
follow-up copies and the user's kernels see finished pixels.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, Protocol

import torch

from framefeed.engine.backends.gpu_decode.bitstream import PacketPreparer, PreparedPacket
from framefeed.engine.backends.gpu_decode.colour import ColourSpec
from framefeed.engine.backends.gpu_decode.kernels import (
    DestinationWalk,
    cupy_stream_for,
    destination_walk,
    launch_yuv_to_rgb,
    resample_tables,
)
from framefeed.engine.backends.gpu_decode.resampling import resampling_for
from framefeed.engine.backends.gpu_decode.surfaces import (
    SurfacePlanes,
    copy_surface,
    planes_of_decoded_frame,
)
from framefeed.errors import DecodingError
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


def _is_nvdec_error(error: BaseException) -> bool:
    # PyNvVideoCodec raises PyNvVCException / PyNvVCExceptionUnsupported; match by
    # name so this module never imports PyNvVideoCodec itself.
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
        mark_discardable: set `PacketData.discardable` for discard-flagged packets.
        on_close: called once with no argument when the backend is closed or
            collected (gives the decoder back to the cache).
        transforms: the pipeline `converter` applies while converting (its
            frames then have `transforms.output_size`); None for full frames.
            Exposed as `applied_transforms`, so `with_transforms` does not
            apply it a second time.
    """

    name = "nvdec"
    channels_first_output = True  # the kernel writes any layout; planar slots coalesce best

    def __init__(self, *, decoder: Any, make_packet: Callable[[], Any], preparer: PacketPreparer,
                 converter: SurfaceConverter, output_device: torch.device, flush_first: bool = False,
                 mark_discardable: bool = True, on_close: Callable[[], None] | None = None,
                 transforms: TransformPipeline | None = None) -> None:
        self._decoder = decoder
        self.applied_transforms = transforms if transforms else None
        self._make_packet = make_packet
        self._preparer = preparer
        self._converter = converter
        self.output_device = output_device
        self._mark_discardable = mark_discardable
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
            # but outputs nothing for them; we drop their frames by pts below.
            self._discarded.add(stamp)
            if self._mark_discardable:
                packet.discardable = True
        if prepared.duration and stamp != NO_PTS:
            self._durations[stamp] = int(prepared.duration)
        self._unflushed = True
        pictures = self._call_decoder(packet, f"a packet (pts {prepared.pts})")
        del prepared  # the payload had to stay alive until Decode returned
        return self._wrap(pictures)

    def _end_of_stream(self) -> list[Any]:
        if not self._unflushed:
            return []
        self._generation += 1
        self._unflushed = False
        return self._call_decoder(self._make_packet(), "the end-of-stream flush")

    def _call_decoder(self, packet: Any, what: str) -> list[Any]:
        try:
            return list(self._decoder.Decode(packet))
        except Exception as error:
            if _is_nvdec_error(error):
                raise DecodingError(f"NVDEC could not decode {what}: {error}") from error
            raise

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


class CudaSurfaceConverter:
    """Converts NVDEC pictures with the fused kernel on the decoder's stream.

    Args:
        device: the CUDA device.
        stream: the decoder's `torch.cuda.Stream`.
        surface_format: "NV12", "P016", "YUV444" or "YUV444_16Bit".
        width, height: the stream's picture size (before rotation).
        spec: the colour conversion.
        quarter_turns: display rotation, counter-clockwise.
        transforms: crops and resizes (after rotation) performed by the same
            launch (`resampling`); destinations then have its output size.

    Raises:
        ValueError: `transforms` resolved for frames of another size.
    """

    def __init__(self, device: torch.device, stream: torch.cuda.Stream, surface_format: str, width: int,
                 height: int, spec: ColourSpec, quarter_turns: int,
                 transforms: TransformPipeline | None = None) -> None:
        import cupy  # lazy: CUDA decoding only

        self._device = device
        self._stream = stream
        self._cupy_stream = cupy_stream_for(cupy, stream.cuda_stream, device.index)
        self._surface_format = surface_format
        self._width, self._height = width, height
        self._spec = spec
        self._coefficients = spec.coefficients()
        self._sample_shift = 16 - spec.bit_depth if surface_format in ("P016", "YUV444_16Bit") else 0
        self._turns = quarter_turns % 4
        self._walks: dict[tuple, DestinationWalk] = {}
        self._foreign_streams: dict[int, torch.cuda.ExternalStream] = {}
        self._tables = None
        if transforms:
            self._tables, self._table_tensors = resample_tables(resampling_for(transforms), self._turns, width,
                                                                height, device)
            for tensor in self._table_tensors:  # made on the current stream, read on the decoder's
                tensor.record_stream(stream)
            stream.wait_stream(torch.cuda.current_stream(device))

    def view(self, picture: Any) -> SurfacePlanes:
        return planes_of_decoded_frame(picture, self._surface_format, self._width, self._height)

    def own(self, planes: SurfacePlanes) -> OwnedSurface:
        if isinstance(planes, OwnedSurface):
            return planes
        producer = self._after_producer(planes)
        buffer, moved = copy_surface(planes, self._device, self._stream)
        self._before_producer_reuse(producer)
        return OwnedSurface(buffer, moved)

    def write(self, planes: SurfacePlanes | OwnedSurface, dst: torch.Tensor) -> None:
        if isinstance(planes, OwnedSurface):
            planes = planes.planes
        if dst.device != self._device or dst.dtype not in (torch.uint8, torch.float32):
            raise ValueError(f"destination must be uint8 or float32 on {self._device}, got {dst.dtype} on {dst.device}")
        layout = (tuple(dst.shape), tuple(dst.stride()))
        walk = self._walks.get(layout)
        if walk is None:
            if self._tables is None:
                walk = destination_walk(layout[0], layout[1], self._turns, planes.height, planes.width)
            else:  # the output's own walk: the tables read the rotated picture
                walk = destination_walk(layout[0], layout[1], 0, self._tables.out_height, self._tables.out_width)
            self._walks[layout] = walk
        consumer = torch.cuda.current_stream(self._device)
        if consumer != self._stream:
            self._stream.wait_stream(consumer)  # the slot may have just been allocated there
        producer = self._after_producer(planes)
        launch_yuv_to_rgb(planes, dst.data_ptr(), walk, self._coefficients, self._sample_shift,
                          self._spec.chroma_shift_x, self._spec.chroma_shift_y, self._device.index,
                          self._cupy_stream, self._tables, float_output=dst.dtype == torch.float32)
        self._before_producer_reuse(producer)
        if consumer != self._stream:
            consumer.wait_stream(self._stream)

    # A picture may name the stream its pixels are ready on. If that is not
    # the decoder stream we run on, order our read after its writes and its
    # next writes after our read.
    def _after_producer(self, planes: SurfacePlanes) -> torch.cuda.ExternalStream | None:
        handle = planes.ready_stream
        if handle is None or handle == self._stream.cuda_stream:
            return None
        producer = self._foreign_streams.get(handle)
        if producer is None:
            producer = self._foreign_streams[handle] = torch.cuda.ExternalStream(handle, device=self._device)
        self._stream.wait_stream(producer)
        return producer

    def _before_producer_reuse(self, producer: torch.cuda.ExternalStream | None) -> None:
        if producer is not None:
            producer.wait_stream(self._stream)
