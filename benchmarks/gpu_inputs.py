"""The device check's first step: encode every input of every later step at
once, on every core, before any GPU time is spent measuring.

Runs each step's own `--prepare-only` in a process of its own, all
together: the test corpus (its files themselves in parallel), the
throughput and fused-resize clips (`gpu_throughput.py`), the pool sweep's
files, the loader's and the service's, the probe's (`gpu_probe.py`) and the
doctor's. Each job's output is prefixed with its name; the exit status is
the number of jobs that failed. Arguments after `--` are not accepted: the
sizes are the device check's (`device_check.sh` passes the same ones).

Usage: PYTHONPATH=. python benchmarks/gpu_inputs.py [--pool-files 8] [--frames 240] ...
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CORPUS = r"""
import sys
from concurrent.futures import ProcessPoolExecutor
sys.path.insert(0, "tests")
import corpus

def make(name):
    return str(corpus.BY_NAME[name].path)

if __name__ == "__main__":
    first = [f.name for f in corpus.FILES if "_remux" not in getattr(f.make, "__qualname__", "")]
    later = [f.name for f in corpus.FILES if f.name not in first]  # copies of files made first
    with ProcessPoolExecutor() as pool:
        list(pool.map(make, first))
        list(pool.map(make, later))
    print(f"{len(first) + len(later)} corpus files ready")
"""


def jobs(args: argparse.Namespace) -> dict[str, list[str]]:
    python = sys.executable
    bench = REPO / "benchmarks"
    return {
        "corpus": [python, "-c", CORPUS],
        "throughput": [python, str(bench / "gpu_throughput.py"), "--prepare-only", "--frames", str(args.frames)],
        "pool": [python, str(bench / "pool_throughput.py"), "--mode", "gpu", "--prepare-only", "--files",
                 str(args.pool_files), "--frames", str(args.frames), "--codecs", args.pool_codecs],
        "loader": [python, str(bench / "loader_throughput.py"), "--mode", "gpu", "--prepare-only"],
        "service": [python, str(bench / "service_throughput.py"), "--mode", "gpu", "--prepare-only", "--files",
                    str(args.service_files), "--frames", str(args.service_frames)],
        "probe": [python, str(bench / "gpu_probe.py"), "--prepare-only"],
        "doctor": [python, "-m", "framefeed.cli", "doctor", "--prepare-only"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=240, help="frames of the throughput and pool clips")
    parser.add_argument("--pool-files", type=int, default=8)
    parser.add_argument("--pool-codecs", default="h264,hevc")
    parser.add_argument("--service-files", type=int, default=8)
    parser.add_argument("--service-frames", type=int, default=300)
    parser.add_argument("--only", help="comma-separated job names (default: all)")
    args = parser.parse_args(argv)
    chosen = jobs(args)
    if args.only:
        chosen = {name: command for name, command in chosen.items() if name in args.only.split(",")}
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(p for p in [str(REPO), os.environ.get("PYTHONPATH", "")] if p))
    began = time.perf_counter()
    running = {name: subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True) for name, command in chosen.items()}
    lock = threading.Lock()

    def relay(name: str, process: subprocess.Popen) -> None:
        for line in process.stdout:
            if line.strip() and not line.startswith(("x265 [", "Svt[")):
                with lock:
                    print(f"[{name}] {line.rstrip()}", flush=True)

    readers = [threading.Thread(target=relay, args=item, daemon=True) for item in running.items()]
    for reader in readers:
        reader.start()
    failed = 0
    for name, process in running.items():
        code = process.wait()
        with lock:
            print(f"[{name}] exit {code} after {time.perf_counter() - began:.0f}s", flush=True)
        failed += code != 0
    for reader in readers:
        reader.join(timeout=5)
    return failed


if __name__ == "__main__":
    sys.exit(main())
