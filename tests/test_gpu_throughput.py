"""benchmarks/gpu_throughput.py on a machine without a GPU: it imports and
answers --help, refuses to run with one clear line, and its crash
containment works with a stand-in decoder (tests/stand_in_peers.py) that
segfaults at 7 threads and hangs at 14: each failure is a row, the other
thread counts are measured."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_throughput.py"
TESTS = str(Path(__file__).resolve().parent)


@pytest.fixture(scope="module")
def gpu_throughput():
    spec = importlib.util.spec_from_file_location("gpu_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_throughput"] = module  # dataclasses look their module up while it loads
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("gpu_throughput", None)


def test_help_works_without_a_gpu():
    result = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--threads" in result.stdout and "--timeout" in result.stdout


def test_defaults_are_1_7_14_21_threads(gpu_throughput):
    args = gpu_throughput.parse_args([])
    assert args.thread_counts == [1, 7, 14, 21]
    assert gpu_throughput.parse_args(["--threads", "2,4"]).thread_counts == [2, 4]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the message on a machine without GPU")
def test_without_a_gpu_it_stops_with_one_line():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, str(SCRIPT), "--runs", "1"], capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "gpu_throughput: no CUDA GPU is visible to torch (torch.cuda.is_available() is False). "
        "This benchmark measures NVDEC: run it on a machine with an NVIDIA GPU."]


def test_a_crash_or_hang_costs_one_row(gpu_throughput, monkeypatch, tmp_path):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in [TESTS, os.environ.get("PYTHONPATH", "")] if p))
    method = gpu_throughput.Method("stand-in (NV12)", "stand_in_peers", "ThroughputStandIn", "cpu")
    rows = gpu_throughput.measure_method(method, "clip", tmp_path / "unused.mp4", [1, 7, 14, 21], runs=2,
                                         timeout=3)
    by_threads = {row["threads"]: row for row in rows}
    assert [row["threads"] for row in rows] == [1, 7, 14, 21]
    ok = by_threads[1]
    assert ok["status"] == "ok" and len(ok["runs_fps"]) == 2 and ok["median_fps"] > 0
    assert (ok["frames_decoded"], ok["frames_returned"]) == (10, 8)
    assert ok["nvdec_percent"] is None  # a CPU stand-in: no NVML reading
    assert (by_threads[7]["status"], by_threads[7]["signal"]) == ("crashed", 11)
    assert by_threads[14]["status"] == "timed out"
    assert by_threads[21]["status"] == "not run"  # a decoder that hung is not run again
    cells = [gpu_throughput.cell(by_threads[n]) for n in (1, 7, 14, 21)]
    assert cells[0].endswith("-*")  # no utilisation reading; decoded != returned
    assert cells[1:] == ["crashed: signal 11", "timed out", "not run"]


def test_the_table_marks_failures_and_frame_differences(gpu_throughput, capsys):
    rows = [
        {"file": "1080p H.264", "method": "m", "threads": 1, "status": "ok", "error": None, "signal": None,
         "median_fps": 518.0, "runs_fps": [518.0], "nvdec_percent": 71.2, "frames_returned": 240,
         "frames_decoded": 260},
        {"file": "1080p H.264", "method": "m", "threads": 7, "status": "crashed",
         "error": "crashed: signal 11 (last output: boom)", "signal": 11, "median_fps": None, "runs_fps": [],
         "nvdec_percent": None, "frames_returned": None, "frames_decoded": None},
    ]
    gpu_throughput.print_table({"gpu": "GPU", "driver": "1", "cpu_count": 16, "date": "d"}, rows, [1, 7])
    out = capsys.readouterr().out
    assert "518 71%*" in out and "crashed: signal 11" in out
    assert "decoded 260 frames, returned 240" in out and "! 1080p H.264 m at 7: crashed: signal 11" in out


def test_every_decoder_keeps_decoding_until_the_cell_has_lasted_its_minimum(gpu_throughput):
    """Cells of at least --min-seconds (1 s), so NVML samples several of its
    periods even where one pass over the file takes a fraction of it."""
    import time

    def one_pass(path):
        time.sleep(0.01)
        return 3, 4

    began = time.perf_counter()
    returned, decoded = gpu_throughput.run_threads(one_pass, "clip.mp4", 3, min_seconds=0.3)
    assert time.perf_counter() - began >= 0.3
    assert returned % 3 == 0 and returned > 3 * 3 and decoded * 3 == returned * 4  # several passes each
    assert gpu_throughput.run_threads(one_pass, "clip.mp4", 2) == (6, 8)  # no minimum: one pass each
    assert gpu_throughput.parse_args([]).min_seconds == 1.0
