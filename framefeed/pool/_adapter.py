"""The pool's link to framefeed's decoding engine: decode work as values.

Demux threads:
- `open_video`: the container, stream metadata, codec parameters and, in
  exact mode, the frame index (`framefeed.engine.opening`); no decoder.
- `resolve_pipeline` and `plan_work`: the request's decoder transforms for
  the video's frame size, and the request checked against the video with
  `VideoDecoder`'s checks and messages, as a `DecodePlan` plus its output size.
- `ship`: the plan's compressed packets read into a `PacketBundle`
  (`framefeed.engine.bundling`), after which the file is closed. Exact mode ships
  only the keyframe intervals that hold targets, up to the last target, and
  leaves out pictures nothing references (GOP-exact work).

Decode sessions:
- `SessionDecoders.open`: a backend from the registry (`framefeed.engine.backends.registry`)
  for the bundle's codec parameters, NVDEC decoders from the session's own
  owner (`gpu_decode.NvdecDecoders`), which reuses one for the next video of
  the same codec, size and surface format;
- `execute`: the executor (`framefeed.engine.executor.execute_plan`) runs the plan
  against the bundle into the output slots.

Sessions never touch a container, and everything between the stages is a
plain value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from framefeed import _arguments as args
from framefeed.engine.backends.registry import BackendContext, open_backend
from framefeed.engine.backends.status import CpuFallbackStatus
from framefeed.engine.backends.transformed import with_transforms
from framefeed.engine.demux.disposable import DisposableTest, disposable_test_for
from framefeed.engine.demux.metadata import VideoStreamMetadata
from framefeed.engine.executor import OutputBuffer, execute_plan
from framefeed.engine.opening import OpenedStream, open_stream
from framefeed.engine.packets import BundleSource, CodecParameters, PacketBundle
from framefeed.engine.plan import DecodePlan, build_plan, time_range_plan
from framefeed.pool._request import DecodeRequest
from framefeed.transforms import TransformPipeline, resolve_transforms


@dataclass(eq=False)
class OpenedVideo:
    """An opened video stream, ready to plan and ship (one thread at a time)."""

    stream: OpenedStream

    @property
    def metadata(self) -> VideoStreamMetadata:
        return self.stream.metadata

    @property
    def num_frames(self) -> int:
        return int(self.stream.metadata.num_frames or 0)

    @property
    def description(self) -> str:
        return self.stream.demuxer.source.description

    def close(self) -> None:
        self.stream.demuxer.close()


def open_video(source: Any, *, seek_mode: str, stream_index: int | None, num_ffmpeg_threads: int) -> OpenedVideo:
    """Open `source` as `VideoDecoder(source, seek_mode=..., stream_index=...)` would.

    Raises what `VideoDecoder` raises for the source (FileNotFoundError,
    VideoOpenError, TypeError, ValueError).
    """
    return OpenedVideo(open_stream(source, stream_index, seek_mode, num_ffmpeg_threads))


@dataclass(eq=False)
class Work:
    """A planned request: its plan, output size and, once shipped, its packets.

    `count` is the plan's output slots; for a time-range plan (an
    approximate-mode whole file, whose frame count only decoding finds) it
    is the header's frame count, an estimate for the in-flight budget.
    `pipeline` is the request's decoder transforms, resolved for this video;
    `dtype` the pixels' dtype (the request's `output_dtype`, "auto" resolved).
    """

    description: str
    plan: DecodePlan
    count: int
    pipeline: TransformPipeline
    disposable: DisposableTest | None
    params: CodecParameters
    bundle: PacketBundle | None = None
    dtype: torch.dtype = torch.uint8

    @property
    def frame_shape(self) -> tuple[int, int]:
        """(height, width) of the frames returned (after rotation and transforms)."""
        return self.pipeline.output_size

    @property
    def frame_bytes(self) -> int:
        return self.frame_shape[0] * self.frame_shape[1] * 3 * self.dtype.itemsize


def resolve_pipeline(video: OpenedVideo, request: DecodeRequest, crop_seed: int | None = None) -> TransformPipeline:
    """The request's transforms for this video's frame size, as `VideoDecoder`
    resolves them; random crop windows come from torch's global RNG, or from a
    generator seeded with `crop_seed` (off the caller's thread)."""
    metadata = video.metadata
    generator = None
    if crop_seed is not None:
        generator = torch.Generator()
        generator.manual_seed(crop_seed)
    return resolve_transforms(request.transforms, int(metadata.height or 0), int(metadata.width or 0), generator)


def plan_work(video: OpenedVideo, request: DecodeRequest, pipeline: TransformPipeline) -> Work:
    """The request as a plan, checked against the video as `VideoDecoder` checks.

    Raises:
        IndexError: an index outside `[-len, len)`.
        FrameTimeOutOfRangeError: a time outside `[begin_stream_seconds, end_stream_seconds)`.
    """
    timeline, count, metadata = video.stream.timeline, video.num_frames, video.metadata
    dtype = args.resolve_output_dtype(request.output_dtype, video.stream.params.pixel_format)
    begin = float(metadata.begin_stream_seconds or 0.0)
    end = float(metadata.end_stream_seconds or 0.0)
    kind = request.kind
    if kind == "seconds":
        times = [args.check_played_time(t, begin, end, batch=True) for t in request.seconds or ()]
        plan = build_plan(timeline.targets_for_times(times) if times else [], timeline, len(times))
        return _work(video, plan, len(times), pipeline, dtype)
    if kind == "indices":
        positions = args.frame_indices(list(request.indices or ()), count)
    elif kind == "range":
        positions = list(args.index_range(request.start, request.stop, request.step, count))
    elif timeline.exact:
        positions = list(range(count))
    else:  # approximate mode has no index to count the frames: decode the time range
        if begin >= end:
            return _work(video, build_plan([], timeline, 0), 0, pipeline, dtype)
        return _work(video, time_range_plan(begin, end, timeline), count, pipeline, dtype)
    plan = build_plan(timeline.targets_for_indices(positions) if positions else [], timeline, len(positions))
    return _work(video, plan, len(positions), pipeline, dtype)


def _work(video: OpenedVideo, plan: DecodePlan, count: int, pipeline: TransformPipeline, dtype: torch.dtype) -> Work:
    return Work(video.description, plan, count, pipeline, video.stream.disposable, video.stream.params, dtype=dtype)


def shipped_work(plan: DecodePlan, bundle: PacketBundle, pipeline: TransformPipeline, description: str,
                 output_dtype: torch.dtype | str = torch.uint8) -> Work:
    """Work planned and demuxed elsewhere (a `ClipDataset` worker, `ship_request`):
    only decoding is left. A time-range plan counts 0 frames in flight.
    `output_dtype` as `VideoDecoder` takes it ("auto" decided by the bundle's pixel format)."""
    params = bundle.params
    disposable = disposable_test_for(params.codec, params.extradata)
    dtype = args.resolve_output_dtype(args.output_dtype(output_dtype), params.pixel_format)
    return Work(description, plan, plan.slot_count, pipeline, disposable, params, bundle, dtype=dtype)


def ship(work: Work, video: OpenedVideo) -> None:
    """Read the packets `work.plan` needs into `work.bundle`."""
    from framefeed.engine.bundling import (
        build_bundle,  # here: it imports the demuxer's helpers lazily too
    )

    plan = work.plan
    work.bundle = build_bundle(plan, video.stream.demuxer, work.params, work.disposable if plan.exact else None)


@dataclass(eq=False)
class Opened:
    """A backend a session opened for one request."""

    backend: Any
    status: CpuFallbackStatus
    reused: bool

    def release(self) -> None:
        """Close the backend: an NVDEC decoder goes back to its session's owner."""
        self.backend.close()


class SessionDecoders:
    """The decoders one session owns.

    On CUDA an `NvdecDecoders` owner of the session's own: NVDEC decoders are
    created on first need, given back after each request and reused for the
    next video with the same codec, size and surface format. CPU decoders
    (FFmpeg's, also the fallback for streams NVDEC cannot decode exactly)
    are opened per request from the codec parameters: that costs
    microseconds, and a decoder is bound to its stream's extradata.

    Attributes:
        created: NVDEC decoders created.
        reused: requests served by a reused NVDEC decoder.
        cpu_opened: FFmpeg decoders opened.
    """

    def __init__(self, device: torch.device, capacity: int, num_ffmpeg_threads: int,
                 nvdec_runtime: Any = None, caps: Any = None) -> None:
        self.device = device
        self._threads = num_ffmpeg_threads
        self._owner: Any = None
        if device.type == "cuda":
            from framefeed.engine.backends.gpu_decode import (
                NvdecDecoders,  # lazy: optional GPU libraries
            )

            self._owner = NvdecDecoders(device.index or 0, runtime=nvdec_runtime, capacity=capacity, caps=caps)
        self.created = 0
        self.reused = 0
        self.cpu_opened = 0

    def _cache_counts(self) -> tuple[int, int]:
        if self._owner is None:
            return 0, 0
        try:
            cache = self._owner.decoder_cache
        except RuntimeError:  # NVDEC unusable here: every stream falls back to the CPU
            return 0, 0
        return cache.created, cache.reused

    def open(self, params: CodecParameters, pipeline: TransformPipeline | None = None) -> Opened:
        """A backend for `params` that writes frames transformed by `pipeline`
        (on NVDEC inside the fused colour kernel; elsewhere by the torch path)."""
        created, reused = self._cache_counts()
        selection = open_backend(params, self.device, BackendContext(
            stream=None, num_threads=self._threads, nvdec=self._owner, transforms=pipeline or None))
        if selection.backend.name == "nvdec":
            now_created, now_reused = self._cache_counts()
            self.created += now_created - created
            self.reused += now_reused - reused
            return Opened(selection.backend, selection.status, now_reused > reused)
        self.cpu_opened += 1
        return Opened(selection.backend, selection.status, False)

    def idle_count(self) -> int:
        """NVDEC decoders waiting in this session's cache."""
        if self._owner is None:
            return 0
        try:
            return self._owner.decoder_cache.idle_count()
        except RuntimeError:
            return 0

    def close(self) -> None:
        """Destroy every idle decoder (they all are, between requests)."""
        if self._owner is not None:
            self._owner.close()


def execute(work: Work, backend: Any, dimension_order: str) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Run `work`'s plan over its bundle with `backend`; (pixels in
    `dimension_order` on the backend's device, pts seconds, durations seconds)."""
    backend = with_transforms(backend, work.pipeline)
    height, width = work.frame_shape
    channels_first = backend.channels_first_output and dimension_order == "NCHW"

    def allocate(count: int) -> OutputBuffer:
        return OutputBuffer.allocate(count, height, width, backend.output_device, channels_first, dtype=work.dtype)

    plan = work.plan
    assert work.bundle is not None
    out = None if plan.time_range is not None else allocate(plan.slot_count)
    out = execute_plan(plan, BundleSource(work.bundle), backend, out, disposable=work.disposable, allocate=allocate)
    return out.as_order(dimension_order), out.pts_seconds, out.duration_seconds
