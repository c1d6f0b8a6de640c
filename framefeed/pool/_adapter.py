"""The pool's one link to framefeed's decoding engine.

Three steps, each on its own kind of thread:

- `open_video` (a demux thread): the container, stream metadata and, in
  exact mode, the frame index; everything a plan needs, no decoder.
- `plan_work` (a demux thread): the request checked against the video and
  turned into targets and an output size, with `VideoDecoder`'s checks and
  error messages, so the pool fails a request exactly where a decoder would.
- `execute` (a decode session): packets -> the session's backend -> output
  slots, through `DecodeSession`: only keyframe intervals that hold targets
  are decoded, the pass stops after the last target, and pictures no target
  references are skipped (GOP-exact work, as in `VideoDecoder`).

`SessionDecoders` is a session's decoder owner: on CUDA a decoder cache of
its own whose NVDEC decoders run on the session's CUDA stream and are reused
across videos of the same codec, size and surface format.

This module is written against today's engine (`DecodeSession` and
`open_backend`); when decode plans, packet sources and an executor exist as
values, only this module changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from framefeed.backend_selection import open_backend
from framefeed.cpu_fallback.backend import configure_decoder_threads
from framefeed.decoders._cpu_fallback_status import CpuFallbackStatus
from framefeed.decoders._video_decoder import _stream_rotation
from framefeed.demux.demuxer import Demuxer
from framefeed.demux.frame_index import build_frame_index
from framefeed.demux.metadata import VideoStreamMetadata, header_metadata, with_content
from framefeed.errors import FrameTimeOutOfRangeError, VideoOpenError
from framefeed.plan import Target
from framefeed.pool._request import DecodeRequest
from framefeed.session import DecodeSession, OutputBuffer
from framefeed.source import resolve_source
from framefeed.timeline import ApproximateTimeline, ExactTimeline


@dataclass(eq=False)
class OpenedVideo:
    """An opened video stream, ready to plan and decode (one thread at a time)."""

    demuxer: Demuxer
    metadata: VideoStreamMetadata
    timeline: ExactTimeline | ApproximateTimeline
    quarter_turns: int

    @property
    def num_frames(self) -> int:
        return int(self.metadata.num_frames or 0)

    @property
    def description(self) -> str:
        return self.demuxer.source.description

    @property
    def frame_shape(self) -> tuple[int, int]:
        """(height, width) of output frames (after rotation)."""
        return int(self.metadata.height or 0), int(self.metadata.width or 0)

    def close(self) -> None:
        self.demuxer.close()


def open_video(source: Any, *, seek_mode: str, stream_index: int | None, num_ffmpeg_threads: int) -> OpenedVideo:
    """Open `source` as `VideoDecoder(source, seek_mode=..., stream_index=...)` would.

    Raises what `VideoDecoder` raises for the source (FileNotFoundError,
    VideoOpenError, TypeError, ValueError).
    """
    demuxer = Demuxer(resolve_source(source), stream_index)
    try:
        configure_decoder_threads(demuxer.stream, num_ffmpeg_threads)
        rotation = _stream_rotation(demuxer)
        metadata = header_metadata(demuxer.stream, demuxer.container, rotation)
        if seek_mode == "exact":
            index = build_frame_index(demuxer)
            metadata = with_content(metadata, len(index), index.begin_seconds, index.end_seconds)
            timeline: ExactTimeline | ApproximateTimeline = ExactTimeline(index)
        else:
            if not metadata.num_frames or metadata.end_stream_seconds is None:
                raise VideoOpenError(
                    f"The header of {demuxer.source.description} gives neither a frame count nor a "
                    "duration and frame rate; use seek_mode='exact'"
                )
            timeline = ApproximateTimeline(metadata, demuxer)
        turns = round((rotation or 0.0) / 90.0) % 4
        return OpenedVideo(demuxer, metadata, timeline, turns)
    except BaseException:
        demuxer.close()
        raise


@dataclass(eq=False)
class Work:
    """A planned request: targets and output size.

    `count` output slots are filled from `targets`; an approximate-mode
    whole-file request decodes `time_range` instead, and `count` is then the
    header's frame count (an estimate for the in-flight budget).
    """

    video: OpenedVideo
    targets: list[Target]
    count: int
    time_range: tuple[float, float] | None = None

    @property
    def frame_bytes(self) -> int:
        height, width = self.video.frame_shape
        return height * width * 3


def plan_work(video: OpenedVideo, request: DecodeRequest) -> Work:
    """The request's targets, checked against the video as `VideoDecoder` checks.

    Raises:
        IndexError: an index outside `[-len, len)`.
        FrameTimeOutOfRangeError: a time outside `[begin_stream_seconds, end_stream_seconds)`.
    """
    timeline, count = video.timeline, video.num_frames
    kind = request.kind
    if kind == "indices":
        positions = [_check_index(i, count) for i in request.indices or ()]
    elif kind == "range":
        positions = list(range(*slice(request.start, request.stop, request.step).indices(count)))
    elif kind == "seconds":
        times = [_check_played_time(t, video.metadata) for t in request.seconds or ()]
        return Work(video, timeline.targets_for_times(times) if times else [], len(times))
    elif timeline.exact:
        positions = list(range(count))
    else:  # approximate mode has no index to count the frames: decode the time range
        begin = float(video.metadata.begin_stream_seconds or 0.0)
        end = float(video.metadata.end_stream_seconds or 0.0)
        if begin >= end:
            return Work(video, [], 0)
        return Work(video, [], count, time_range=(begin, end))
    return Work(video, timeline.targets_for_indices(positions) if positions else [], len(positions))


def _check_index(index: int, count: int) -> int:
    position = index + count if index < 0 else index
    if not 0 <= position < count:
        raise IndexError(
            f"Invalid frame index={index}: it must be in [-{count}, {count}) (the stream has {count} frames)"
        )
    return position


def _check_played_time(when: float, metadata: VideoStreamMetadata) -> float:
    begin = float(metadata.begin_stream_seconds or 0.0)
    end = float(metadata.end_stream_seconds or 0.0)
    if not begin <= when < end:
        raise FrameTimeOutOfRangeError(
            f"Invalid pts in seconds: {when}. It must be greater than or equal to {begin} and less than {end}."
        )
    return when


@dataclass(eq=False)
class Opened:
    """A backend a session opened for one video."""

    backend: Any
    status: CpuFallbackStatus
    reused: bool

    def release(self) -> None:
        """Give an NVDEC decoder back to its session's cache (CPU decoders need nothing)."""
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()


class SessionDecoders:
    """The decoders one session owns.

    NVDEC decoders come from a cache of the session's own, created on the
    session's CUDA stream, and go back to it after each request; the next
    video with the same codec, size and surface format reuses one. CPU
    decoders are FFmpeg's, opened per video (cheap) and never reused.

    Attributes:
        created: NVDEC decoders created.
        reused: requests served by a reused NVDEC decoder.
        cpu_opened: FFmpeg decoders opened (one per request decoded on the CPU).
    """

    def __init__(self, device: torch.device, stream: Any, capacity: int) -> None:
        self.device = device
        self._stream = stream
        self._capacity = capacity
        self._cache: Any = None
        self.created = 0
        self.reused = 0
        self.cpu_opened = 0

    def _nvdec_cache(self) -> Any:
        if self._cache is None and self.device.type == "cuda":
            from framefeed.gpu_decode import new_decoder_cache  # lazy: optional GPU libraries

            try:
                self._cache = new_decoder_cache(self.device.index or 0, self._stream, self._capacity)
            except RuntimeError:  # PyNvVideoCodec unusable: every stream falls back to the CPU
                self._cache = False
        return self._cache or None

    def open(self, video: OpenedVideo) -> Opened:
        cache = self._nvdec_cache()
        before = (cache.created, cache.reused) if cache is not None else (0, 0)
        selection = open_backend(video.demuxer, video.metadata, self.device,
                                 rotation_quarter_turns=video.quarter_turns, nvdec_cache=cache)
        reused = False
        if cache is not None and getattr(selection.backend, "name", "") == "nvdec":
            reused = cache.reused > before[1]
            self.created += cache.created - before[0]
            self.reused += cache.reused - before[1]
        else:
            self.cpu_opened += 1
        return Opened(selection.backend, selection.status, reused)

    def idle_count(self) -> int:
        """NVDEC decoders waiting in this session's cache."""
        return self._cache.idle_count() if self._cache else 0

    def close(self) -> None:
        """Destroy every idle decoder (they all are, between requests)."""
        if self._cache:
            self._cache.clear()


def execute(work: Work, backend: Any, dimension_order: str) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Decode `work` with `backend`; (pixels in `dimension_order` on the
    backend's device, pts seconds, durations seconds)."""
    video = work.video
    height, width = video.frame_shape
    channels_first = backend.channels_first_output and dimension_order == "NCHW"

    def allocate(count: int) -> OutputBuffer:
        return OutputBuffer.allocate(count, height, width, backend.output_device, channels_first)

    session = DecodeSession(video.demuxer, backend, video.timeline, fps_hint=video.metadata.average_fps or 0.0)
    try:
        if work.time_range is not None:
            out = session.decode_time_range(*work.time_range, allocate)
        else:
            out = allocate(work.count)
            if work.targets:
                session.decode(work.targets, out)
    finally:
        session.close()
    return out.as_order(dimension_order), out.pts_seconds, out.duration_seconds
