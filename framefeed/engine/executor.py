"""The executor: runs decode plans, packet source -> backend -> output slots.

`execute_plan(plan, source, backend, out)` runs one `DecodePlan` against any
`PacketSource` (the demuxer, or a `PacketBundle` shipped from another
process) with the backend it is handed, writing into the caller's slots; the
caller owns output sizing. A `DecodeSession` is the same executor kept alive
for one `VideoDecoder`: it owns the decoder's position between calls, so sequential
access (`for frame in decoder`) continues where the last call stopped instead
of seeking. For each run of the plan it seeks (or continues), feeds packets
to the backend, and matches the frames coming out in display order against
the run's targets:

- exact targets (the frame index knows their pts) match on pts equality;
- time targets take the last frame whose pts is at or before the time, which
  is known once the next frame (or the end of the stream) shows up.

A seek can land after the wanted frame: the container's seek landed on a
later keyframe, or the decoder dropped leading pictures of an open GOP that
reference frames before the keyframe. Then the session seeks again before
the keyframe it landed on, instead of returning a neighbouring frame.

A damaged stream can make the decoder output frames out of pts order (a
corrupted composition-offset table gives every picture the wrong pts). So a
later frame coming out first does not prove the wanted one is lost: the
session keeps decoding until it appears, the demuxer has passed the next
keyframe after it plus the decoder's reorder delay, or the stream ends.
Frames that came out early are kept for their turn: every frame the same
call wants, and a few later ones for sequential access.

Decoding work is bounded: once decoding started at or before the keyframe a
frame decodes from, a frame that still does not come out by then cannot
appear (the stream is damaged), so the session raises instead of seeking
ever earlier; retries happen only for seeks that landed late, and each retry
must land earlier than the last (a retry that lands where the previous one
did steps back in time instead, down to the stream's start).
"""

from __future__ import annotations

import bisect
import contextlib
import math
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from framefeed._warnings import warn_user
from framefeed.engine.demux.disposable import DisposableTest
from framefeed.engine.frame_memory import empty_frames
from framefeed.engine.packets import (
    NO_TIMESTAMP,
    MissingPacketsError,
    PacketSource,
    packet_is_discard,
)
from framefeed.engine.plan import DecodePlan, StreamFacts, Target, plan_runs
from framefeed.errors import DecodingError, FrameSizeChangedError

STREAM_START = NO_TIMESTAMP
# Seeks tried for one target before giving up (only seeks that landed late retry).
_MAX_RETRIES = 24
# Packets the decoder may hold before outputting a picture (the largest
# H.264/HEVC picture buffer); also how many unrequested frames that came out
# early are kept for the next sequential call.
_REORDER_DELAY = 16


class FrameBackend(Protocol):
    """What a backend provides (see `cpu_fallback.CpuBackend`, `gpu_decode.NvdecBackend`)."""

    name: str
    output_device: torch.device
    channels_first_output: bool  # whether it writes best into (N, 3, H, W) buffers
    frames_decoded: int  # frames output by the decoder so far

    def close(self) -> None:
        """Release the decoder (an NVDEC decoder goes back to its owner's cache)."""

    def reset(self) -> None:
        """Drop decoder state after a seek."""

    def send(self, packet: Any) -> list[Any]:
        """Decode a packet; frames completed, in display order. They stay valid
        until the next `send`/`drain`/`reset` unless passed through `retain`."""

    def drain(self) -> list[Any]:
        """End of stream: remaining frames."""

    def pts_of(self, frame: Any) -> int | None: ...

    def duration_of(self, frame: Any) -> int | None: ...

    def retain(self, frame: Any) -> Any:
        """A version of `frame` that survives later decode calls."""

    def write_rgb(self, frame: Any, dst: torch.Tensor) -> None:
        """Convert into `dst`, a `(H, W, 3)` view on `output_device`: uint8
        (0-255) or float32 (0-1, torchcodec 0.17's `output_dtype`)."""


@dataclass
class OutputBuffer:
    """Preallocated outputs: pixels on the backend's device, CPU timestamps.

    `frames` is `(N, H, W, 3)` (channels last) or `(N, 3, H, W)` (channels
    first), contiguous; backends write through `slot(i)`, an `(H, W, 3)` view
    of frame i whatever the layout.
    """

    frames: torch.Tensor
    pts_seconds: np.ndarray
    duration_seconds: np.ndarray
    channels_first: bool = False

    @classmethod
    def allocate(
        cls, count: int, height: int, width: int, device: torch.device, channels_first: bool = False,
        dtype: torch.dtype = torch.uint8,
    ) -> OutputBuffer:
        """`count` slots of `dtype` pixels: torch.uint8 (0-255) or torch.float32 (0-1)."""
        shape = (count, 3, height, width) if channels_first else (count, height, width, 3)
        return cls(
            empty_frames(shape, device, dtype),
            np.zeros(count, dtype=np.float64),
            np.zeros(count, dtype=np.float64),
            channels_first,
        )

    def slot(self, index: int) -> torch.Tensor:
        frame = self.frames[index]
        return frame.permute(1, 2, 0) if self.channels_first else frame

    def as_order(self, dimension_order: str) -> torch.Tensor:
        """All frames in `dimension_order` ("NCHW" or "NHWC"), a view when possible."""
        want_first = dimension_order == "NCHW"
        if want_first == self.channels_first:
            return self.frames
        return self.frames.permute(0, 3, 1, 2) if want_first else self.frames.permute(0, 2, 3, 1)


@dataclass
class SessionStats:
    seeks: int = 0
    packets_skipped: int = 0
    decode_errors: int = 0


def execute_plan(plan: DecodePlan, source: PacketSource, backend: FrameBackend, out: OutputBuffer | None = None,
                 *, disposable: DisposableTest | None = None, allocate: Any = None) -> OutputBuffer:
    """Run `plan` against `source` with `backend`.

    Index/time plans write into `out` (`plan.slot_count` slots, sized by the
    caller). A time-range plan (`plan.time_range`) calls `allocate(count)` for
    its buffer once it knows how many frames there are. `disposable` tells
    which packets nothing references (`disposable_test_for(params)`); None
    decodes every packet. Returns the buffer written.

    Raises:
        DecodingError: a requested frame cannot be decoded (damaged stream).
        MissingPacketsError: the source (a bundle) lacks packets a frame needs.
    """
    session = DecodeSession(source, backend, None, facts=plan.facts, disposable=disposable)
    return session.execute(plan, out, allocate)


class DecodeSession:
    """Runs decode plans for one stream on one backend, keeping the decoder's
    position between calls. Thread-safe (calls are serialised); one session
    per decoder.

    Args:
        source: where packets come from.
        backend: the decoder.
        timeline: plans `decode`/`decode_one` requests (None when only
            `execute` is used with ready-made plans).
        facts: time base, frame-rate hint, promised end.
        disposable: which packets nothing references (None: decode all).
    """

    def __init__(self, source: PacketSource, backend: FrameBackend, timeline: Any, *, facts: StreamFacts,
                 disposable: DisposableTest | None = None) -> None:
        self.source = source
        self.backend = backend
        self.timeline = timeline
        self.stats = SessionStats()
        self._fps_hint = facts.fps_hint
        self._promised_end = facts.promised_end_seconds
        self._tb_num, self._tb_den = facts.time_base.numerator, facts.time_base.denominator
        self._time_base_seconds = self._tb_num / self._tb_den
        self._disposable = disposable
        self._lock = threading.Lock()
        self._closed = False
        self._errors_reported = False
        self._packets: Iterator[Any] | None = None
        self._pending: deque[Any] = deque()
        self._eof = False
        self._cursor: float | None = None  # seconds of the last frame handed out
        self._current: Any = None  # that frame, retained (time targets only)
        self._landing: int | None = None  # first timestamp demuxed after the last seek
        self._landing_on_keyframe = False
        self._first_key_pts: int | None = None  # pts of the first keyframe packet since the last seek
        self._first_key_discard = False
        self._cut: int | None = None  # where the source's packets stopped short of the stream's end
        self._seek_pts: int | None = None  # where the last seek aimed
        self._back_off = 0.0  # seconds stepped back when a seek found no packets at all
        self._wanted: set[int] = set()
        self._skip_before: int | None = None  # disposable packets are skippable below this pts
        self._target_times: list[float] = []  # this call's time targets, sorted
        self._max_pts_demuxed: int | None = None  # largest pts sent to the decoder since the seek
        # pts of frames left undecoded since the seek (sorted), so a time
        # target's duration is the gap to the true next frame, not the next decoded one.
        self._skipped_pts: list[int] = []
        # Bounding the search for a frame (see `_past`): packets sent to the
        # decoder since the seek, the keyframes among them (pts, count when
        # sent), and the largest pts output since the seek.
        self._sent = 0
        self._keys_sent: list[tuple[int, int]] = []
        self._max_pts_out: int | None = None
        self._last_pts_out: int | None = None
        self._out_of_order = False  # a frame came out with a smaller pts than the one before
        # Frames that came out before their turn (out-of-order output), by pts,
        # retained; `_position_lost` when one had to be dropped.
        self._early: dict[int, Any] = {}
        self._position_lost = False

    # -- public -------------------------------------------------------------

    def seconds(self, pts: int) -> float:
        """Seconds of a pts: the exact rational pts * time_base, rounded once."""
        return pts * self._tb_num / self._tb_den

    def decode(self, targets: list[Target], out: OutputBuffer) -> None:
        """Produce every target into its slots of `out` (planned from the
        decoder's current position)."""
        with self._call(targets):
            self._run(plan_runs(targets, self.timeline, self._cursor), out)

    def execute(self, plan: DecodePlan, out: OutputBuffer | None = None, allocate: Any = None) -> OutputBuffer:
        """Run a ready-made plan (see `execute_plan`)."""
        if plan.time_range is not None:
            start, stop = plan.time_range
            return self._time_range(Target(start), stop, allocate, plan.runs[0].seek_pts)
        if out is None:
            raise ValueError(f"an output buffer of {plan.slot_count} slots is needed to execute this plan")
        with self._call(plan.targets):
            self._run(plan.runs, out)
        return out

    def _run(self, runs: list[Any], out: OutputBuffer) -> None:
        for run in runs:
            if run.seek_pts is not None:
                self._seek(run.seek_pts)
            for target in run.targets:
                frame, pts_seconds, duration = self._serve(target)
                first, *others = target.slots
                self._write(frame, out.slot(first), target)
                for slot in others:
                    out.frames[slot].copy_(out.frames[first])
                out.pts_seconds[target.slots] = pts_seconds
                out.duration_seconds[target.slots] = duration

    def decode_one(self, target: Target, dst: torch.Tensor) -> tuple[float, float]:
        """Produce one target into `dst` (an `(H, W, 3)` view on the backend's
        device); returns its pts and duration in seconds. The lean path behind
        `decoder[i]` and sequential iteration: no output buffer, one target."""
        with self._call((target,)):
            self._position_for(target)
            frame, pts_seconds, duration = self._serve(target)
            self._write(frame, dst, target)
            return pts_seconds, duration

    def decode_time_range(self, start: float, stop: float, allocate: Any) -> OutputBuffer:
        """The frame displayed at `start` and every later frame with pts < `stop`,
        written into a buffer from `allocate(count)`."""
        return self._time_range(Target(start), stop, allocate, None)

    def _time_range(self, target: Target, stop: float, allocate: Any, seek_pts: int | None) -> OutputBuffer:
        start = target.seconds
        with self._call((target,)):
            if seek_pts is None:
                self._position_for(target)
            else:
                self._seek(seek_pts)
            chosen, frame = self._frame_at_time(start)
            frames = [chosen]
            while frame is not None and self.seconds(self.backend.pts_of(frame)) < stop:
                self._pending.popleft()
                frames.append(self.backend.retain(frame))
                self._current = frames[-1]
                self._cursor = self.seconds(self.backend.pts_of(frame))
                frame = self._peek()
            if frame is None:
                self._check_complete(f"the frames displayed before {stop:.6f} s")
            out = allocate(len(frames))
            for slot, (current, following) in enumerate(zip(frames, [*frames[1:], frame], strict=True)):
                self._write(current, out.slot(slot), None)
                out.pts_seconds[slot] = self.seconds(self.backend.pts_of(current))
                out.duration_seconds[slot] = self._duration(current, following)
            return out

    def _write(self, frame: Any, dst: torch.Tensor, target: Target | None) -> None:
        """`frame` into `dst`; a frame of another size than the stream's is
        refused by the backend (nothing written), and named here."""
        try:
            self.backend.write_rgb(frame, dst)
        except FrameSizeChangedError as error:
            pts = self.backend.pts_of(frame)
            which = f"Frame {target.frame_index}" if target is not None and target.frame_index is not None \
                else "The frame"
            where = f" (pts {pts}, {self.seconds(pts):.6f} s)" if pts is not None else ""
            raise FrameSizeChangedError(f"{which}{where} cannot be returned: {error}", error.frame_size,
                                        error.stream_size) from None

    def close(self) -> None:
        """Refuse further calls (the decoder's container is being closed)."""
        with self._lock:
            self._closed = True
            self._forget_position()

    @contextlib.contextmanager
    def _call(self, targets: Any) -> Iterator[None]:
        """One public call: serialised, on an open session; on any error the
        position is forgotten so the next call seeks afresh."""
        with self._lock:
            if self._closed:
                raise RuntimeError("This VideoDecoder is closed")
            try:
                self._begin_call(targets)
                yield
            except BaseException:
                self._forget_position()
                raise
            finally:
                self._end_call()
                self._report_decode_errors()

    def _position_for(self, target: Target) -> None:
        run = plan_runs([target], self.timeline, self._cursor)[0]
        if run.seek_pts is not None:
            self._seek(run.seek_pts)

    def _report_decode_errors(self) -> None:
        # Frames predicted from a packet that failed to decode may be damaged:
        # say so once, instead of counting silently.
        if self.stats.decode_errors and not self._errors_reported:
            self._errors_reported = True
            warn_user(
                f"{self.stats.decode_errors} packet(s) of {self.source.description} could not be "
                "decoded; frames that depend on them may be damaged (corrupt file?)"
            )

    def _begin_call(self, targets: Any) -> None:
        self._back_off = 0.0
        self._wanted = {t.pts for t in targets if t.pts is not None}
        self._target_times = sorted(t.seconds for t in targets if t.pts is None)
        if self._early and self._target_times:
            self._forget_position()  # time targets read the decoder's output in order only
        # Frames after this call's last target may be wanted by the next
        # call (sequential access continues), so only earlier ones are skippable.
        if self._wanted:
            self._skip_before = max(self._wanted)
        elif self._target_times:
            self._skip_before = math.floor(self._target_times[-1] * self._tb_den / self._tb_num)
        else:
            self._skip_before = None

    def _end_call(self) -> None:
        self._wanted = set()
        self._target_times = []
        self._skip_before = None
        if self._position_lost:
            # A frame after the last one served came out early and was not
            # kept: continuing would miss it, so the next call seeks.
            self._forget_position()

    def _unneeded(self, pts: int) -> bool:
        """Whether the frame with this pts can be left undecoded (if nothing
        references it). Exact targets: it is not one of them. Time targets:
        a later frame has already been demuxed (B-frames follow the anchor
        after them in decode order), so this frame is shown at most until that
        one, and no target falls in between: it cannot be the answer."""
        if self._wanted:
            return pts not in self._wanted
        later = self._max_pts_demuxed
        if later is None or later <= pts:
            return False
        start, stop = self.seconds(pts), self.seconds(later)
        at = bisect.bisect_left(self._target_times, start)
        return at == len(self._target_times) or self._target_times[at] >= stop

    def _serve(self, target: Target) -> tuple[Any, float, float]:
        """The frame for `target`, consumed from the decoder and still valid
        (no decode call happens before the caller writes it), with its pts and
        duration in seconds."""
        if target.pts is not None:
            return self._frame_with_pts(target), target.seconds, target.duration_seconds
        chosen, following = self._frame_at_time(target.seconds, target.frame_index)
        pts_seconds = self.seconds(self.backend.pts_of(chosen))
        return chosen, pts_seconds, self._duration(chosen, following)

    # -- positioning --------------------------------------------------------

    def _seek(self, pts: int) -> None:
        self.stats.seeks += 1
        self._seek_pts = pts
        self.source.seek(pts)
        self.backend.reset()
        self._pending.clear()
        self._packets = self.source.packets()
        self._eof = False
        self._cut = None
        self._cursor = None
        self._current = None
        self._landing = None
        self._first_key_pts = None
        self._max_pts_demuxed = None
        self._skipped_pts.clear()
        self._sent = 0
        self._keys_sent.clear()
        self._max_pts_out = None
        self._last_pts_out = None
        self._out_of_order = False
        self._early.clear()
        self._position_lost = False

    def _forget_position(self) -> None:
        self._packets = None
        self._pending.clear()
        self._cursor = None
        self._current = None
        self._early.clear()
        self._position_lost = False

    def _retry_seek_pts(self, landings: list[int]) -> int | None:
        """A seek target strictly before where the last seek landed; None when
        there is nothing earlier (the last seek was to, or landed at, the
        stream's start). `landings` records where this target's seeks landed.

        Landing on a keyframe (indexed containers): just before it, which
        reaches the previous keyframe. Landing on a non-keyframe, on nothing
        at all (demuxers that bisect the file, like MPEG-TS, land anywhere),
        or no earlier than the previous retry (the demuxer does not know the
        keyframe before, e.g. a damaged one): step back in time from the last
        seek, doubling the step each try, down to the stream's start.
        """
        landing = self._landing
        stuck = landing is not None and bool(landings) and landing >= min(landings)
        if landing is not None:
            landings.append(landing)
        if landing is not None and self._landing_on_keyframe and not stuck:
            return None if landing <= STREAM_START else landing - 1
        if self._seek_pts is None or self._seek_pts <= STREAM_START:
            return None
        self._back_off = self._back_off * 2 if self._back_off else 1.0
        earlier = self._seek_pts - math.ceil(self._back_off / self._time_base_seconds)
        if landings:
            earlier = min(earlier, min(landings) - 1)
        return earlier if earlier > STREAM_START else STREAM_START

    # -- frame supply ---------------------------------------------------------

    def _peek(self) -> Any:
        """The next frame in display order without consuming it; None at end of stream."""
        while not self._pending:
            if self._eof:
                return None
            self._decode_more()
        return self._pending[0]

    def _decode_more(self) -> None:
        if self._packets is None:
            self._seek(STREAM_START)
        assert self._packets is not None
        skip_test = self._disposable if self._skip_before is not None else None
        skip_before = self._skip_before
        for packet in self._packets:
            if self._landing is None:
                stamps = [t for t in (packet.dts, packet.pts) if t is not None]
                self._landing = min(stamps) if stamps else STREAM_START
                self._landing_on_keyframe = packet.is_keyframe
            pts = packet.pts
            if self._first_key_pts is None and packet.is_keyframe:
                self._first_key_pts = STREAM_START if pts is None else pts
                self._first_key_discard = packet_is_discard(packet)
            if (
                skip_test is not None
                and pts is not None
                and pts < skip_before
                and self._unneeded(pts)
                and skip_test(packet)
            ):
                self.stats.packets_skipped += 1
                if not packet_is_discard(packet):
                    bisect.insort(self._skipped_pts, pts)
                continue
            if pts is not None and not packet_is_discard(packet) and (
                self._max_pts_demuxed is None or pts > self._max_pts_demuxed
            ):
                self._max_pts_demuxed = pts
            self._sent += 1
            if packet.is_keyframe and pts is not None:
                self._keys_sent.append((pts, self._sent))
            try:
                frames = self.backend.send(packet)
            except DecodingError:
                self.stats.decode_errors += 1
                continue
            if frames:
                self._output(frames)
                return
        try:
            self._output(self.backend.drain())
        except DecodingError:
            self.stats.decode_errors += 1
        self._eof = True
        self._cut = self.source.cut_after()

    def _output(self, frames: list[Any]) -> None:
        self._pending.extend(frames)
        for frame in frames:
            pts = self.backend.pts_of(frame)
            if pts is None:
                continue
            if self._last_pts_out is not None and pts < self._last_pts_out:
                self._out_of_order = True
            self._last_pts_out = pts
            if self._max_pts_out is None or pts > self._max_pts_out:
                self._max_pts_out = pts

    # -- serving targets ------------------------------------------------------

    def _past(self, pts: int) -> bool:
        """Whether the frame with this pts can no longer come out: the demuxer
        sent the first keyframe after it (every packet it decodes from came
        before, leading pictures aside), and since then the decoder output a
        frame at or after that keyframe (so it emptied its reorder buffer of
        earlier pictures) or was sent `_REORDER_DELAY` more packets."""
        for key_pts, sent_at in self._keys_sent:
            if key_pts > pts:
                return ((self._max_pts_out is not None and self._max_pts_out >= key_pts)
                        or self._sent - sent_at >= _REORDER_DELAY)
        return False

    def _keep_early(self, pts: int, frame: Any) -> None:
        """Keep a frame that came out before the one being looked for: every
        frame this call wants, and up to `_REORDER_DELAY` others (for the next
        sequential call; past that the position is given up after the call)."""
        if pts in self._early:
            return  # a duplicate pts: the first one out is the frame
        if pts not in self._wanted and sum(p not in self._wanted for p in self._early) >= _REORDER_DELAY:
            self._position_lost = True
            return
        self._early[pts] = self.backend.retain(frame)

    def _served(self, target: Target, frame: Any) -> Any:
        self._cursor = target.seconds
        self._wanted.discard(target.pts)
        if self._early:  # frames before this one are behind the decoder's position now
            for pts in [p for p in self._early if p < target.pts]:
                del self._early[pts]
        return frame

    def _frame_with_pts(self, target: Target) -> Any:
        """Consume frames up to the one whose pts is `target.pts` and return it.

        Frames with a later pts that come out first (out-of-order output from
        a damaged stream) are kept, and decoding goes on until the frame
        comes out or cannot anymore (`_past`)."""
        backend = self.backend
        landings: list[int] = []
        for _ in range(_MAX_RETRIES):
            early = self._early.pop(target.pts, None)
            if early is not None:
                return self._served(target, early)
            frame = self._peek()
            while frame is not None:
                pts = backend.pts_of(frame)
                if pts == target.pts:
                    self._pending.popleft()
                    return self._served(target, frame)
                if pts is None or pts < target.pts:
                    self._pending.popleft()
                    if pts is not None:
                        self._cursor = self.seconds(pts)
                elif self._past(target.pts):
                    break
                else:
                    self._pending.popleft()
                    self._keep_early(pts, frame)
                frame = self._peek()
            what = f"Frame {target.frame_index} (pts {target.pts}, {target.seconds:.6f} s)"
            if frame is None:
                self._check_complete(what)
            # The frame did not come out. If decoding started at or before the
            # keyframe the plan asked for, it never will (damaged stream): stop
            # now. Otherwise the seek landed late: start from an earlier keyframe.
            # Out-of-order output means the pts (and so the plan's keyframe) are
            # wrong: the frame may be a leading picture that needs the keyframe
            # before, which the decoder drops when started at this one; one
            # retry from there (a second interval) settles it.
            if self._started_in_time(self._seek_pts) and (landings or not self._out_of_order):
                break
            earlier = self._retry_seek_pts(landings)
            if earlier is None:
                break
            self._seek(earlier)
        raise DecodingError(f"{what} was not produced by the decoder; the stream may be corrupt or truncated")

    def _frame_at_time(self, when: float, index: int | None = None) -> tuple[Any, Any]:
        """Consume frames up to the one displayed at `when`; returns it (retained)
        and the next frame (left pending; None at end of stream). `index`: the
        frame index `when` stands for (approximate mode on a constant-rate
        stream), so the last frame never answers for a later index."""
        backend = self.backend
        landings: list[int] = []
        when_pts = math.floor(when * self._tb_den / self._tb_num)
        for _ in range(_MAX_RETRIES):
            chosen = self._current if self._cursor is not None and self._cursor <= when else None
            frame = self._peek()
            while frame is not None:
                pts = backend.pts_of(frame)
                if pts is None:
                    self._pending.popleft()
                elif self.seconds(pts) <= when:
                    self._pending.popleft()
                    chosen = self._current = backend.retain(frame)
                    self._cursor = self.seconds(pts)
                else:
                    break
                frame = self._peek()
            if frame is None:
                self._check_complete(f"The frame displayed at {when:.6f} s")
            if chosen is not None:
                if frame is None:
                    self._check_not_truncated(chosen, when)
                self._check_in_cell(chosen, when, index, frame is None)
                return chosen, frame
            # No frame at or before `when` came out. Decoding started from a
            # keyframe displayed at or before `when` whose own frame is missing:
            # the stream is damaged there, and seeking earlier cannot help.
            if self._started_in_time(when_pts) and not self._first_key_discard:
                raise DecodingError(
                    f"No frame displayed at {when:.6f} s was produced by the decoder (decoding started at the "
                    f"keyframe at pts {self._first_key_pts}); the stream may be corrupt"
                )
            earlier = self._retry_seek_pts(landings)
            if earlier is not None:
                self._seek(earlier)  # landed after `when`: start before this keyframe
                continue
            if frame is None:
                promised_end = self._promised_end
                hint = (
                    f" although its header promises frames until {promised_end:.6f} s: the file looks truncated"
                    if promised_end is not None and when < promised_end else ""
                )
                raise DecodingError(f"No frame could be decoded at or after {when:.6f} s{hint}")
            # Nothing precedes this frame in the stream: it is the first one.
            self._pending.popleft()
            chosen = self._current = backend.retain(frame)
            self._cursor = self.seconds(backend.pts_of(frame))
            return chosen, self._peek()
        raise DecodingError(f"Could not position the decoder before {when:.6f} s")

    def _started_in_time(self, pts: int | None) -> bool:
        """Whether decoding since the last seek started from a keyframe at or
        before `pts`: then every frame from there on that the decoder can
        produce has come out in order, and a missing one never will."""
        return pts is not None and self._first_key_pts is not None and self._first_key_pts <= pts

    def _check_complete(self, what: str) -> None:
        """The source ran out of packets: if it stopped short of the stream's
        end (a shipped bundle), `what` needs packets it does not hold."""
        if self._cut is not None:
            raise MissingPacketsError(
                f"{what} needs packets that the packet bundle of {self.source.description} does not hold: "
                f"its packets stop after pts {self._cut}; build the bundle from the plan being executed"
            )

    def _check_not_truncated(self, last_frame: Any, when: float) -> None:
        """The stream ended before `when`. Fine if the header does not promise
        frames there (the last frame stays on screen); an error if it does:
        the file is cut short, and the last frame would be a wrong answer."""
        promised_end = self._promised_end
        if promised_end is None or when >= promised_end:
            return
        last_end = self.seconds(self.backend.pts_of(last_frame)) + self._duration(last_frame, None)
        tolerance = 1.0 / self._fps_hint if self._fps_hint else 0.0
        if when > last_end + tolerance:
            raise DecodingError(
                f"The video stream ends at {last_end:.6f} s, before the requested {when:.6f} s that its "
                f"header promises (up to {promised_end:.6f} s): the file looks truncated"
            )

    def _check_in_cell(self, chosen: Any, when: float, index: int | None, ended: bool) -> None:
        """A time standing for frame `index` lies in the middle of that frame's
        cell of the header's grid (approximate mode, constant rate): the frame
        displayed there must start in the cell. An earlier one means frame
        `index` is missing (damaged, or past the end of a cut file)."""
        if index is None or not self._fps_hint:
            return
        pts = self.seconds(self.backend.pts_of(chosen))
        cell_start = when - 0.5 / self._fps_hint
        if pts >= cell_start - 0.01 / self._fps_hint:  # a hundredth of a frame for rounded timestamps
            return
        where = "the stream ends with it" if ended else "the frames after it do not start until later"
        raise DecodingError(
            f"Frame {index} was not produced by the decoder: the header's frame rate places it at {when:.6f} s, "
            f"where the frame displayed is the one from {pts:.6f} s ({where}); the stream is truncated or damaged "
            "there, or its header miscounts; seek_mode='exact' counts the frames there are"
        )

    def _duration(self, frame: Any, following: Any) -> float:
        backend = self.backend
        if following is not None:
            pts, next_pts = backend.pts_of(frame), backend.pts_of(following)
            # A skipped (undecoded) picture between them is the real next frame.
            at = bisect.bisect_right(self._skipped_pts, pts)
            if at < len(self._skipped_pts) and self._skipped_pts[at] < next_pts:
                next_pts = self._skipped_pts[at]
            return self.seconds(next_pts - pts)
        own = backend.duration_of(frame)
        if own:
            return self.seconds(own)
        return 1.0 / self._fps_hint if self._fps_hint else 0.0
