"""Compressed packets as values: where the executor gets its input.

A `PacketSource` is anything with `seek(pts)` and `packets()`: the demuxer
(`framefeed.engine.demux.demuxer.Demuxer`) is one; a `PacketBundle` shipped from
another process (built by `framefeed.engine.bundling.build_bundle`) is served by
`BundleSource`. Seeking stays part of the contract because approximate mode
learns where a seek landed only by decoding, and then seeks earlier.

A bundle is plain data (bytes and numpy arrays), so it pickles cheaply: a
CUDA-free worker process can demux and hand the packets to whoever decodes.
It holds *stretches*: runs of packets that are consecutive in the stream.
Decoding never crosses from one stretch into another; when a stretch ends
before the stream does, the executor learns it through `cut_after()` and
raises `MissingPacketsError` if a requested frame needed more, instead of
returning a neighbouring frame.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Protocol

import av
import numpy as np

from framefeed.errors import DecodingError

# Sentinel for "packet carries no timestamp" in the bundle's int64 arrays;
# also the pts that rewinds a source to the start of the stream.
NO_TIMESTAMP = -(1 << 62)
# av.Packet cannot carry a discard flag set from Python; rebuilt packets carry
# this marker in `opaque` instead (see `packet_is_discard`).
DISCARD_MARK = "framefeed:discard"
_KEY, _DISCARD = 1, 2


class MissingPacketsError(DecodingError):
    """A shipped `PacketBundle` lacks packets a requested frame needs."""


def padded_packet(payload: bytes | memoryview) -> av.Packet:
    """A PyAV packet holding a copy of `payload`, followed by FFmpeg's zeroed
    input padding.

    Not `av.Packet(payload)`: PyAV would reference the bytes without the
    padding FFmpeg's decoders may read past a packet's end, and beyond the
    end of a bundle's payload lies arbitrary memory (MPEG-4 Part 2 then
    decoded garbage now and then). The copy is cheap."""
    packet = av.Packet(len(payload))
    if len(payload):
        memoryview(packet)[:] = payload
    return packet


def packet_is_discard(packet: Any) -> bool:
    """Whether a packet (demuxed or rebuilt from a bundle) produces no frame."""
    return bool(packet.is_discard) or packet.opaque == DISCARD_MARK


class PacketSource(Protocol):
    """What the executor reads packets from (the demuxer, or a `BundleSource`)."""

    description: str

    def seek(self, pts: int) -> None:
        """Position before the keyframe at or before `pts` (stream time base);
        `NO_TIMESTAMP` rewinds to the start of the stream."""

    def packets(self) -> Iterator[Any]:
        """Packets (`av.Packet`) from the current position, in decode order."""

    def cut_after(self) -> int | None:
        """After `packets()` ran out: None at the true end of the stream, else
        the last timestamp the source holds (later packets were not shipped)."""


@dataclass(frozen=True)
class CodecParameters:
    """What opening a decoder for the stream needs, as plain values.

    Attributes:
        codec: FFmpeg's canonical codec name ("h264", "hevc", "vp9", ...).
        extradata: the codec configuration record (avcC/hvcC, ...), b"" when none.
        width, height: coded picture size (before rotation).
        pixel_format: FFmpeg pixel format name, None when unknown.
        time_base: seconds per pts unit.
        color_range, colorspace, color_primaries, color_trc: FFmpeg's enum numbers
            from the container (the decoder uses them when the bitstream is silent).
        field_order: FFmpeg's AVFieldOrder number (interlacing).
        profile: FFmpeg profile name, None when unknown.
        rotation_quarter_turns: display rotation, counter-clockwise quarter turns.
        decoder: FFmpeg's name of the software decoder the stream opened with
            ("libdav1d" for AV1, where the decoder called "av1" needs hardware).
    """

    codec: str
    extradata: bytes
    width: int
    height: int
    pixel_format: str | None
    time_base: Fraction
    color_range: int = 0
    colorspace: int = 2
    color_primaries: int = 2
    color_trc: int = 2
    field_order: int = 0
    profile: str | None = None
    rotation_quarter_turns: int = 0
    decoder: str = ""

    @classmethod
    def from_stream(cls, stream: Any, rotation_quarter_turns: int = 0) -> CodecParameters:
        """Read the parameters of a PyAV video stream (no decoding)."""
        ctx = stream.codec_context
        return cls(
            codec=stream.codec.canonical_name if stream.codec else "",
            extradata=bytes(ctx.extradata or b""),
            width=int(ctx.width or 0),
            height=int(ctx.height or 0),
            pixel_format=ctx.format.name if ctx.format is not None else None,
            time_base=stream.time_base or Fraction(1, 1),
            color_range=int(ctx.color_range or 0),
            colorspace=2 if ctx.colorspace is None else int(ctx.colorspace),
            color_primaries=int(ctx.color_primaries if ctx.color_primaries is not None else 2),
            color_trc=int(ctx.color_trc if ctx.color_trc is not None else 2),
            field_order=int(getattr(ctx, "field_order", 0) or 0),
            profile=ctx.profile or None,
            rotation_quarter_turns=rotation_quarter_turns % 4,
            decoder=ctx.codec.name if ctx.codec else "",
        )

    @property
    def frame_size(self) -> tuple[int, int]:
        """`(height, width)` of the frames as written: the coded size turned
        by the display rotation."""
        if self.rotation_quarter_turns % 2:
            return self.width, self.height
        return self.height, self.width

    def open_codec_context(self, num_threads: int = 1) -> Any:
        """A fresh FFmpeg decoder for these parameters (the CPU backend's, for
        packets that do not come with a container)."""
        ctx = av.CodecContext.create(self.decoder or self.codec, "r")
        if self.extradata:
            ctx.extradata = self.extradata
        ctx.width, ctx.height = self.width, self.height
        if self.pixel_format:
            ctx.pix_fmt = self.pixel_format
        ctx.color_range = self.color_range
        ctx.colorspace = self.colorspace
        ctx.color_primaries = self.color_primaries
        ctx.color_trc = self.color_trc
        ctx.thread_count = num_threads
        ctx.thread_type = "AUTO"
        return ctx


@dataclass(frozen=True)
class Stretch:
    """Packets `[first, stop)` of a bundle, consecutive in the stream.

    `starts_stream`: the first one is the stream's first packet (a rewind
    lands here). `ends_stream`: the last one is the stream's last packet."""

    first: int
    stop: int
    starts_stream: bool = False
    ends_stream: bool = False


@dataclass
class PacketBundle:
    """One plan's compressed packets plus the codec parameters to decode them.

    Attributes:
        params: how to open a decoder.
        description: the source's description (for messages).
        payload: every packet's bytes, concatenated.
        offsets: int64, packet i is `payload[offsets[i]:offsets[i + 1]]`.
        pts, dts, durations: int64 per packet, `NO_TIMESTAMP` (pts/dts) or 0
            (duration) when the packet carries none.
        flags: uint8 per packet: 1 keyframe, 2 discard.
        stretches: the consecutive runs of the stream the packets form.
    """

    params: CodecParameters
    description: str
    payload: bytes = b""
    offsets: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))
    pts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    dts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    durations: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    flags: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint8))
    stretches: list[Stretch] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.pts)

    @property
    def nbytes(self) -> int:
        return len(self.payload)

    def keyframe_pts(self) -> list[int]:
        """pts of every keyframe packet held, in bundle order."""
        keys = (self.flags & _KEY) != 0
        return [int(p) for p in self.pts[keys]]


class BundleWriter:
    """Accumulates packets into stretches, then `finish()` makes the bundle."""

    def __init__(self, params: CodecParameters, description: str) -> None:
        self.params = params
        self._description = description
        self._chunks: list[bytes] = []
        self._rows: list[tuple[int, int, int, int]] = []
        self._identity: list[tuple[int, int, int]] = []
        self._stretches: list[Stretch] = []
        self._open: list[int] | None = None  # [first, starts_stream] of the stretch being written

    def begin(self, starts_stream: bool) -> None:
        self._open = [len(self._rows), int(starts_stream)]

    def add(self, packet: Any) -> None:
        pts = NO_TIMESTAMP if packet.pts is None else int(packet.pts)
        dts = NO_TIMESTAMP if packet.dts is None else int(packet.dts)
        flags = (_KEY if packet.is_keyframe else 0) | (_DISCARD if packet.is_discard else 0)
        data = bytes(packet)
        self._chunks.append(data)
        self._rows.append((pts, dts, int(packet.duration or 0), flags))
        self._identity.append((pts, dts, len(data)))

    def end(self, ends_stream: bool) -> None:
        assert self._open is not None
        first, starts = self._open
        self._open = None
        stop = len(self._rows)
        if stop == first:
            return
        previous = self._stretches[-1] if self._stretches else None
        if previous is not None and not previous.ends_stream:
            merged = self._merge(previous, first, stop, bool(starts), ends_stream)
            if merged:
                return
        self._stretches.append(Stretch(first, stop, bool(starts), ends_stream))

    def _merge(self, previous: Stretch, first: int, stop: int, starts: bool, ends: bool) -> bool:
        """Join a new stretch that begins inside the previous one (overlapping
        groups of a plan): keep one copy of the shared packets."""
        try:
            at = self._identity.index(self._identity[first], previous.first, previous.stop)
        except ValueError:
            return False
        shared = previous.stop - at
        if shared > stop - first or self._identity[at:previous.stop] != self._identity[first:first + shared]:
            return False
        del self._chunks[first:first + shared]
        del self._rows[first:first + shared]
        del self._identity[first:first + shared]
        self._stretches[-1] = Stretch(previous.first, stop - shared, previous.starts_stream, ends)
        return True

    def finish(self) -> PacketBundle:
        sizes = np.array([len(c) for c in self._chunks], dtype=np.int64)
        table = np.array(self._rows, dtype=np.int64).reshape(-1, 4)
        return PacketBundle(
            params=self.params,
            description=self._description,
            payload=b"".join(self._chunks),
            offsets=np.concatenate(([0], np.cumsum(sizes))).astype(np.int64),
            pts=table[:, 0].copy(),
            dts=table[:, 1].copy(),
            durations=table[:, 2].copy(),
            flags=table[:, 3].astype(np.uint8),
            stretches=list(self._stretches),
        )


class BundleSource:
    """Serves a `PacketBundle` as a `PacketSource`.

    `seek(pts)` positions at the bundle's keyframe with the largest pts at or
    before `pts` (a rewind to the stream's start when a stretch starts it);
    `packets()` then yields the rest of that keyframe's stretch as `av.Packet`s.

    Raises (from `seek`):
        MissingPacketsError: the bundle holds no keyframe at or before `pts`.
    """

    def __init__(self, bundle: PacketBundle) -> None:
        self.bundle = bundle
        self.description = bundle.description
        self._payload = memoryview(bundle.payload)
        self._time_base = bundle.params.time_base
        entries: list[tuple[int, int, int]] = []  # (pts, -stretch stop, packet index)
        keys = (bundle.flags & _KEY) != 0
        for stretch in bundle.stretches:
            if stretch.starts_stream:
                entries.append((NO_TIMESTAMP, -stretch.stop, stretch.first))
            for i in range(stretch.first, stretch.stop):
                if keys[i]:
                    stamp = int(bundle.pts[i]) if bundle.pts[i] != NO_TIMESTAMP else int(bundle.dts[i])
                    entries.append((stamp, -stretch.stop, i))
        # Largest pts first wins; among equal ones, the stretch reaching furthest.
        self._entries = sorted(entries)
        self._stop_of = {}
        for stretch in bundle.stretches:
            for i in range(stretch.first, stretch.stop):
                self._stop_of[i] = stretch
        self._position: int | None = None
        self._cut: int | None = None

    def seek(self, pts: int) -> None:
        chosen = None
        for entry in self._entries:
            if entry[0] <= pts:
                if chosen is None or entry[0] > chosen[0]:
                    chosen = entry
            else:
                break
        if chosen is None:
            held = ", ".join(str(p) for p in self.bundle.keyframe_pts()[:8]) or "none"
            raise MissingPacketsError(
                f"The packet bundle of {self.description} holds no keyframe at or before pts {pts} "
                f"(its keyframes: {held}); build the bundle from a plan that covers this request"
            )
        self._position = chosen[2]
        self._cut = None

    def packets(self) -> Iterator[Any]:
        if self._position is None:
            self.seek(NO_TIMESTAMP)
        start = self._position
        assert start is not None
        stretch = self._stop_of[start]
        for i in range(start, stretch.stop):
            yield self._packet(i)
        self._cut = None if stretch.ends_stream else self._last_stamp(stretch)

    def cut_after(self) -> int | None:
        return self._cut

    def _last_stamp(self, stretch: Stretch) -> int:
        stamps = self.bundle.pts[stretch.first:stretch.stop]
        stamps = stamps[stamps != NO_TIMESTAMP]
        return int(stamps.max()) if len(stamps) else NO_TIMESTAMP

    def _packet(self, i: int) -> Any:
        bundle = self.bundle
        start, stop = int(bundle.offsets[i]), int(bundle.offsets[i + 1])
        packet = padded_packet(self._payload[start:stop])
        pts, dts = int(bundle.pts[i]), int(bundle.dts[i])
        packet.pts = None if pts == NO_TIMESTAMP else pts
        packet.dts = None if dts == NO_TIMESTAMP else dts
        packet.duration = int(bundle.durations[i])
        packet.time_base = self._time_base
        flags = int(bundle.flags[i])
        packet.is_keyframe = bool(flags & _KEY)
        if flags & _DISCARD:
            packet.opaque = DISCARD_MARK
        return packet
