"""Does the header's frame timing agree with the stream's packets?

Approximate mode trusts the header: index i is the frame displayed at
`begin + (i + 1/2) / rate` for `num_frames` frames. A damaged or hostile
header contradicts the packets it describes: an MP4 edit list whose segment
lasts one tick (FFmpeg then discards all packets but one), a media timescale
of 0xFFFFFFFF, a Matroska DefaultDuration edited to 1 ns or 0.5 s. Trusted, it
sends every index to the same frame, and iterating pays a seek per frame.

`check_header_timing` compares the header's grid with the first packets'
timestamps (on MP4/MOV the sample table FFmpeg already loaded: no I/O; on
other containers the first packets, then a rewind) and returns what
approximate mode should use:

- the header agrees (the frame interval within a factor of 1.5 of the
  packets' on a constant-rate stream, 10 on a variable-rate one, and no
  sampled frame beyond the header's end): `None`;
- it does not, and the packets' timing is usable: `PacketTiming` (their rate
  and start, the frame count over the container's duration), which the caller
  uses with a warning;
- the packets tell nothing usable either (most are discarded, or their rate
  is not a video rate): `VideoOpenError`, naming both, suggesting exact mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from statistics import median

from framefeed.engine.demux.demuxer import STREAM_START, Demuxer
from framefeed.errors import VideoOpenError

SAMPLE_PACKETS = 32
# A video frame rate: one frame a minute to a thousand a second.
_MIN_RATE, _MAX_RATE = Fraction(1, 60), Fraction(1000)
_CONSTANT_RATE_TOLERANCE = 1.5
_VARIABLE_RATE_TOLERANCE = 10.0
_REORDER_MARGIN = 4


@dataclass(frozen=True)
class PacketTiming:
    """The packets' timing, for approximate mode to use instead of the header's.

    Attributes:
        rate: frames per second, from the median gap between sampled frames.
        start_pts: the first sampled frame's pts (stream time base).
        num_frames: frames over the container's duration at `rate`.
        reason: what in the header contradicts the packets.
        constant_rate: every sampled frame interval is the same.
    """

    rate: Fraction
    start_pts: int
    num_frames: int
    reason: str
    constant_rate: bool


def _sample(demuxer: Demuxer) -> tuple[list[int], int, int]:
    """Sorted timestamps of the first sampled frames that are shown, the number
    of sampled packets, and how many of those the container discards."""
    stamps, sampled, discarded = [], 0, 0
    if demuxer.is_isobmff:
        entries = demuxer.stream.index_entries  # decode timestamps: same gaps on a constant-rate stream
        for i in range(min(len(entries), SAMPLE_PACKETS)):
            entry = entries[i]
            sampled += 1
            if entry.is_discard:
                discarded += 1
            else:
                stamps.append(int(entry.timestamp))
        return sorted(stamps), sampled, discarded
    try:
        for packet in demuxer.packets():
            sampled += 1
            stamp = packet.pts if packet.pts is not None else packet.dts
            if getattr(packet, "is_discard", False):
                discarded += 1
            elif stamp is not None:
                stamps.append(int(stamp))
            if sampled >= SAMPLE_PACKETS:
                break
    finally:
        demuxer.seek(STREAM_START)
    return sorted(stamps), sampled, discarded


def check_header_timing(demuxer: Demuxer, rate: Fraction | None, begin_seconds: float, num_frames: int | None,
                        variable_rate: bool, span_seconds: float | None) -> PacketTiming | None:
    """See the module docstring. `rate`, `begin_seconds` and `num_frames` are
    the header's grid; `span_seconds` the container's duration (None: unknown).

    Raises:
        VideoOpenError: header and packets disagree and the packets' timing is unusable.
    """
    if not rate or not num_frames or num_frames < 2:
        return None
    stamps, sampled, discarded = _sample(demuxer)
    time_base = demuxer.time_base
    header = f"{float(rate):.6g} fps over {num_frames} frames from {begin_seconds:.6g} s"
    description = demuxer.description
    if sampled >= 4 and discarded * 2 > sampled:
        raise VideoOpenError(
            f"The header of {description} promises {header}, but the container discards {discarded} of its "
            f"first {sampled} packets (an edit list that shows almost nothing): its timing cannot be trusted "
            "without reading every packet; use seek_mode='exact'"
        )
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False) if b > a]
    if len(gaps) < 3:
        return None  # too few frames to judge: trust the header
    gap = int(median(gaps)) * time_base
    packet_rate = 1 / gap if gap > 0 else None
    tolerance = _VARIABLE_RATE_TOLERANCE if variable_rate else _CONSTANT_RATE_TOLERANCE
    ratio = float(packet_rate / rate) if packet_rate else math.inf
    header_end = begin_seconds + num_frames / float(rate)
    beyond_end = float(stamps[min(len(stamps), num_frames) - 1] * time_base) > header_end + float(gap)
    if 1 / tolerance <= ratio <= tolerance and not beyond_end:
        return None
    reason = (f"its packets are {float(packet_rate):.6g} frames per second" if packet_rate
              else "its packets carry no increasing timestamps")
    if beyond_end:
        reason += f" and run past the header's end ({header_end:.6g} s)"
    if packet_rate is None or not _MIN_RATE <= packet_rate <= _MAX_RATE or not span_seconds:
        raise VideoOpenError(
            f"The header of {description} promises {header}, but {reason}: neither timing can place "
            "frame indices; use seek_mode='exact'"
        )
    # Constant rate: every gap the same, give or take a tick of rounding. The
    # sample's last frames are left out: reordering (B-frames) can keep the
    # frame between two of them beyond the sample.
    step = int(median(gaps))
    settled = gaps[:-_REORDER_MARGIN] if len(gaps) > 2 * _REORDER_MARGIN else gaps
    constant = all(abs(g - step) <= 1 for g in settled)
    return PacketTiming(packet_rate, stamps[0], max(1, round(span_seconds * float(packet_rate))),
                        f"the header promises {header}, but {reason}", constant)
