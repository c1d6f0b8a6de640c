"""Each benchmark contender in a process of its own.

A peer library that crashes (a segfault in its native code, `abort()`), or
hangs, must cost only its own measurements, never the benchmark run, and
must not share state with framefeed or with other peers (CUDA contexts,
FFmpeg's global state, thread pools). So every contender runs in a
`framefeed.bench.worker` subprocess, started fresh, fed requests over a pipe,
and watched:

- a process that dies mid-request (signal or exit) yields `RunOutcome.status`
  "crashed" with its signal; the next request starts a fresh process;
- a request that takes longer than `timeout` seconds gets the process (and
  its process group) killed and status "timed out".

Workers inherit the environment; the directory holding the `framefeed`
package goes first on their PYTHONPATH so they import the same framefeed.
Their stderr (library chatter) goes to a log file whose last lines are kept
with a crash.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import framefeed

# One run (one workload call) of one contender may take this long by default.
DEFAULT_TIMEOUT_SECONDS = 120.0
# Starting a worker imports torch and the contender's library.
START_TIMEOUT_SECONDS = 120.0
_LOG_LINES_KEPT = 3


@dataclass
class RunOutcome:
    """What one request to a contender's process gave.

    status: "ok", "error" (the contender raised), "crashed" (the process died)
        or "timed out" (killed after the timeout).
    counts: the contender's own counters of the run (see `Contender.counts`).
    """

    status: str
    frames: int = 0
    seconds: float = 0.0
    nvdec_percent: float | None = None
    error: str | None = None
    signal: int | None = None
    counts: dict[str, int] | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def crash_text(returncode: int | None) -> tuple[str, int | None]:
    """("crashed: signal 11", 11) for a process killed by a signal, else
    ("crashed: exit code N", None)."""
    if returncode is not None and returncode < 0:
        return f"crashed: signal {-returncode}", -returncode
    return f"crashed: exit code {returncode}", None


class ContenderProcess:
    """A contender's worker process (see module docstring).

    Args:
        module, qualname: where the contender class is (`module.qualname`).
        device, threads: its constructor's arguments.
        timeout: seconds one request may take.
    """

    def __init__(self, module: str, qualname: str, device: str, threads: int,
                 timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self._command = [sys.executable, "-m", "framefeed.bench.worker", module, qualname, device, str(threads)]
        self.timeout = timeout
        self._process: subprocess.Popen[str] | None = None
        self._answers: queue.Queue[str | None] = queue.Queue()
        self._log: Any = None
        self._last_answer: dict[str, Any] = {}
        self._ready = False

    # -- lifetime ------------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        package_root = str(Path(framefeed.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in [package_root, env.get("PYTHONPATH", "")] if p)
        env.pop("FRAMEFEED_PROGRESS", None)
        return env

    def launch(self) -> None:
        """Start the worker without waiting for it (several start in parallel;
        the first request waits until it is ready)."""
        if self._process is None:
            self._log = tempfile.TemporaryFile(mode="w+", prefix="framefeed-bench-worker-")
            self._answers = queue.Queue()
            self._process = subprocess.Popen(
                self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
                env=self._environment(), start_new_session=True,  # its own process group, killed as one
            )
            threading.Thread(target=self._read_answers, args=(self._process, self._answers), daemon=True).start()
            self._ready = False

    def _start(self) -> RunOutcome:
        self.launch()
        outcome = self._await(START_TIMEOUT_SECONDS)
        self._ready = outcome.ok
        return outcome

    @staticmethod
    def _read_answers(process: subprocess.Popen[str], answers: queue.Queue[str | None]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            answers.put(line)
        answers.put(None)  # end of stream: the process ended

    def close(self) -> None:
        """Ask the worker to exit; kill it if it does not."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            if process.poll() is None and process.stdin is not None:
                process.stdin.write(json.dumps({"op": "exit"}) + "\n")
                process.stdin.flush()
            process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired, ValueError):
            self._kill(process)
        finally:
            self._close_files(process)

    def _kill(self, process: subprocess.Popen[str]) -> None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            process.kill()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a process SIGKILL cannot stop
            pass

    def _close_files(self, process: subprocess.Popen[str]) -> None:
        for stream in (process.stdin, process.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> ContenderProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests ------------------------------------------------------------------

    def probe(self, workloads: list[str]) -> tuple[str | None, list[str]]:
        """(None, supported workloads) or (why this contender cannot run, [])."""
        outcome = self._request({"op": "probe", "workloads": workloads}, START_TIMEOUT_SECONDS)
        if not outcome.ok:
            return outcome.error or outcome.status, []
        answer = self._last_answer
        return answer.get("unavailable"), list(answer.get("supports", []))

    def run(self, workload: str, path: str, params: dict[str, Any]) -> RunOutcome:
        """One call of `workload` on `path`, timed inside the worker."""
        return self._request({"op": "run", "workload": workload, "path": path, "params": params}, self.timeout)

    def _request(self, request: dict[str, Any], timeout: float) -> RunOutcome:
        if self._process is not None and not self._ready:  # launched, not yet heard from
            started = self._start()
            if not started.ok:
                return started
        if self._process is None or self._process.poll() is not None:
            if self._process is not None:
                self.close()
            started = self._start()
            if not started.ok:
                return started
        process = self._process
        assert process is not None and process.stdin is not None
        try:
            process.stdin.write(json.dumps(request) + "\n")
            process.stdin.flush()
        except OSError:
            pass  # the process is gone; _await reports how it ended
        outcome = self._await(timeout)
        if outcome.ok:
            answer = self._last_answer
            if request["op"] == "run":
                outcome = RunOutcome("ok", frames=int(answer["frames"]), seconds=float(answer["seconds"]),
                                     nvdec_percent=answer.get("nvdec_percent"), counts=answer.get("counts") or {})
        return outcome

    def _await(self, timeout: float) -> RunOutcome:
        """The next answer, or how the process failed to give one."""
        process = self._process
        assert process is not None
        try:
            line = self._answers.get(timeout=timeout)
        except queue.Empty:
            self._kill(process)
            self._close_files(process)
            self._process = None
            return RunOutcome("timed out", error=f"timed out after {timeout:g} s")
        if line is None:  # the process ended without answering
            try:
                returncode = process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._kill(process)
                returncode = process.returncode
            text, number = crash_text(returncode)
            tail = self._log_tail()
            self._close_files(process)
            self._process = None
            return RunOutcome("crashed", error=f"{text}{f' (last output: {tail})' if tail else ''}", signal=number)
        answer = json.loads(line)
        self._last_answer = answer
        if not answer.get("ok"):
            return RunOutcome("error", error=str(answer.get("error")))
        return RunOutcome("ok")

    def _log_tail(self) -> str:
        if self._log is None:
            return ""
        try:
            self._log.flush()
            self._log.seek(0)
            lines = deque((line.strip() for line in self._log if line.strip()), maxlen=_LOG_LINES_KEPT)
        except (OSError, ValueError):
            return ""
        return " | ".join(lines)[:300]
