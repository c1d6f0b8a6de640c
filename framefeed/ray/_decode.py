"""The decode stage of `read_clips`: packet rows in, clip rows out.

A packet row is one `ClipGroup` of one video (a plan, its compressed
packets, which clips they are), pickled into a binary column. Decoding turns
each into clip rows: frames `(T, C, H, W)` (or `(T, H, W, C)`), uint8 or
float32 per `output_dtype`, their
pts and durations in seconds, the video's position in the listing (and
its name, on request), the clip's index within the video and the video's label.

Each plan carries its decoder transforms, resolved by the read stage
(`PlannedClips.transforms`, crop windows drawn), and is decoded through them:

- `decode="cpu"`: `decode_packet_batch` in Ray tasks, FFmpeg through the
  executor (`framefeed.engine.executor.execute_plan`) on a `BundleSource`, the
  backend opened with the pipeline (as `ClipDataset`'s CPU items decode).
- `decode="cuda"`: `NvdecClipDecoder`, a Ray actor class holding a
  `DecodePool` on the GPU Ray assigned it; the pipeline goes to
  `DecodePool.submit_plan` (fused into NVDEC's colour kernel), and the clips
  are copied to pinned host memory for Ray's object store, each calling
  thread on a stream of its own (`HostCopies`).

The stage functions take and return plain `pyarrow.Table` / numpy batches;
only `record_skip` talks to Ray (the skip ledger).
"""

from __future__ import annotations

import logging
import pickle
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from framefeed.data._items import ClipLoadError
from framefeed.data._sampling import PlannedClips

logger = logging.getLogger("framefeed.ray")

@dataclass
class DecodeConfig:
    """What the decode stage needs besides the rows (sent to every task/actor).

    Attributes:
        names: each video's name, by video index.
        labels: each video's label by video index, or None.
        include_paths: whether clip rows carry the video's name (`source`).
        dimension_order: "NCHW" or "NHWC".
        on_error: "raise" or "skip".
        num_ffmpeg_threads: FFmpeg threads per CPU decoder (0: FFmpeg decides).
        ledger: where skipped videos are recorded (a Ray actor handle), or None.
        pool_options: keyword arguments of the `DecodePool` a CUDA actor makes.
        output_dtype: `torch.uint8`, `torch.float32` or "auto", as for `VideoDecoder`.
    """

    names: list[str]
    labels: list[Any] | None
    include_paths: bool = False
    dimension_order: str = "NCHW"
    on_error: str = "raise"
    num_ffmpeg_threads: int = 1
    ledger: Any = None
    pool_options: dict[str, Any] = field(default_factory=dict)
    output_dtype: Any = torch.uint8


def read_error(name: str, video_index: int, error: BaseException) -> ClipLoadError:
    """The error a video that cannot be read raises (`framefeed.data`'s type).
    Its message is also kept as `framefeed_message`: Ray appends its retry
    advice to the arguments of an exception a task raises, and the driver
    (`_read.driver_error`) raises the message as it was written."""
    message = f"Could not read clips from {name} (video {video_index} of the listing): {type(error).__name__}: {error}"
    failure = ClipLoadError(message, name, video_index)
    failure.framefeed_message = message  # type: ignore[attr-defined]  (travels in __dict__ when pickled)
    return failure


def record_skip(ledger: Any, name: str, error: BaseException) -> None:
    logger.warning("framefeed.ray.read_clips: skipping %s: %s: %s", name, type(error).__name__, error)
    if ledger is not None:  # waited for, so the count is complete once the dataset has been read
        import ray

        ray.get(ledger.record.remote(name, f"{type(error).__name__}: {error}"))


def packet_rows(video_index: int, groups: Sequence[Any]) -> dict[str, list[Any]]:
    """The packet-row columns for one video's `ClipGroup`s."""
    return {
        "video_index": [video_index] * len(groups),
        "first_clip": [g.first_clip for g in groups],
        "num_clips": [g.planned.clip_shape[0] for g in groups],
        "num_frames": [g.planned.clip_shape[0] * g.planned.clip_shape[1] for g in groups],
        "packet_bytes": [len(g.planned.bundle.payload) for g in groups],
        "planned": [pickle.dumps(g.planned, protocol=pickle.HIGHEST_PROTOCOL) for g in groups],
    }


def _rows(table: Any) -> Iterator[tuple[int, int, PlannedClips]]:
    indices = table.column("video_index").to_pylist()
    firsts = table.column("first_clip").to_pylist()
    for i, blob in enumerate(table.column("planned").to_pylist()):
        yield indices[i], firsts[i], pickle.loads(blob)


def decode_on_cpu(planned: PlannedClips, dimension_order: str, num_threads: int = 1,
                  output_dtype: Any = torch.uint8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decode one `PlannedClips` with FFmpeg through its resolved transforms
    (`planned.transforms`, None for none): `(data, pts_seconds,
    duration_seconds)` shaped `(clips, T, ...)`, as the sampler on a CPU
    `VideoDecoder` with those transforms and `output_dtype` would return them.

    Raises:
        DecodingError: a frame cannot be decoded (damaged stream).
    """
    from framefeed import _arguments as args
    from framefeed.engine.backends.registry import BackendContext, open_backend
    from framefeed.engine.demux.disposable import disposable_test_for
    from framefeed.engine.executor import OutputBuffer, execute_plan
    from framefeed.engine.packets import BundleSource

    plan, bundle = planned.plan, planned.bundle
    params = bundle.params
    pipeline = planned.transforms
    context = BackendContext(num_threads=num_threads, transforms=pipeline)
    backend = open_backend(params, torch.device("cpu"), context).backend
    try:
        height, width = pipeline.output_size if pipeline else planned.frame_shape
        channels_first = backend.channels_first_output and dimension_order == "NCHW"
        dtype = args.resolve_output_dtype(output_dtype, params.pixel_format)
        out = OutputBuffer.allocate(plan.slot_count, height, width, backend.output_device, channels_first,
                                    dtype=dtype)
        disposable = disposable_test_for(params.codec, params.extradata) if plan.exact else None
        execute_plan(plan, BundleSource(bundle), backend, out, disposable=disposable)
    finally:
        backend.close()
    data = out.as_order(dimension_order)
    shape = planned.clip_shape
    return (data.unflatten(0, shape), torch.from_numpy(out.pts_seconds).unflatten(0, shape),
            torch.from_numpy(out.duration_seconds).unflatten(0, shape))


def clip_batch(config: DecodeConfig, video_index: int, first_clip: int, data: torch.Tensor | np.ndarray,
               pts_seconds: torch.Tensor, duration_seconds: torch.Tensor) -> dict[str, np.ndarray]:
    """Clip rows for one decoded group, as a numpy batch (`data` on the host)."""
    count = int(data.shape[0])
    batch = {
        "frames": data if isinstance(data, np.ndarray) else data.cpu().numpy(),
        "pts_seconds": pts_seconds.numpy(),
        "duration_seconds": duration_seconds.numpy(),
        "video_index": np.full(count, video_index, dtype=np.int64),
        "clip_index": np.arange(first_clip, first_clip + count, dtype=np.int64),
    }
    if config.include_paths:
        batch["source"] = np.array([config.names[video_index]] * count)
    if config.labels is not None:
        label = config.labels[video_index]
        if np.isscalar(label):
            batch["label"] = np.array([label] * count)
        else:  # any other value: an object column
            batch["label"] = np.empty(count, dtype=object)
            for i in range(count):
                batch["label"][i] = label
    return batch


def decode_packet_batch(table: Any, config: DecodeConfig) -> Iterator[dict[str, np.ndarray]]:
    """The CPU decode stage (a Ray task's `map_batches` function): one clip
    batch per packet row. Raises `ClipLoadError` naming the video, or skips
    it (`on_error="skip"`)."""
    for video_index, first_clip, planned in _rows(table):
        name = config.names[video_index]
        try:
            decoded = decode_on_cpu(planned, config.dimension_order, config.num_ffmpeg_threads, config.output_dtype)
        except Exception as error:
            if config.on_error == "raise":
                raise read_error(name, video_index, error) from error
            record_skip(config.ledger, name, error)
            continue
        yield clip_batch(config, video_index, first_clip, *decoded)


class HostCopies:
    """Device-to-host copies of clip batches for a GPU actor's calling threads.

    A Ray actor runs its calls on several threads (`_read.CALLS_PER_ACTOR`).
    `Tensor.cpu()` on each would copy into pageable memory, a staged and
    synchronous copy queued on the legacy default stream that all threads
    share, so the threads' copies serialise with each other and with every
    kernel on that stream. Instead each thread copies on a stream of its own
    (an `OwnedStream`, created once per thread) into pinned memory (torch's
    caching host allocator) and waits for that stream alone on the host, GIL
    released. A pool batch is complete when its future resolves, so the copy
    waits for nothing else.

    Args:
        calls: the CUDA runtime calls (`gpu_decode.streams.CudaCalls`); None:
            the real ones, on first use.
        device_index: the actor's CUDA device.
        pinned: copy into page-locked memory (False only for host stand-ins).
    """

    def __init__(self, calls: Any = None, device_index: int = 0, pinned: bool = True) -> None:
        self._calls = calls
        self._index = device_index
        self._pinned = pinned
        self._local = threading.local()
        self._streams: list[Any] = []
        self._lock = threading.Lock()

    def to_host(self, data: torch.Tensor) -> np.ndarray:
        """`data` as a host numpy array (a device tensor copied as above)."""
        if data.device.type == "cpu":
            return data.numpy()
        return self.copy(data).numpy()

    def copy(self, data: torch.Tensor) -> torch.Tensor:
        """A host copy of `data`, made on this thread's own stream."""
        stream = self._stream()
        calls = stream.calls
        with stream.scope():
            host = torch.empty(data.shape, dtype=data.dtype, pin_memory=self._pinned)
            host.copy_(data, non_blocking=True)
            calls.record_stream(data, calls.current_stream(self._index))  # the pool's memory outlives the copy
        stream.finish()
        return host

    def _stream(self) -> Any:
        stream = getattr(self._local, "stream", None)
        if stream is None:
            from framefeed.engine.backends.gpu_decode.streams import OwnedStream, cuda_calls

            if self._calls is None:
                self._calls = cuda_calls()
            stream = self._local.stream = OwnedStream(self._calls, self._index)
            with self._lock:
                self._streams.append(stream)
        return stream

    def close(self) -> None:
        """Destroy the threads' streams (after the calls have ended)."""
        with self._lock:
            streams, self._streams = self._streams, []
        for stream in streams:
            stream.finish()
            stream.close()


class NvdecClipDecoder:
    """The CUDA decode stage: a Ray actor (`num_gpus_per_actor` of a GPU each)
    holding a `DecodePool` on its GPU. Calls run on several threads at once
    (`_read.CALLS_PER_ACTOR`); each submits its packet rows to the shared
    pool, whose sessions keep the NVDEC engines busy, and yields their clips
    in row order, on the host."""

    def __init__(self, config: DecodeConfig) -> None:
        from framefeed.pool import DecodePool  # here: only GPU actors import the pool

        self._config = config
        options = dict(config.pool_options)
        # Ray sets CUDA_VISIBLE_DEVICES to the GPU(s) it assigned: cuda:0 is ours.
        self._pool = DecodePool(options.pop("device", "cuda:0"), **options)
        self._host = HostCopies(device_index=self._pool.device.index or 0)

    def __call__(self, table: Any) -> Iterator[dict[str, np.ndarray]]:
        config = self._config
        pending = [(video_index, first_clip, self._submit(planned, config.names[video_index]))
                   for video_index, first_clip, planned in _rows(table)]
        for video_index, first_clip, future in pending:
            name = config.names[video_index]
            try:
                result = future.result()
            except Exception as error:
                if config.on_error == "raise":
                    for *_, other in pending:
                        other.cancel()
                    raise read_error(name, video_index, error) from error
                record_skip(config.ledger, name, error)
                continue
            yield clip_batch(config, video_index, first_clip, self._host.to_host(result.data), result.pts_seconds,
                             result.duration_seconds)

    def _submit(self, planned: PlannedClips, name: str) -> Any:
        return self._pool.submit_plan(planned.plan, planned.bundle, frame_shape=planned.frame_shape,
                                      clip_shape=planned.clip_shape, dimension_order=self._config.dimension_order,
                                      transforms=planned.transforms, description=name,
                                      output_dtype=self._config.output_dtype)

    def close(self) -> None:
        """Close the pool (its decoders and threads); Ray calls `__del__` when the actor ends."""
        pool = getattr(self, "_pool", None)
        if pool is not None:
            self._pool = None
            pool.close(cancel_pending=True)
            host = getattr(self, "_host", None)
            if host is not None:
                host.close()

    def __del__(self) -> None:
        self.close()
