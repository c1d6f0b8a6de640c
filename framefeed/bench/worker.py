"""The process one benchmark contender runs in (see `isolation`).

Started as `python -m framefeed.bench.worker MODULE CLASS DEVICE THREADS`, it
creates `MODULE.CLASS(DEVICE, THREADS)` and answers requests, one JSON object
per line on stdin, with one JSON object per line:

- `{"op": "probe", "workloads": [...]}` ->
  `{"ok": true, "unavailable": str | null, "supports": [...]}`
- `{"op": "run", "workload": str, "path": str, "params": {...}}` ->
  `{"ok": true, "frames": int, "seconds": float, "nvdec_percent": float | null,
  "counts": {str: int}}` (`counts`: what the contender put in its `counts`)
  or `{"ok": false, "error": str}` (a Python exception; a crash ends the process)
- `{"op": "exit"}` -> the process exits.

`seconds` is measured here, around the contender's call only (CUDA work
synchronised), so process start-up and the pipe are never timed. The
answers travel on a private copy of the original stdout: anything the
contender's libraries print (to Python's or C's stdout) goes to stderr.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from typing import Any


def _protocol_channel() -> Any:
    """A private stream for answers; fd 1 (C and Python stdout) goes to stderr."""
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return channel


def _first_line(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text.splitlines()[0][:300] if text.strip() else type(error).__name__


class _Worker:
    def __init__(self, module: str, qualname: str, device: str, threads: int) -> None:
        factory: Any = importlib.import_module(module)
        for part in qualname.split("."):
            factory = getattr(factory, part)
        self.contender = factory(device, threads)
        self.device = device
        self._sampler: Any = None

    def probe(self, workloads: list[str]) -> dict[str, Any]:
        reason = self.contender.unavailable_reason()
        supported = [] if reason else [w for w in workloads if self.contender.supports(w)]
        return {"ok": True, "unavailable": reason, "supports": supported}

    def run(self, workload: str, path: str, params: dict[str, Any]) -> dict[str, Any]:
        sampler = self._utilisation_sampler()
        self.contender.counts = {}
        if sampler is not None:
            sampler.start()
        try:
            start = time.perf_counter()
            produced = self.contender.run(workload, path, params)
            seconds = time.perf_counter() - start
        finally:
            percent = sampler.stop() if sampler is not None else None
        counts = {str(k): int(v) for k, v in (getattr(self.contender, "counts", None) or {}).items()}
        return {"ok": True, "frames": int(produced), "seconds": seconds, "nvdec_percent": percent, "counts": counts}

    def _utilisation_sampler(self) -> Any:
        if not self.device.startswith("cuda"):
            return None
        if self._sampler is None:
            from framefeed.bench.nvml import DecoderUtilisation

            index = int(self.device.split(":")[1]) if ":" in self.device else 0
            self._sampler = DecoderUtilisation(index)
        return self._sampler


def main(argv: list[str]) -> int:
    channel = _protocol_channel()
    module, qualname, device, threads = argv
    try:
        worker = _Worker(module, qualname, device, int(threads))
    except Exception as error:  # reported once; the parent skips this contender
        channel.write(json.dumps({"ok": False, "error": f"could not create the contender: {_first_line(error)}"})
                      + "\n")
        return 1
    channel.write(json.dumps({"ok": True, "ready": True}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        op = request.get("op")
        if op == "exit":
            break
        try:
            if op == "probe":
                answer = worker.probe(request["workloads"])
            elif op == "run":
                answer = worker.run(request["workload"], request["path"], request["params"])
            else:
                answer = {"ok": False, "error": f"unknown request {op!r}"}
        except Exception as error:  # a peer failing is a result, not the end of the worker
            answer = {"ok": False, "error": _first_line(error)}
        channel.write(json.dumps(answer) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
