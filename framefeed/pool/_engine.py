"""The pool's threads: demux threads open and plan, decode sessions decode.

    submit() --requests--> demux threads --admitted work--> decode sessions --> futures
              (bounded)    open + plan,    (bounded)        backend + slots,
                           wait for room                    hand over, free room

Both queues are bounded and admission waits for room in flight
(`_budget.InFlightBudget`), so a producer faster than the decoders is held
back (`submit` blocks) instead of buffering without limit.

Every failure is caught per request and set on that request's future; no
exception ends a thread. Threads are daemons and hold no reference to the
`DecodePool` facade, so a forgotten pool is shut down when collected.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import torch

from framefeed.errors import DecodingError, VideoOpenError, documented_error
from framefeed.pool._adapter import (
    OpenedVideo,
    SessionDecoders,
    Work,
    execute,
    open_video,
    plan_work,
    resolve_pipeline,
    ship,
)
from framefeed.pool._budget import BudgetClosed, InFlightBudget, Ticket
from framefeed.pool._hardware import HostRuntime
from framefeed.pool._request import METHODS, DecodeRequest
from framefeed.pool._stats import DecodeInfo, PoolBatch, PoolStats, SessionStats
from framefeed.transforms import TransformPipeline

_STOP = object()


class PoolClosedError(RuntimeError):
    """The pool was closed (with `cancel_pending=True`) before this request was decoded."""


@dataclass(eq=False)
class Job:
    """One request on its way through the pool.

    `opened`: the video, already open (sampler targets open ahead).
    `open_only`: the future gets the `OpenedVideo` itself (no decoding).
    `clip_shape`: the batch is reshaped to `(clips, frames per clip, ...)`.
    `pipeline`: the transforms, already resolved (sampler targets resolve
    them on the caller's thread, as `VideoDecoder` does).
    `crop_seed`: seeds the random crop windows resolved off the caller's thread.
    `consumer`: the CUDA stream current when the request was submitted.
    `work`: set at submission for a plan and bundle made elsewhere (`submit_plan`).
    """

    request: DecodeRequest
    future: Future
    consumer: Any = None
    opened: OpenedVideo | None = None
    open_only: bool = False
    clip_shape: tuple[int, int] | None = None
    pipeline: TransformPipeline | None = None
    crop_seed: int | None = None
    work: Work | None = None
    ticket: Ticket | None = None


class Session:
    """A decode session: one thread, its decoders, and on CUDA a stream of its
    own (an `OwnedStream`, not one of torch's shared pool) for the uploads of
    streams decoded on the CPU; NVDEC requests run on their decoder's stream."""

    def __init__(self, index: int, engine: Engine, decoders_per_session: int) -> None:
        self.index = index
        self.stream = engine.runtime.new_stream()
        self.decoders = SessionDecoders(engine.device, decoders_per_session, engine.num_ffmpeg_threads,
                                        engine.nvdec_runtime, engine.nvdec_caps)
        self.busy_seconds = 0.0
        self.requests = 0
        self.frames_decoded = 0
        self.frames_returned = 0
        self.thread = threading.Thread(target=engine.session_loop, args=(self,), daemon=True,
                                       name=f"framefeed-pool-session-{index}")

    def stats(self) -> SessionStats:
        return SessionStats(self.index, self.busy_seconds, self.requests, self.frames_decoded, self.frames_returned,
                            self.decoders.created, self.decoders.reused, self.decoders.idle_count(),
                            self.decoders.cpu_opened)


class Engine:
    """Queues, threads and counters behind a `DecodePool`."""

    def __init__(self, *, device: torch.device, runtime: HostRuntime, sessions: int, demux_threads: int,
                 budget: InFlightBudget, queue_depth: int, decoders_per_session: int,
                 num_ffmpeg_threads: int, nvdec_runtime: Any = None, nvdec_caps: Any = None) -> None:
        self.device = device
        self.runtime = runtime
        self.nvdec_runtime = nvdec_runtime
        self.nvdec_caps = nvdec_caps
        self.budget = budget
        self.num_ffmpeg_threads = num_ffmpeg_threads
        self.started = time.perf_counter()
        self._requests: queue.Queue[Any] = queue.Queue(maxsize=queue_depth)
        self._work: queue.Queue[Any] = queue.Queue(maxsize=sessions)
        self._lock = threading.Lock()
        self._closed = False
        self._cancelling = False
        self._shut_down = False
        self._shutdown_lock = threading.Lock()
        self._counts = {"submitted": 0, "completed": 0, "failed": 0, "cancelled": 0, "cpu_fallbacks": 0}
        self._demux_busy = 0.0
        self.sessions = [Session(i, self, decoders_per_session) for i in range(sessions)]
        self._demuxers = [threading.Thread(target=self._demux_loop, daemon=True, name=f"framefeed-pool-demux-{i}")
                          for i in range(demux_threads)]
        self.thread_ids: set[int] = set()
        for thread in [*self._demuxers, *(s.thread for s in self.sessions)]:
            thread.start()
            self.thread_ids.add(thread.ident or 0)

    # -- intake -------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def check_open(self) -> None:
        if self._closed:
            raise RuntimeError("This DecodePool is closed")

    def submit(self, job: Job) -> Future:
        """Queue `job`; blocks while the request queue is full (back-pressure)."""
        with self._lock:
            self.check_open()
            if not job.open_only:  # opening ahead for a sampler is not a request of its own
                self._counts["submitted"] += 1
        job.consumer = self.runtime.consumer_stream()
        if not job.open_only and job.pipeline is None and job.request.draws_crops:
            # Drawn here, on the caller's thread, so torch.manual_seed reproduces the windows.
            job.crop_seed = int(torch.randint(0, 1 << 62, size=()).item())
        self._requests.put(job)
        if self._shut_down:  # a put that waited through a whole shutdown: nobody will take it
            self._cancel_queued()
        return job.future

    # -- demux threads ------------------------------------------------------------------------

    def _demux_loop(self) -> None:
        while True:
            job = self._requests.get()
            if job is _STOP:
                return
            if not job.future.set_running_or_notify_cancel():
                self._count("cancelled")
                if job.opened is not None:
                    job.opened.close()
                continue
            try:
                self._prepare(job)
            except BaseException as error:  # a bug in the bookkeeping: fail the request, keep the thread
                if not job.future.done():
                    self._fail(job, error)

    def _prepare(self, job: Job) -> None:
        if job.work is not None:  # planned and shipped elsewhere (`submit_plan`): only admission is left
            self._admit_shipped(job)
            return
        video = job.opened
        request = job.request
        opening = True  # errors while opening are the decoder constructor's; later ones its method's
        try:
            with self._demux_timer():
                if video is None:
                    video = open_video(request.source, seek_mode=request.seek_mode,
                                       stream_index=request.stream_index, num_ffmpeg_threads=self.num_ffmpeg_threads)
                if job.open_only:
                    job.future.set_result(video)
                    return
                pipeline = job.pipeline or resolve_pipeline(video, request, job.crop_seed)
                opening = False
                work = plan_work(video, request, pipeline)
            job.work = work
            job.ticket = self.budget.acquire(work.count, work.count * work.frame_bytes,
                                             give_up=lambda: self._cancelling)
            with self._demux_timer():
                ship(work, video)  # admitted: read its packets, then the file is done with
            video.close()
        except BudgetClosed:
            video.close()
            self._fail(job, PoolClosedError("the DecodePool was closed before this request was decoded"), "cancelled")
            return
        except Exception as error:
            if video is not None:
                video.close()
            if job.ticket is not None:
                self.budget.release(job.ticket)
                job.ticket = None
            self._fail(job, public_error(error, request, opening))
            return
        self._work.put(job)

    def _admit_shipped(self, job: Job) -> None:
        work = job.work
        assert work is not None
        try:
            job.ticket = self.budget.acquire(work.count, work.count * work.frame_bytes,
                                             give_up=lambda: self._cancelling)
        except BudgetClosed:
            self._fail(job, PoolClosedError("the DecodePool was closed before this request was decoded"), "cancelled")
            return
        self._work.put(job)

    @contextlib.contextmanager
    def _demux_timer(self) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self._demux_busy += time.perf_counter() - began

    # -- decode sessions ----------------------------------------------------------------------

    def session_loop(self, session: Session) -> None:
        while True:
            job = self._work.get()
            if job is _STOP:
                return
            try:
                if self._cancelling:
                    self._abandon(job)
                else:
                    self._decode(session, job)
            except BaseException as error:  # a bug in the bookkeeping: fail the request, keep the session
                if not job.future.done():
                    self._fail(job, error)

    def _decode(self, session: Session, job: Job) -> None:
        began = time.perf_counter()
        work = job.work
        assert work is not None
        request = job.request
        opened = None
        try:
            opened = session.decoders.open(work.params, work.pipeline)
            # The NVDEC decoder's own stream, else the session's: never the legacy default stream.
            producer = getattr(opened.backend, "producer", None) or session.stream
            with self.runtime.stream_scope(producer):
                data, pts, durations = execute(work, opened.backend, request.dimension_order)
                count = len(pts)
                if data.device != self.runtime.result_device:  # a CPU fallback in a CUDA pool: upload
                    data = data.to(self.runtime.result_device, non_blocking=True)
            self.runtime.hand_over(producer, data, job.consumer)
            decoded = int(getattr(opened.backend, "frames_decoded", 0))
            info = DecodeInfo(work.description, session.index, opened.status, opened.reused, decoded)
            pts_t, durations_t = torch.from_numpy(pts), torch.from_numpy(durations)
            if job.clip_shape is not None:
                data = data.unflatten(0, job.clip_shape)
                pts_t, durations_t = pts_t.unflatten(0, job.clip_shape), durations_t.unflatten(0, job.clip_shape)
            batch = PoolBatch(data, pts_t, durations_t, info)
        except Exception as error:
            self._finish_session_work(session, job, opened, began)
            self._fail(job, public_error(error, request, opening=False))
            return
        with self._lock:
            session.frames_decoded += decoded
            session.frames_returned += count
            self._counts["completed"] += 1
            if opened.status:
                self._counts["cpu_fallbacks"] += 1
        job.future.set_result(batch)  # before the room is freed: handed out, then out of flight
        self._finish_session_work(session, job, opened, began)

    def _finish_session_work(self, session: Session, job: Job, opened: Any, began: float) -> None:
        """Give the decoder back, drop the packets, free the room in flight."""
        try:
            if opened is not None:
                opened.release()
        finally:
            assert job.work is not None
            job.work.bundle = None
            if job.ticket is not None:
                self.budget.release(job.ticket)
                job.ticket = None
            with self._lock:
                session.requests += 1
                session.busy_seconds += time.perf_counter() - began

    def _abandon(self, job: Job) -> None:
        """Admitted work that no session will run (the pool is being cancelled)."""
        if job.ticket is not None:
            self.budget.release(job.ticket)
            job.ticket = None
        self._fail(job, PoolClosedError("the DecodePool was closed before this request was decoded"), "cancelled")

    # -- outcomes and counters ------------------------------------------------------------------

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _fail(self, job: Job, error: BaseException, counter: str = "failed") -> None:
        with self._lock:
            if job.open_only:  # a sampler's source that could not be opened: its request fails here
                self._counts["submitted"] += 1
            self._counts[counter] += 1
        job.future.set_exception(error)

    def stats(self) -> PoolStats:
        with self._lock:
            sessions = tuple(s.stats() for s in self.sessions)
            counts = dict(self._counts)
            demux_busy = self._demux_busy
        budget = self.budget
        return PoolStats(
            device=str(self.device),
            uptime_seconds=time.perf_counter() - self.started,
            sessions=sessions,
            demux_threads=len(self._demuxers),
            demux_busy_seconds=demux_busy,
            submitted=counts["submitted"],
            completed=counts["completed"],
            failed=counts["failed"],
            cancelled=counts["cancelled"],
            frames_decoded=sum(s.frames_decoded for s in sessions),
            frames_returned=sum(s.frames_returned for s in sessions),
            cpu_fallbacks=counts["cpu_fallbacks"],
            decoders_created=sum(s.decoders_created for s in sessions),
            decoders_reused=sum(s.decoders_reused for s in sessions),
            cpu_decoders_opened=sum(s.cpu_decoders_opened for s in sessions),
            frames_in_flight=budget.frames,
            bytes_in_flight=budget.bytes,
            peak_frames_in_flight=budget.peak_frames,
            peak_bytes_in_flight=budget.peak_bytes,
            max_frames_in_flight=budget.max_frames,
            max_bytes_in_flight=budget.max_bytes,
            nvdec_utilisation_percent=self.runtime.decoder_utilisation(),
        )

    # -- shutdown --------------------------------------------------------------------------------

    def shutdown_when_dropped(self) -> None:
        """The `DecodePool` was collected without `close()`: cancel what is
        queued and stop. The collector may run on one of the pool's own
        threads, which cannot join itself: then a helper thread does it."""
        if threading.get_ident() in self.thread_ids:
            threading.Thread(target=self.shutdown, args=(True,), daemon=True).start()
        else:
            self.shutdown(True)

    def shutdown(self, cancel_pending: bool) -> None:
        """Stop the threads, then destroy every session's decoders.

        Without `cancel_pending`, every request already submitted is decoded
        first. With it, queued requests are cancelled and admitted ones not
        yet decoding fail with `PoolClosedError`; running decodes finish.
        """
        if threading.get_ident() in self.thread_ids:
            raise RuntimeError("A DecodePool cannot be closed from one of its own threads (a future's callback)")
        with self._shutdown_lock:  # one shutdown at a time; later calls find it done
            if self._shut_down:
                return
            self._stop(cancel_pending)
            self._shut_down = True

    def _stop(self, cancel_pending: bool) -> None:
        with self._lock:
            self._closed = True
            if cancel_pending:
                self._cancelling = True
        if cancel_pending:
            self.budget.close()
            self._cancel_queued()
        for _ in self._demuxers:
            self._requests.put(_STOP)
        for thread in self._demuxers:
            thread.join()
        self._cancel_queued()  # submits that raced with close landed after the stops
        for _ in self.sessions:
            self._work.put(_STOP)
        for session in self.sessions:
            session.thread.join()
        for session in self.sessions:
            session.decoders.close()
        for session in self.sessions:
            self.runtime.close_stream(session.stream)
        self.runtime.release_memory()

    def _cancel_queued(self) -> None:
        while True:
            try:
                job = self._requests.get_nowait()
            except queue.Empty:
                return
            if job is _STOP:
                continue
            if job.opened is not None:
                job.opened.close()
            if job.future.cancel():
                job.future.set_running_or_notify_cancel()  # wakes `wait()`ers: no thread will pick it up now
                self._count("cancelled")
            elif not job.future.done():
                self._fail(job, PoolClosedError("the DecodePool was closed before this request was decoded"),
                           "cancelled")


def public_error(error: Exception, request: DecodeRequest, opening: bool) -> Exception:
    """What the `VideoDecoder` call the request stands for would raise: the
    constructor's error while opening, the method's afterwards, through the
    same public exception boundary (`framefeed.errors.public_api`)."""
    if opening:
        replacement = documented_error(error, VideoOpenError, "VideoDecoder")
    else:
        replacement = documented_error(error, DecodingError, f"VideoDecoder.{METHODS[request.kind]}")
    if replacement is None:
        return error
    replacement.__cause__ = error
    return replacement
