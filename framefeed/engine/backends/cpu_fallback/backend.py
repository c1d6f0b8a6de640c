"""The CPU backend: FFmpeg's software decoders through PyAV.

It only turns packets into frames and frames into RGB; which packets to send
and which frames to keep is the decode plan's business (`framefeed.engine.executor`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import av
import torch

from framefeed.engine.backends.cpu_fallback.float_output import FloatRgbWriter
from framefeed.engine.backends.cpu_fallback.rgb import RgbConverter
from framefeed.engine.packets import DISCARD_MARK
from framefeed.errors import DecodingError, ffmpeg_reason


def configure_decoder_threads(stream: Any, num_threads: int) -> None:
    """Set the stream decoder's threads; must run before its first decode
    (PyAV refuses once the codec is open). 0 lets FFmpeg choose."""
    codec = stream.codec_context
    codec.thread_count = num_threads
    # Frame and slice threading together, as FFmpeg's own tools use.
    codec.thread_type = "AUTO"


class CpuBackend:
    """Decodes one stream's packets with a PyAV codec context: the stream's
    own (packets from the demuxer) or one opened from `CodecParameters`
    (packets from a shipped bundle).

    Frames are `av.VideoFrame`s; they own their pixels, so `retain` is free.
    """

    name = "cpu"
    output_device = torch.device("cpu")
    channels_first_output = False  # swscale writes packed RGB rows

    def __init__(self, codec_context: Any, *, rotation_quarter_turns: int) -> None:
        # Threads were set (`configure_decoder_threads`) before the codec opened.
        self._codec = codec_context
        self._converter = RgbConverter(rotation_quarter_turns)
        self._turns = rotation_quarter_turns
        self._float_writer: FloatRgbWriter | None = None  # made on the first float32 destination
        self._discarded: set[int] = set()  # pts of rebuilt discard packets not yet output
        self.frames_decoded = 0

    def reset(self) -> None:
        """Forget all decoder state (after a seek)."""
        self._codec.flush_buffers()
        self._discarded.clear()

    def send(self, packet: Any) -> Sequence[Any]:
        """Decode one packet; returns the frames it completed, in display order."""
        if packet.opaque == DISCARD_MARK and packet.pts is not None:
            # A rebuilt packet cannot carry FFmpeg's discard flag: drop its frame here.
            self._discarded.add(packet.pts)
        try:
            frames = self._codec.decode(packet)
        except av.error.FFmpegError as error:
            raise DecodingError(f"FFmpeg could not decode a packet (pts {packet.pts}): {ffmpeg_reason(error)}") from error
        if self._discarded:
            frames = self._drop_discarded(frames)
        self.frames_decoded += len(frames)
        return frames

    def _drop_discarded(self, frames: Sequence[Any]) -> list[Any]:
        kept = []
        for frame in frames:
            if frame.pts in self._discarded:
                self._discarded.discard(frame.pts)
            else:
                kept.append(frame)
        return kept

    def close(self) -> None:
        """Nothing to give back: the codec context goes with its owner."""

    def drain(self) -> Sequence[Any]:
        """End of stream: the frames still held by the decoder."""
        try:
            frames = self._codec.decode(None)
        except av.error.FFmpegError as error:
            raise DecodingError(f"FFmpeg failed while draining the decoder: {ffmpeg_reason(error)}") from error
        if self._discarded:
            frames = self._drop_discarded(frames)
        self.frames_decoded += len(frames)
        return frames

    @staticmethod
    def pts_of(frame: Any) -> int | None:
        return frame.pts

    @staticmethod
    def duration_of(frame: Any) -> int | None:
        return frame.duration or None

    def retain(self, frame: Any) -> Any:
        return frame

    def write_rgb(self, frame: Any, dst: torch.Tensor) -> None:
        """Convert `frame` to RGB into `dst`, a `(H, W, 3)` CPU view: uint8
        (swscale rgb24), or float32 in [0, 1] (swscale rgb48 / 65535, see `float_output`)."""
        if dst.dtype == torch.float32:
            if self._float_writer is None:
                self._float_writer = FloatRgbWriter(self._turns)
            self._float_writer.write(frame, dst)
            return
        self._converter.write(frame, dst)
