"""Run a decoding library on fuzz inputs, one forked child per run, and
classify what happened.

A run opens one input with one library (framefeed or torchcodec), from a path
or from bytes, in one seek mode, then makes a few decoding calls (first, last
and middle frame, a batch, a frame by time, a sampler). Each run happens in a
child forked from a "zygote" process that imported the library once (so a run
costs milliseconds, not an interpreter start), under an address-space cap
(`RLIMIT_AS`) and a time limit. Outcomes:

- `ok`: every call returned frames;
- `clean_error`: a documented exception type with a message (for framefeed:
  VideoOpenError, DecodingError, FrameTimeOutOfRangeError,
  CudaUnavailableError; for a peer: the built-in types its API documents),
  caused (if at all) by what damaged input legitimately raises: FFmpeg's
  errors, OSError, ValueError (a parser's verdict on the data);
- `wrapped_internal`: a documented exception type whose cause chain holds an
  internal error (a KeyError, IndexError, AttributeError, RuntimeError, ...
  that `framefeed.errors.public_api` turned into a documented type): the
  caller sees a clean error, but a bug is underneath (see `wrapped_internal`);
- `wrong_frame`: a call returned a frame the file contradicts, judged by
  PyAV's own sequential decode of the input: a picture PyAV decodes at
  another size than the stream's (a frame-size change must raise, never fill
  a slot of the stream's size), or the same frame for the first and the last
  index of a stream PyAV decodes at least three distinct frames of (a header
  whose timing contradicts its packets; see `_wrong_frames`);
- `undocumented`: any other exception type;
- `memory`: resident memory grown past the run's budget, or a Python-level
  MemoryError anywhere in the exception chain (FFmpeg refusing an allocation
  is counted apart, in `ffmpeg_refused_memory`: see `_classify_error`);
- `crash`: the child died from a signal or exited without a result;
- `hang`: the child passed the time limit and was killed.

Usage from Python: `with Zygote("framefeed") as z: z.run(RunRequest(...))`.
"""

from __future__ import annotations

import faulthandler
import json
import math
import os
import resource
import select
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from framefeed.fork_safety import parent_garbage_kept_from_children

OUTCOMES = ("ok", "clean_error", "wrapped_internal", "wrong_frame", "undocumented", "memory", "crash", "hang")
# The outcomes that fail the harness (the CI subset, the campaign's exit status).
FAILING_OUTCOMES = ("wrapped_internal", "wrong_frame", "undocumented", "memory", "crash", "hang")
# Worst first: a run's outcome is the worst over its open and its calls.
_SEVERITY = {name: rank for rank, name in enumerate(reversed(OUTCOMES))}
# What damaged input legitimately raises underneath a documented error (besides
# FFmpeg's own errors): I/O failures, and ValueError, a parser's verdict on the
# data (framefeed chains its MP4 box parser's ValueError, and public_api never
# wraps a ValueError: it passes argument errors through as they are).
_DATA_ERRORS = (OSError, ValueError, MemoryError)


@dataclass
class RunRequest:
    """One run: `library` decodes the file at `path` given as `source`
    ("path" or "bytes") in `seek_mode`; `rng_seed` picks the calls."""

    path: str
    library: str
    source: str = "path"
    seek_mode: str = "exact"
    rng_seed: int = 0
    time_limit_s: float = 20.0
    memory_cap_mb: int = 2048  # address space the child may add to the zygote's
    rss_budget_mb: float = 256.0  # resident memory the child may add
    # Judge returned frames against PyAV's own decode (`wrong_frame`): the
    # campaign asks for it where a mutation aims at sizes or header timing.
    judge_frames: bool = True


@dataclass
class RunResult:
    outcome: str
    detail: str  # the exception ("Type: message"), the signal, or ""
    seconds: float
    rss_growth_mb: float | None = None
    num_frames: int | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)
    ffmpeg_refused_memory: bool = False  # FFmpeg answered "Cannot allocate memory"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# -- the libraries ---------------------------------------------------------------------


class _Library:
    """What a run needs from a decoding library."""

    def __init__(self, name: str) -> None:
        self.name = name
        if name == "framefeed":
            from framefeed import VideoDecoder, samplers
            from framefeed.errors import (
                CudaUnavailableError,
                DecodingError,
                FrameTimeOutOfRangeError,
                VideoOpenError,
            )

            self.documented: tuple[type[BaseException], ...] = (
                VideoOpenError, DecodingError, FrameTimeOutOfRangeError, CudaUnavailableError)
        elif name == "torchcodec":
            from torchcodec import samplers
            from torchcodec.decoders import VideoDecoder

            self.documented = (RuntimeError, ValueError, IndexError, TypeError)
        else:
            raise ValueError(f"Unknown library {name!r}: expected 'framefeed' or 'torchcodec'")
        self.decoder_type = VideoDecoder
        self.samplers = samplers

    def open(self, source: Any, seek_mode: str) -> Any:
        return self.decoder_type(source, seek_mode=seek_mode)


def _plan_calls(num_frames: int, begin: float | None, end: float | None, rng_seed: int) -> list[tuple[str, Any]]:
    import random

    rng = random.Random(rng_seed)
    calls: list[tuple[str, Any]] = []
    if num_frames > 0:
        calls += [
            ("get_frame_at", 0),
            ("get_frame_at", num_frames - 1),
            ("getitem", num_frames // 2),
            ("get_frames_at", [rng.randrange(num_frames) for _ in range(3)]),
        ]
    if begin is not None and end is not None and math.isfinite(begin) and math.isfinite(end) and end > begin:
        calls.append(("get_frame_played_at", begin + (end - begin) * rng.random()))
    if num_frames > 0:
        calls.append(("clips_at_random_indices", rng_seed))
    return calls


def _make_call(library: _Library, decoder: Any, name: str, arg: Any) -> tuple[list[float], list[float]]:
    """Run one call; returns the pts (seconds) and mean pixel value of each frame
    (the frames' `(height, width)` are recorded by `_exercise`)."""
    import torch

    if name == "getitem":
        data, pts = decoder[arg], None
    elif name == "get_frame_at":
        frame = decoder.get_frame_at(arg)
        data, pts = frame.data, [frame.pts_seconds]
    elif name == "get_frame_played_at":
        frame = decoder.get_frame_played_at(arg)
        data, pts = frame.data, [frame.pts_seconds]
    elif name == "get_frames_at":
        batch = decoder.get_frames_at(arg)
        data, pts = batch.data, batch.pts_seconds.tolist()
    elif name == "clips_at_random_indices":
        torch.manual_seed(arg)
        batch = library.samplers.clips_at_random_indices(decoder, num_clips=2, num_frames_per_clip=2)
        data, pts = batch.data, batch.pts_seconds.reshape(-1).tolist()
    else:
        raise ValueError(f"unknown call {name}")
    frames = data.reshape(-1, *data.shape[-3:])
    means = [round(float(f.float().mean()), 3) for f in frames]
    return (pts if pts is not None else [None] * len(means)), means


def _chain(error: BaseException) -> list[BaseException]:
    """`error`, then what it was raised from (or during), outermost first, as
    a traceback prints them (`raise ... from None` ends the chain)."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        if current.__cause__ is not None:
            current = current.__cause__
        else:
            current = None if current.__suppress_context__ else current.__context__
    return chain


def _describe(error: BaseException) -> dict[str, Any]:
    chain = [f"{type(link).__module__}.{type(link).__qualname__}" for link in _chain(error)]
    return {"type": chain[0], "message": str(error)[:400], "chain": chain}


def _from_ffmpeg(error: BaseException) -> bool:
    return type(error).__module__.split(".")[0] == "av"


def wrapped_internal(documented: tuple[type[BaseException], ...], error: BaseException) -> BaseException | None:
    """The internal error underneath `error`, or None. Down the cause chain,
    past the documented types, the first other link decides: FFmpeg's errors
    and `_DATA_ERRORS` are the data speaking (nothing below them is looked
    at: a ValueError is framefeed's own verdict on what it parsed); anything
    else (KeyError, IndexError, AttributeError, RuntimeError, TypeError,
    struct.error, ...) is a bug that a documented type now hides."""
    for link in _chain(error)[1:]:
        if isinstance(link, documented):
            continue
        if _from_ffmpeg(link) or isinstance(link, _DATA_ERRORS):
            return None
        return link
    return None


def _classify_error(library: _Library, error: BaseException) -> str:
    """`memory` when a Python-level allocation failed (numpy's "Unable to
    allocate 16 GiB", or the cap) anywhere in the chain; FFmpeg refusing an
    allocation ("Cannot allocate memory": its own limit of 2 GiB per block,
    or the cap on a reservation it never touches) is FFmpeg's bounded answer
    to a damaged file, so it counts as the error it was turned into.
    Resident memory is checked separately, against the run's budget."""
    for link in _chain(error):
        from_ffmpeg = _from_ffmpeg(link) or "cannot allocate memory" in str(link).lower()
        if (isinstance(link, MemoryError) and not from_ffmpeg) or "bad_alloc" in str(link):
            return "memory"
    if not isinstance(error, library.documented):
        return "undocumented"
    return "wrapped_internal" if wrapped_internal(library.documented, error) is not None else "clean_error"


def _error_detail(library: _Library, where: str, error: BaseException) -> str:
    described = _describe(error)
    detail = f"{where}: {described['type']}: {described['message']}"
    inner = wrapped_internal(library.documented, error)
    if inner is not None:
        detail += f" (wraps {type(inner).__module__}.{type(inner).__qualname__}: {str(inner)[:200]})"
    return detail


def _ffmpeg_refused_memory(error: BaseException) -> bool:
    return any("cannot allocate memory" in str(link).lower() for link in _chain(error))


def _rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


def _vsz_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _exercise(library: _Library, request: RunRequest) -> dict[str, Any]:
    """The child's work: open, call, report (never raises)."""
    start_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cap = _vsz_bytes() + (request.memory_cap_mb << 20)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    report: dict[str, Any] = {"calls": [], "outcome": "ok", "detail": ""}

    def worst(outcome: str, detail: str) -> None:
        if _SEVERITY[outcome] < _SEVERITY[report["outcome"]]:
            report["outcome"], report["detail"] = outcome, detail

    warnings.simplefilter("ignore")
    source: Any = request.path if request.source == "path" else Path(request.path).read_bytes()
    try:
        decoder = library.open(source, request.seek_mode)
        num_frames = len(decoder)
        meta = decoder.metadata
        begin, end = meta.begin_stream_seconds, meta.end_stream_seconds
        report["num_frames"] = num_frames
    except Exception as error:
        worst(_classify_error(library, error), _error_detail(library, "open", error))
        report["open_error"] = _describe(error)
        report["ffmpeg_refused_memory"] = _ffmpeg_refused_memory(error)
        decoder = None
    if decoder is not None:
        turned = round((getattr(meta, "rotation", None) or 0) / 90) % 2 == 1  # PyAV's pictures are not turned
        report["frame_size"] = [meta.width, meta.height] if turned else [meta.height, meta.width]
        for name, arg in _plan_calls(num_frames, begin, end, request.rng_seed):
            started = time.perf_counter()
            call: dict[str, Any] = {"call": name, "arg": arg}
            try:
                call["pts"], call["means"] = _make_call(library, decoder, name, arg)
                call["ok"] = True
            except Exception as error:
                call["ok"] = False
                call["error"] = _describe(error)
                worst(_classify_error(library, error), _error_detail(library, name, error))
                report["ffmpeg_refused_memory"] = report.get("ffmpeg_refused_memory") or _ffmpeg_refused_memory(error)
            call["seconds"] = round(time.perf_counter() - started, 4)
            report["calls"].append(call)
    report["rss_growth_mb"] = round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start_rss) / 1024, 1)
    wrong = _wrong_frames(report, source) if decoder is not None and request.judge_frames else ""
    if wrong:
        worst("wrong_frame", wrong)
    if report["rss_growth_mb"] > request.rss_budget_mb:
        worst("memory", f"resident memory grew {report['rss_growth_mb']} MB (budget {request.rss_budget_mb} MB)")
    return report


def _pyav_pictures(source: Any) -> dict[float, tuple[int, int]] | None:
    """What PyAV's plain sequential decode of the input shows: `(height,
    width)` of the picture at each pts in seconds (rounded to 1 us); None when
    PyAV cannot decode it (nothing to judge against)."""
    import io

    import av

    pictures: dict[float, tuple[int, int]] = {}
    try:
        with av.open(io.BytesIO(source) if isinstance(source, bytes) else source) as container:
            for frame in container.decode(video=0):
                if frame.pts is not None and frame.time_base is not None:
                    pictures.setdefault(round(float(frame.pts * frame.time_base), 6), (frame.height, frame.width))
    except Exception:  # damaged beyond PyAV too: no verdict
        return pictures or None
    return pictures or None


def _wrong_frames(report: dict[str, Any], source: Any) -> str:
    """The two rules a returned frame must keep (see `wrong_frame` in the
    module docstring); "" when they hold or cannot be judged."""
    returned = [(call["call"], pts) for call in report["calls"] if call.get("ok") for pts in call["pts"]
                if pts is not None]
    if not returned:
        return ""
    pictures = _pyav_pictures(source)
    if pictures is None:
        return ""
    height, width = report["frame_size"]
    for name, pts in returned:
        size = pictures.get(round(pts, 6))
        if size is not None and size != (height, width):
            return (f"{name} returned the frame at {pts:.6f} s as {width}x{height}, the stream's size, "
                    f"but it decodes at {size[1]}x{size[0]}")
    ends = {call["arg"]: call["pts"][0] for call in report["calls"]
            if call.get("ok") and call["call"] == "get_frame_at" and call["pts"][0] is not None}
    distinct = len(pictures)
    if len(ends) == 2 and distinct >= 3 and len({round(p, 6) for p in ends.values()}) == 1:
        return (f"the first and the last index both returned the frame at {next(iter(ends.values())):.6f} s "
                f"of a stream PyAV decodes {distinct} distinct frames of")
    return ""


# -- the zygote: imports once, forks per run -------------------------------------------------


def _run_forked(library: _Library, request: RunRequest) -> RunResult:
    read_fd, write_fd = os.pipe()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read_fd)
        faulthandler.disable()  # a crash is the verdict, not something to print
        try:
            payload = json.dumps(_exercise(library, request), default=str).encode()
        except BaseException as error:  # report, never return into the zygote's loop
            payload = json.dumps({"outcome": "undocumented", "detail": f"harness: {error!r}", "calls": []}).encode()
        with os.fdopen(write_fd, "wb") as out:
            out.write(payload)
        os._exit(0)
    os.close(write_fd)
    chunks, deadline, timed_out = [], started + request.time_limit_s, False
    with os.fdopen(read_fd, "rb") as pipe:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                os.kill(pid, signal.SIGKILL)
                break
            ready, _, _ = select.select([pipe], [], [], remaining)
            if ready:
                chunk = os.read(pipe.fileno(), 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    seconds = round(time.monotonic() - started, 3)
    if timed_out:
        return RunResult("hang", f"killed after {request.time_limit_s} s", seconds)
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        return RunResult("crash", f"signal {number} ({signal.Signals(number).name})", seconds)
    try:
        report = json.loads(b"".join(chunks))
    except ValueError:
        return RunResult("crash", f"exit status {os.WEXITSTATUS(status)} without a result", seconds)
    return RunResult(report["outcome"], report["detail"], seconds, report.get("rss_growth_mb"),
                     report.get("num_frames"), report["calls"], bool(report.get("ffmpeg_refused_memory")))


def serve(library_name: str) -> None:
    """Zygote main loop: one JSON request per stdin line, one JSON result per stdout line."""
    import torch

    torch.set_num_threads(1)
    # The protocol gets its own copy of stdout; anything a library prints goes to stderr.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    library = _Library(library_name)
    # Children never collect the zygote's objects: no finalizer of its runs in
    # them, and no collection touches (so copies) its whole heap, which had made
    # runs about twice as slow.
    with parent_garbage_kept_from_children():
        out.write("ready\n")
        out.flush()
        for line in sys.stdin:
            if not line.strip():
                continue
            request = RunRequest(**json.loads(line))
            out.write(json.dumps(_run_forked(library, request).to_json(), default=str) + "\n")
            out.flush()


class Zygote:
    """A process that imported `library` and forks one child per run."""

    def __init__(self, library: str, *, stderr: Any = subprocess.DEVNULL) -> None:
        self.library = library
        self._stderr = stderr  # FFmpeg logs plenty about damaged input
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> Zygote:
        self._start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "framefeed.testing.fuzz_runner", "--serve", self.library],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True, bufsize=1,
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if line.strip() != "ready":
            self.close()
            raise RuntimeError(f"the {self.library} fuzz zygote did not start (got {line!r})")

    def run(self, request: RunRequest) -> RunResult:
        """Run one request; the zygote enforces the limits."""
        if self._process is None or self._process.poll() is not None:
            self._start()
        assert self._process is not None and self._process.stdin and self._process.stdout
        self._process.stdin.write(json.dumps(asdict(request)) + "\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        if not line:
            self.close()
            return RunResult("crash", "the zygote died", 0.0)
        return RunResult(**json.loads(line))

    def close(self) -> None:
        if self._process is not None:
            if self._process.stdin:
                self._process.stdin.close()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None


def library_available(name: str) -> bool:
    """Whether `name` imports here (torchcodec needs FFmpeg's shared libraries)."""
    result = subprocess.run([sys.executable, "-c", f"import {name}.decoders"], capture_output=True)
    return result.returncode == 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(sys.argv[2])
    else:
        sys.exit("usage: python -m framefeed.testing.fuzz_runner --serve LIBRARY")
