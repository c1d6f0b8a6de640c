"""`framefeed doctor` (framefeed/doctor.py): without a GPU it says so in one
line and checks the CPU path; the roofline arithmetic; what counts as a
failure. The GPU sections run in benchmarks/device_check.sh."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from framefeed import doctor

REPO = Path(__file__).resolve().parent.parent


def test_roofline_is_engines_times_the_published_rate_at_the_measured_clock():
    # NVDEC application note: a Hopper-class engine, 1080p, at 1860 MHz.
    assert doctor.roofline_fps("h264", 7, 1860) == pytest.approx(7 * 771)
    assert doctor.roofline_fps("hevc", 7, 1755) == pytest.approx(7 * 1316 * 1755 / 1860)
    assert doctor.roofline_fps("vp9", 7, 1860) is None  # no published rate
    assert doctor.roofline_fps("h264", 7, None) is None


def test_a_failed_check_fails_the_report():
    assert doctor.passed({"cpu_path": {"status": "ok"}, "parity": [{"status": "cpu fallback: no AV1 decoder"}]})
    assert not doctor.passed({"parity": [{"status": "ok"}, {"status": "FAILED"}]})
    assert not doctor.passed({"throughput": {"status": "FAILED"}})
    assert not doctor.passed({"parity": [{"status": "error: RuntimeError: boom"}]})


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-GPU path")
def test_without_a_gpu_it_says_so_and_checks_the_cpu_path(tmp_path):
    env = {"PYTHONPATH": str(REPO), "FRAMEFEED_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin"}
    text = subprocess.run([sys.executable, "-m", "framefeed.cli", "doctor"], capture_output=True, text=True,
                          env=env, timeout=300, check=True).stdout
    no_gpu = [line for line in text.splitlines() if line.startswith("no GPU:")]
    assert len(no_gpu) == 1 and "checking the CPU path only" in no_gpu[0]
    assert "cpu path: ok" in text and text.rstrip().endswith("all checks passed")
    report = json.loads(subprocess.run([sys.executable, "-m", "framefeed.cli", "doctor", "--json"],
                                       capture_output=True, text=True, env=env, timeout=300, check=True).stdout)
    assert report["gpu"] is None and report["ok"] is True
    assert report["cpu_path"]["max_abs_diff"] == 0 and report["cpu_path"]["frames"] == 30
    assert report["versions"]["torch"] == torch.__version__
