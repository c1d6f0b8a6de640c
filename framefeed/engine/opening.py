"""Opening a stream for decoding: source -> demuxer -> metadata -> timeline,
plus the plain values (codec parameters, disposable-packet test) that plans,
bundles and backends are built from. Shared by `VideoDecoder` and by worker
processes that only plan and demux (`framefeed.engine.bundling.ship_request`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from framefeed._warnings import warn_user
from framefeed.engine.backends.cpu_fallback.backend import configure_decoder_threads
from framefeed.engine.demux.custom_frame_mappings import FrameMappings, index_from_mappings
from framefeed.engine.demux.demuxer import STREAM_START, Demuxer
from framefeed.engine.demux.disposable import DisposableTest, disposable_test_for
from framefeed.engine.demux.frame_index import build_frame_index
from framefeed.engine.demux.header_timing import check_header_timing
from framefeed.engine.demux.metadata import VideoStreamMetadata, header_metadata, with_content
from framefeed.engine.packets import CodecParameters
from framefeed.engine.source import resolve_source
from framefeed.engine.timeline import ApproximateTimeline, ExactTimeline
from framefeed.errors import VideoOpenError


@dataclass
class OpenedStream:
    """An opened video stream and what decoding it needs.

    Attributes:
        demuxer: the open container (a `PacketSource`); close it when done.
        metadata: header metadata (plus content in exact mode).
        timeline: maps requests to targets and seek points (plain values).
        params: codec parameters (plain values: picklable).
        disposable: which packets nothing references (None: unknown).
    """

    demuxer: Demuxer
    metadata: VideoStreamMetadata
    timeline: ExactTimeline | ApproximateTimeline
    params: CodecParameters
    disposable: DisposableTest | None


def open_stream(source: Any, stream_index: int | None = None, seek_mode: str = "exact",
                num_threads: int = 1, mappings: FrameMappings | None = None) -> OpenedStream:
    """Open `source` (anything `VideoDecoder` accepts) and index it (exact
    mode, from `mappings` when given) or read its header (approximate mode).

    Raises:
        VideoOpenError, FileNotFoundError, TypeError, ValueError: as `VideoDecoder`.
    """
    demuxer = Demuxer(resolve_source(source), stream_index)
    try:
        return open_demuxed(demuxer, seek_mode, num_threads, mappings)
    except BaseException:
        demuxer.close()
        raise


def open_demuxed(demuxer: Demuxer, seek_mode: str, num_threads: int,
                 mappings: FrameMappings | None = None) -> OpenedStream:
    """`open_stream` on an open demuxer. `seek_mode` "exact" or
    "custom_frame_mappings" index the stream (from `mappings` when given:
    torchcodec's frame table replaces the scan); "approximate" reads the header."""
    configure_decoder_threads(demuxer.stream, num_threads)
    rotation = stream_rotation(demuxer)
    metadata = header_metadata(demuxer.stream, demuxer.container, rotation)
    if seek_mode != "approximate":
        index = build_frame_index(demuxer) if mappings is None else index_from_mappings(demuxer, mappings)
        metadata = with_content(metadata, index)
        timeline: ExactTimeline | ApproximateTimeline = ExactTimeline(index, metadata.average_fps or 0.0)
    else:
        if not metadata.num_frames or metadata.end_stream_seconds is None:
            raise VideoOpenError(
                f"The header of {demuxer.source.description} gives neither a frame count nor a "
                "duration and frame rate; use seek_mode='exact'"
            )
        timeline = ApproximateTimeline.from_stream(metadata, demuxer.stream)
        metadata, timeline = _checked_against_packets(demuxer, metadata, timeline)
    turns = round((rotation or 0.0) / 90.0) % 4
    params = CodecParameters.from_stream(demuxer.stream, turns)
    return OpenedStream(demuxer, metadata, timeline, params, disposable_test_for(params.codec, params.extradata))


def _checked_against_packets(demuxer: Demuxer, metadata: VideoStreamMetadata,
                             timeline: ApproximateTimeline) -> tuple[VideoStreamMetadata, ApproximateTimeline]:
    """Approximate mode's header grid, or the packets' timing where the header
    contradicts them (`header_timing`), with a warning."""
    span = demuxer.container.duration / 1_000_000 if demuxer.container.duration else metadata.duration_seconds
    timing = check_header_timing(demuxer, timeline.rate, timeline.begin, metadata.num_frames, timeline.variable_rate,
                                 span)
    if timing is None:
        return _counted_by_duration(metadata, timeline)
    begin = float(timing.start_pts * demuxer.time_base)
    duration = timing.num_frames / float(timing.rate)
    warn_user(
        f"In seek_mode='approximate', {demuxer.description}: {timing.reason}. Frame indices follow the "
        f"packets' timing ({float(timing.rate):.6g} fps from {begin:.6g} s, {timing.num_frames} frames); "
        "use seek_mode='exact' for exact indices."
    )
    metadata = dataclasses.replace(metadata, num_frames=timing.num_frames, average_fps=float(timing.rate),
                                   begin_stream_seconds=begin, duration_seconds=duration,
                                   end_stream_seconds=begin + duration)
    return metadata, timeline.with_rate(metadata, timing.rate, timing.start_pts, timing.constant_rate)


def _counted_by_duration(metadata: VideoStreamMetadata,
                         timeline: ApproximateTimeline) -> tuple[VideoStreamMetadata, ApproximateTimeline]:
    """On a constant-rate stream, a frame count larger than the header's own
    duration holds gives way to the duration's count: MP4 counts every sample,
    also those an edit list discards, so indices past the presented frames
    would have no frame."""
    rate, duration, count = timeline.rate, metadata.duration_seconds, metadata.num_frames
    if timeline.variable_rate or not rate or not duration or not count:
        return metadata, timeline
    held = round(duration * float(rate))
    if not 1 <= held < count:
        return metadata, timeline
    metadata = dataclasses.replace(metadata, num_frames=held)
    return metadata, timeline.with_metadata(metadata)


def stream_rotation(demuxer: Demuxer) -> float | None:
    """Counter-clockwise display rotation in degrees, None when there is none.

    MP4/MOV: from the track header, without decoding. Other containers: PyAV
    does not expose stream side data, so decode the first frame and read the
    display matrix FFmpeg attached to it.
    """
    if demuxer.is_isobmff:
        tables = demuxer.track_tables()
        if tables is not None:
            return tables.rotation_degrees
    codec = demuxer.stream.codec_context
    try:
        for packet in demuxer.packets():
            frames = codec.decode(packet)
            if frames:
                rotation = frames[0].rotation
                return float(rotation) if rotation else None
        return None
    except Exception as error:  # undecodable first frame: no rotation known
        if type(error).__module__.startswith("av"):
            return None
        raise
    finally:
        demuxer.seek(STREAM_START)
