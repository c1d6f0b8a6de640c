"""`VideoStreamMetadata`: what the header says, what a scan found, and the
values derived from both.

Header fields are None when the container does not carry them. Content fields
are filled only in exact mode (after the packet index is built).

Every derived time and rate is computed from integer timestamps, the time
base and the header's frame rate as exact fractions and converted to float
once: a 25 fps, 345-frame stream has `average_fps == 25.0` and
`duration_seconds == 13.8`, not 25.000000000000004 and 13.799999999999999
(which would, for instance, make the samplers' default spacing `1 / average_fps`
fall just short of the next frame's timestamp).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np

from framefeed.engine.demux.demuxer import codec_name

if TYPE_CHECKING:
    from framefeed.engine.demux.frame_index import FrameIndex

# FFmpeg's names for the colour enums (libavutil/pixdesc.c); the unspecified
# value (2) maps to None.
_COLOR_SPACES = {
    0: "gbr", 1: "bt709", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 8: "ycgco",
    9: "bt2020nc", 10: "bt2020c", 11: "smpte2085", 12: "chroma-derived-nc",
    13: "chroma-derived-c", 14: "ictcp", 15: "ipt-c2", 16: "ycgco-re", 17: "ycgco-ro",
}
_COLOR_PRIMARIES = {
    1: "bt709", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 8: "film",
    9: "bt2020", 10: "smpte428", 11: "smpte431", 12: "smpte432", 22: "ebu3213",
}
_COLOR_TRANSFERS = {
    1: "bt709", 4: "gamma22", 5: "gamma28", 6: "smpte170m", 7: "smpte240m", 8: "linear",
    9: "log100", 10: "log316", 11: "iec61966-2-4", 12: "bt1361e", 13: "iec61966-2-1",
    14: "bt2020-10", 15: "bt2020-12", 16: "smpte2084", 17: "smpte428", 18: "arib-std-b67",
}


@dataclass
class VideoStreamMetadata:
    """Metadata of one video stream. Times in seconds, rates in frames/s.

    `width`/`height` are the dimensions of the frames framefeed returns, i.e.
    after the display-matrix rotation (`rotation`, counter-clockwise degrees).
    """

    duration_seconds_from_header: float | None
    begin_stream_seconds_from_header: float | None
    bit_rate: float | None
    codec: str | None
    stream_index: int
    width: int | None
    height: int | None
    num_frames_from_header: int | None
    average_fps_from_header: float | None
    pixel_aspect_ratio: Fraction | None
    rotation: float | None
    color_primaries: str | None
    color_space: str | None
    color_transfer_characteristic: str | None
    pixel_format: str | None
    num_frames_from_content: int | None = None
    begin_stream_seconds_from_content: float | None = None
    end_stream_seconds_from_content: float | None = None
    # Computed from the fields above (see `finalize`).
    duration_seconds: float | None = None
    begin_stream_seconds: float | None = None
    end_stream_seconds: float | None = None
    num_frames: int | None = None
    average_fps: float | None = None
    # What the stream carries (torchcodec 0.17's `StreamMetadata.media_type`): always "video" here.
    media_type: str = "video"

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}:"]
        lines += [f"  {f.name}: {getattr(self, f.name)}" for f in dataclasses.fields(self)]
        return "\n".join(lines) + "\n"


def _exact_seconds(value: int | None, time_base: Fraction | None) -> Fraction | None:
    if value is None or time_base is None:
        return None
    return value * Fraction(time_base)


def _float(value: Fraction | None) -> float | None:
    return None if value is None else float(value)


def header_metadata(stream: Any, container: Any, rotation: float | None) -> VideoStreamMetadata:
    """Metadata from the container header alone (no packets read)."""
    ctx = stream.codec_context
    time_base = stream.time_base
    width, height = ctx.width or None, ctx.height or None
    if rotation is not None and round(rotation / 90) % 2 == 1 and width and height:
        width, height = height, width
    base_rate = Fraction(stream.base_rate) if stream.base_rate else None
    sar = getattr(stream, "sample_aspect_ratio", None) or getattr(ctx, "sample_aspect_ratio", None)
    bit_rate = ctx.bit_rate or None
    fmt = ctx.format
    duration = _exact_seconds(stream.duration, time_base)
    begin = _exact_seconds(stream.start_time, time_base)
    meta = VideoStreamMetadata(
        duration_seconds_from_header=_float(duration),
        begin_stream_seconds_from_header=_float(begin),
        bit_rate=float(bit_rate) if bit_rate else None,
        codec=codec_name(stream) or None,
        stream_index=stream.index,
        width=width,
        height=height,
        num_frames_from_header=stream.frames or None,
        average_fps_from_header=_float(base_rate),
        pixel_aspect_ratio=Fraction(sar) if sar else None,
        rotation=rotation,
        color_primaries=_COLOR_PRIMARIES.get(ctx.color_primaries),
        color_space=_COLOR_SPACES.get(ctx.colorspace),
        color_transfer_characteristic=_COLOR_TRANSFERS.get(ctx.color_trc),
        pixel_format=fmt.name if fmt is not None else None,
    )
    return finalize_approximate(meta, _container_span(container, begin), rate=base_rate, duration=duration,
                                begin=begin)


def _container_span(container: Any, begin: Fraction | None) -> Fraction | None:
    """The container-level duration (exact, in seconds) as a span from the stream's start.

    FFmpeg reports a span for most formats, but Matroska's segment duration
    counts from timestamp 0, so a stream starting late must subtract its start.
    """
    if not container.duration:
        return None
    seconds = Fraction(container.duration, 1_000_000)
    format_name = container.format.name if container.format else ""
    if "matroska" in format_name and begin:
        seconds = max(seconds - begin, Fraction(0))
    return seconds


def finalize_approximate(meta: VideoStreamMetadata, container_duration: Fraction | float | None, *,
                         rate: Fraction | None = None, duration: Fraction | None = None,
                         begin: Fraction | None = None) -> VideoStreamMetadata:
    """Fill the computed fields from the header fields (approximate mode).

    `rate`, `duration` and `begin` are the header's exact values (frames/s,
    seconds); when omitted they are taken from `meta`'s floats.
    """
    if rate is None and meta.average_fps_from_header:
        rate = Fraction(meta.average_fps_from_header)
    if duration is None and meta.duration_seconds_from_header is not None:
        duration = Fraction(meta.duration_seconds_from_header)
    if begin is None:
        begin = Fraction(meta.begin_stream_seconds_from_header or 0)
    if duration is None and meta.num_frames_from_header and rate:
        duration = meta.num_frames_from_header / rate
    if duration is None and container_duration is not None:
        duration = Fraction(container_duration)
    num_frames = meta.num_frames_from_header
    if num_frames is None and rate and duration is not None:
        num_frames = int(rate * duration)
    return dataclasses.replace(
        meta,
        duration_seconds=_float(duration),
        begin_stream_seconds=float(begin),
        end_stream_seconds=_float(begin + duration) if duration is not None else None,
        num_frames=num_frames,
        average_fps=_float(rate),
    )


def with_content(meta: VideoStreamMetadata, index: FrameIndex) -> VideoStreamMetadata:
    """Add what a packet scan found (exact mode) and recompute the derived fields.

    The stream spans from the first frame's pts to the latest end (pts +
    duration) of any frame, as `FrameIndex.begin_seconds`/`end_seconds` say,
    but computed on the integer timestamps: duration and average frame rate
    are exact fractions rounded to float once.
    """
    time_base = Fraction(index.time_base)
    num_frames = len(index)
    begin = int(index.pts[0]) * time_base
    end = int(np.max(index.pts + index.durations)) * time_base
    span = end - begin
    return dataclasses.replace(
        meta,
        num_frames_from_content=num_frames,
        begin_stream_seconds_from_content=float(begin),
        end_stream_seconds_from_content=float(end),
        num_frames=num_frames,
        begin_stream_seconds=float(begin),
        end_stream_seconds=float(end),
        duration_seconds=float(span),
        average_fps=float(num_frames / span) if span > 0 else meta.average_fps_from_header,
    )
