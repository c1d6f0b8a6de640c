"""benchmarks/gpu_resize.py on a machine without a GPU: it answers --help,
refuses to run with one clear line, and computes its ratios and table from
rows (the measurements themselves need NVDEC)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_resize.py"


@pytest.fixture(scope="module")
def gpu_resize():
    spec = importlib.util.spec_from_file_location("gpu_resize", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_resize"] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("gpu_resize", None)
        sys.modules.pop("gpu_throughput", None)


def test_help_works_without_a_gpu():
    result = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--threads" in result.stdout and "--runs" in result.stdout


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the message on a machine without GPU")
def test_without_a_gpu_it_stops_with_one_line():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, str(SCRIPT), "--runs", "1"], capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "no CUDA GPU" in result.stderr


def test_ratios_and_table(gpu_resize, capsys):
    rows = [{"file": "1080p H.264", "mode": mode, "threads": 1, "status": "ok", "error": None, "median_fps": fps,
             "runs_fps": [fps], "nvdec_percent": 90.0} for mode, fps in zip(gpu_resize.MODES, (900.0, 1000.0, 1100.0, 500.0),
                                                                          strict=True)]
    rows.append({"file": "1080p HEVC", "mode": "full", "threads": 1, "status": "crashed", "error": "crashed: signal 11",
                 "median_fps": None, "runs_fps": [], "nvdec_percent": None})
    gpu_resize.add_ratios(rows)
    assert [(row["vs_full"], row["vs_full_interpolate"]) for row in rows] == [
        (1.0, 1.8), (1.11, 2.0), (1.22, 2.2), (0.56, 1.0), (None, None)]
    gpu_resize.print_table({"gpu": "stand-in", "driver": "-", "date": "today"}, rows)
    out = capsys.readouterr().out
    assert "fused resize" in out and "1.11x" in out and "2.00x" in out and "crashed: signal 11" in out


def test_ratios_are_taken_round_by_round(gpu_resize, capsys):
    """Round 1 was slow for every mode (a loaded machine): per-round ratios
    stay put where a ratio of medians would mix rounds."""
    fps = {"full": [1000.0, 500.0, 1000.0], "fused resize": [1200.0, 600.0, 1100.0],
           "fused crop": [1000.0, 500.0, 1000.0], "full + interpolate": [800.0, 400.0, 600.0]}
    rows = [{"file": "f", "mode": mode, "threads": 1, "status": "ok", "error": None,
             "median_fps": sorted(values)[1], "runs_fps": values, "nvdec_percent": None} for mode, values in fps.items()]
    gpu_resize.add_ratios(rows)
    resize = rows[1]
    assert resize["vs_full"] == 1.2 and resize["vs_full_range"] == [1.1, 1.2]
    assert resize["vs_full_interpolate"] == 1.5 and resize["vs_full_interpolate_range"] == [1.5, 1.83]
    gpu_resize.print_table({"gpu": "stand-in", "driver": "-", "date": "today"}, rows)
    assert "1.20x (1.10-1.20)" in capsys.readouterr().out
