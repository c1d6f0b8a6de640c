"""`DecodePool`: decode frames from many videos at once, decoders reused.

See the package docstring (`framefeed.pool`) for the stage layout and tuning.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from framefeed import _arguments as args
from framefeed._lookahead import map_with_lookahead
from framefeed._validation import require_int
from framefeed.engine.backends.devices import resolve_device
from framefeed.pool import _hardware
from framefeed.pool._adapter import shipped_work
from framefeed.pool._budget import InFlightBudget
from framefeed.pool._engine import Engine, Job
from framefeed.pool._request import DecodeRequest, as_request
from framefeed.pool._stats import PoolBatch, PoolStats
from framefeed.pool._videos import PooledVideos
from framefeed.transforms import TransformPipeline

if TYPE_CHECKING:
    from framefeed.engine.backends.gpu_decode import NvdecRuntime
    from framefeed.engine.packets import PacketBundle
    from framefeed.engine.plan import DecodePlan


class DecodePool:
    """Decodes requests from many videos concurrently, on one device.

    Args:
        device: "cpu", "cuda", "cuda:N", a `torch.device`, or None for
            torch's default device. Batches are returned on this device.
        sessions: decode sessions (threads, each with its own decoders and, on
            CUDA, its own stream). None: the NVDEC engine count on CUDA
            (`GetDecoderCaps`), the usable CPU cores on the CPU.
        demux_threads: threads that open files and plan requests. None: 1 for
            up to 2 sessions, 2 up to 7, else 3.
        max_frames_in_flight: cap on frames admitted but not yet handed out
            (None: no frame cap).
        max_bytes_in_flight: cap on their bytes. None: a quarter of the
            device's memory (host RAM on the CPU), at most 8 GiB.
        queue_depth: requests `submit` may queue before it blocks. None: 4 per session.
        decoders_per_session: idle NVDEC decoders each session keeps for reuse
            (distinct codec/size/format combinations it remembers).
        num_ffmpeg_threads: FFmpeg threads per CPU decoder (1: the sessions
            are the parallelism; 0: FFmpeg decides).
        nvdec_runtime: the machine-facing NVDEC pieces each session's decoder
            owner uses (`gpu_decode.NvdecRuntime`); None: the real
            PyNvVideoCodec. Tests pass an emulated one.

    Raises:
        ValueError: a bad device or a count below 1.
        CudaUnavailableError: a CUDA device while torch sees none.

    A request that fails (a file that cannot be opened, an index out of
    range, a corrupt stream) fails its own future with the exception
    `VideoDecoder` would raise; the pool and its other requests carry on.
    """

    def __init__(
        self,
        device: str | torch.device | None = None,
        sessions: int | None = None,
        *,
        demux_threads: int | None = None,
        max_frames_in_flight: int | None = None,
        max_bytes_in_flight: int | None = None,
        queue_depth: int | None = None,
        decoders_per_session: int = 2,
        num_ffmpeg_threads: int = 1,
        nvdec_runtime: NvdecRuntime | None = None,
    ) -> None:
        self._device = resolve_device(device)
        runtime = _hardware.runtime_for(self._device, nvdec_runtime)
        caps = _hardware.nvdec_caps(nvdec_runtime) if self._device.type == "cuda" else None
        sessions = _positive("sessions", sessions, _hardware.default_sessions(self._device, caps))
        demux_threads = _positive("demux_threads", demux_threads, _hardware.default_demux_threads(sessions))
        queue_depth = _positive("queue_depth", queue_depth, 4 * sessions)
        decoders_per_session = _positive("decoders_per_session", decoders_per_session, 2)
        num_ffmpeg_threads = require_int("num_ffmpeg_threads", num_ffmpeg_threads)
        if num_ffmpeg_threads < 0:
            raise ValueError(f"Invalid num_ffmpeg_threads ({num_ffmpeg_threads}): use 0 (FFmpeg chooses) or more")
        max_frames = None if max_frames_in_flight is None else _positive("max_frames_in_flight", max_frames_in_flight, 1)
        max_bytes = _positive("max_bytes_in_flight", max_bytes_in_flight, runtime.default_max_bytes())
        self._sessions = sessions
        self._engine = Engine(device=self._device, runtime=runtime, sessions=sessions, demux_threads=demux_threads,
                              budget=InFlightBudget(max_frames, max_bytes), queue_depth=queue_depth,
                              decoders_per_session=decoders_per_session, num_ffmpeg_threads=num_ffmpeg_threads,
                              nvdec_runtime=nvdec_runtime, nvdec_caps=caps)
        # A pool dropped without close(): cancel what is queued and stop the threads.
        self._finalizer = weakref.finalize(self, self._engine.shutdown_when_dropped)

    # -- requests ----------------------------------------------------------------------------

    def submit(
        self,
        source: str | Path | bytes | Tensor | DecodeRequest | Any,
        *,
        indices: Sequence[int] | Tensor | None = None,
        seconds: Sequence[float] | Tensor | None = None,
        start: int | None = None,
        stop: int | None = None,
        step: int = 1,
        seek_mode: Literal["exact", "approximate"] = "exact",
        dimension_order: Literal["NCHW", "NHWC"] = "NCHW",
        transforms: Sequence[Any] | None = None,
        stream_index: int | None = None,
        output_dtype: torch.dtype | Literal["auto"] = torch.uint8,
    ) -> Future[PoolBatch]:
        """Queue one request; a future of its `PoolBatch` (a `FrameBatch` plus `info`).

        Frames as `VideoDecoder(source, seek_mode=..., dimension_order=...)`
        returns them for `get_frames_at(indices)`, `get_frames_played_at(seconds)`,
        `get_frames_in_range(start, stop, step)` (a missing `start` is 0, a
        missing `stop` the end), or `get_all_frames()` when none is given.
        `source` may also be a `DecodeRequest` (then give no other argument).
        `transforms` are `VideoDecoder`'s decoder transforms (`Resize`,
        `CenterCrop`, `RandomCrop`), applied to every frame (see `DecodeRequest`).
        `output_dtype` as for `VideoDecoder`: `torch.uint8`, `torch.float32`
        (values in [0, 1]) or `"auto"` (float32 for sources above 8 bits).

        Blocks while the request queue is full (back-pressure).

        Raises:
            RuntimeError: the pool is closed.
            TypeError, ValueError: malformed arguments (see `DecodeRequest`).
            Errors that depend on the file are set on the future instead.
        """
        if isinstance(source, DecodeRequest):
            given = (indices, seconds, start, stop, transforms, stream_index)
            defaults = (step, seek_mode, dimension_order, output_dtype) != (1, "exact", "NCHW", torch.uint8)
            if any(v is not None for v in given) or defaults:
                raise TypeError("submit() takes either a DecodeRequest or a source with keyword arguments, not both")
            request = source
        else:
            request = DecodeRequest(source, indices=indices, seconds=seconds, start=start, stop=stop, step=step,
                                    seek_mode=seek_mode, dimension_order=dimension_order,
                                    transforms=transforms or (), stream_index=stream_index,
                                    output_dtype=output_dtype)
        return self._engine.submit(Job(request, Future()))

    def submit_plan(
        self,
        plan: DecodePlan,
        bundle: PacketBundle,
        *,
        frame_shape: tuple[int, int],
        transforms: TransformPipeline | None = None,
        clip_shape: tuple[int, int] | None = None,
        dimension_order: Literal["NCHW", "NHWC"] = "NCHW",
        description: str | None = None,
        output_dtype: torch.dtype | Literal["auto"] = torch.uint8,
    ) -> Future[PoolBatch]:
        """Queue a request planned and demuxed elsewhere: a `DecodePlan` and its
        `PacketBundle` (`framefeed.engine.bundling.ship_request`, or a `ClipDataset`
        item from a DataLoader worker). Only decoding is left: the sessions run
        the plan over the bundle; a future of its `PoolBatch`.

        `frame_shape` is `(height, width)` of a decoded frame (after rotation);
        `transforms` the decoder transforms resolved for that size
        (`framefeed.transforms.resolve_transforms`, random crops drawn), None
        for none; `clip_shape` reshapes the batch's frames to `(clips, frames
        per clip)`; `dimension_order` and `output_dtype` as in `submit`
        ("auto" decided by the bundle's pixel format); `description` names the
        source in `batch.info` (default: the bundle's).

        Raises:
            RuntimeError: the pool is closed.
            ValueError: a `clip_shape` that does not hold the plan's frames,
                transforms resolved for another frame size, a bad `output_dtype`.
            Errors of decoding (a damaged stream, missing packets) are set on the future.
        """
        if clip_shape is not None and clip_shape[0] * clip_shape[1] != plan.slot_count:
            raise ValueError(f"clip_shape {tuple(clip_shape)} does not hold the plan's {plan.slot_count} frames")
        shape = (int(frame_shape[0]), int(frame_shape[1]))
        pipeline = TransformPipeline((), shape, shape) if transforms is None else transforms
        if tuple(pipeline.input_size) != shape:
            raise ValueError(f"transforms resolved for {pipeline.input_size[0]}x{pipeline.input_size[1]} frames "
                             f"cannot apply to {shape[0]}x{shape[1]} frames")
        request = DecodeRequest(None, dimension_order=dimension_order)
        work = shipped_work(plan, bundle, pipeline, description or bundle.description, output_dtype)
        return self._engine.submit(Job(request, Future(), work=work,
                                       clip_shape=None if clip_shape is None else tuple(clip_shape)))

    def map(
        self,
        requests: Iterable[DecodeRequest | Any],
        *,
        ordered: bool = True,
        lookahead: int | None = None,
        return_exceptions: bool = False,
        output_dtype: torch.dtype | Literal["auto"] = torch.uint8,
    ) -> Iterator[PoolBatch | BaseException]:
        """Decode `requests` (each a `DecodeRequest`, or a source meaning its
        whole file) and yield their batches. `output_dtype` (as in `submit`)
        applies to the sources; a `DecodeRequest` carries its own.

        At most `lookahead` requests (None: 2 per session) are submitted ahead
        of the batch being consumed, so an endless iterable is fine and memory
        stays bounded. `ordered=False` yields batches as they complete.
        A failed request raises its exception from the iterator, where its
        batch would have been (requests not yet yielded are then cancelled);
        with `return_exceptions=True` the exception is yielded instead and
        iteration goes on.

        Raises:
            RuntimeError: the pool is closed (when called).
            ValueError: a bad `output_dtype` (when called).
        """
        self._engine.check_open()
        output_dtype = args.output_dtype(output_dtype)
        depth = _positive("lookahead", lookahead, 2 * self._sessions)
        return self._map(iter(requests), ordered, depth, return_exceptions, output_dtype)

    def _map(self, requests: Iterator[Any], ordered: bool, depth: int, return_exceptions: bool,
             output_dtype: torch.dtype | str) -> Iterator[PoolBatch | BaseException]:
        def submit(item: Any) -> Future:
            return self._engine.submit(Job(as_request(item, output_dtype), Future()))

        return map_with_lookahead(submit, requests, ordered=ordered, depth=depth, return_exceptions=return_exceptions)

    def videos(
        self,
        sources: Iterable[Any],
        *,
        seek_mode: Literal["exact", "approximate"] = "exact",
        dimension_order: Literal["NCHW", "NHWC"] = "NCHW",
        transforms: Sequence[Any] | None = None,
        stream_index: int | None = None,
        lookahead: int | None = None,
        output_dtype: torch.dtype | Literal["auto"] = torch.uint8,
    ) -> PooledVideos:
        """Sources to hand to a sampler: `clips_at_random_indices(pool.videos(paths), ...)`
        returns a list with one `Future[PoolBatch]` of clips per source, in order,
        equal to the sampler called per source on `VideoDecoder(source, ...)`
        under the same seed (see `framefeed.pool._videos`). Up to `lookahead`
        sources (None: 2 per session) are opened ahead of the sampler.
        `output_dtype` as in `submit`: the clips' dtype.

        Raises:
            RuntimeError: the pool is closed.
            ValueError: a bad `seek_mode`, `dimension_order`, transform or `output_dtype`.
        """
        self._engine.check_open()
        template = DecodeRequest(None, seek_mode=seek_mode, dimension_order=dimension_order,
                                 transforms=transforms or (), stream_index=stream_index, output_dtype=output_dtype)
        depth = _positive("lookahead", lookahead, 2 * self._sessions)
        return PooledVideos(self._engine, sources, template, depth)

    # -- state -----------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def sessions(self) -> int:
        return self._sessions

    @property
    def closed(self) -> bool:
        return self._engine.closed

    def stats(self) -> PoolStats:
        """A snapshot of the pool's counters (see `PoolStats`)."""
        return self._engine.stats()

    # -- lifetime --------------------------------------------------------------------------------

    def close(self, *, cancel_pending: bool = False) -> None:
        """Stop accepting requests, finish (or with `cancel_pending`, cancel)
        the queued ones, stop the threads, destroy every session's decoders
        and, on CUDA, return torch's cached device memory. Idempotent; every
        later `submit`, `map` or `videos` raises RuntimeError. Batches already
        handed out stay valid."""
        self._engine.shutdown(cancel_pending)
        self._finalizer.detach()

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        self.close(cancel_pending=exc_type is not None)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"DecodePool(device={self._device}, sessions={self._sessions}, {state})"



def _positive(name: str, value: Any, default: int) -> int:
    if value is None:
        return default
    number = require_int(name, value)
    if number < 1:
        raise ValueError(f"{name} must be at least 1, got {number}")
    return number
