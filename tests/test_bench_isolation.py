"""The benchmark's process isolation and NVML sampling, without a GPU:
contenders in worker processes (answers survive stdout noise, a crash is a
status with its signal, a hang is killed after the timeout and the next
request gets a fresh process) and the NVDEC utilisation sampler (inert
without NVML, a mean over the timed window with it)."""

from __future__ import annotations

import os
import sys
import time
import types
from pathlib import Path

import pytest

from framefeed.bench.isolation import ContenderProcess, crash_text
from framefeed.bench.nvml import DecoderUtilisation

TESTS = str(Path(__file__).resolve().parent)


@pytest.fixture(autouse=True)
def _stand_ins_importable(monkeypatch):
    """Workers import the stand-in peers from this directory."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in [TESTS, os.environ.get("PYTHONPATH", "")] if p))


def test_answers_survive_a_contender_writing_to_stdout():
    with ContenderProcess("stand_in_peers", "NoisyPeer", "cpu", 1, timeout=60) as process:
        assert process.probe(["sequential", "random_access"]) == (None, ["sequential"])
        first, second = process.run("sequential", "unused.mp4", {}), process.run("sequential", "unused.mp4", {})
    assert (first.status, first.frames, second.frames) == ("ok", 7, 7)
    assert first.seconds >= 0 and first.nvdec_percent is None  # CPU: no NVML sampling


def test_a_crash_is_an_outcome_and_the_next_request_gets_a_fresh_process():
    """(SIGSEGV is exercised end to end in test_cli_bench.)"""
    signal_number = 6
    with ContenderProcess("stand_in_peers", "AbortingPeer", "cpu", 1, timeout=60) as process:
        assert process.probe(["sequential"]) == (None, ["sequential"])
        for _ in range(2):
            outcome = process.run("sequential", "unused.mp4", {})
            assert (outcome.status, outcome.signal) == ("crashed", signal_number)
            assert outcome.error.startswith(f"crashed: signal {signal_number}")


def test_a_hang_is_killed_after_the_timeout():
    with ContenderProcess("stand_in_peers", "HangingPeer", "cpu", 1, timeout=2) as process:
        process.probe(["sequential"])
        began = time.monotonic()
        outcome = process.run("sequential", "unused.mp4", {})
        assert outcome.status == "timed out" and "2 s" in outcome.error
        assert time.monotonic() - began < 30


def test_an_exception_is_an_error_outcome_and_the_process_lives_on():
    with ContenderProcess("stand_in_peers", "RaisingPeer", "cpu", 1, timeout=60) as process:
        process.probe(["sequential"])
        outcome = process.run("sequential", "unused.mp4", {})
        assert (outcome.status, outcome.error) == ("error", "RuntimeError: the stand-in peer refuses")
        pid = process._process.pid
        process.run("sequential", "unused.mp4", {})
        assert process._process.pid == pid


def test_a_contender_that_cannot_be_created_is_reported_by_probe():
    with ContenderProcess("stand_in_peers", "NoSuchPeer", "cpu", 1, timeout=60) as process:
        reason, supported = process.probe(["sequential"])
    assert "could not create the contender" in reason and "NoSuchPeer" in reason and supported == []


def test_crash_text_names_the_signal_or_the_exit_code():
    assert crash_text(-6) == ("crashed: signal 6", 6)
    assert crash_text(3) == ("crashed: exit code 3", None)


# -- NVML ------------------------------------------------------------------------


def test_utilisation_without_nvml_is_none(monkeypatch):
    import framefeed.bench.nvml as nvml

    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    monkeypatch.setattr(nvml, "_nvml", None)
    monkeypatch.setattr(nvml, "_nvml_reason", None)
    sampler = DecoderUtilisation(0)
    assert not sampler.available and "NVML unavailable" in sampler.unavailable_reason
    sampler.start()
    assert sampler.stop() is None


def test_utilisation_is_the_mean_of_samples_over_the_window(monkeypatch):
    """A stand-in NVML whose decoder is busy 40% then 80% of the time."""
    import framefeed.bench.nvml as nvml

    readings = iter([40, 40, 80, 80] + [80] * 1000)
    fake = types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlDeviceGetHandleByUUID=lambda uuid: ("handle", uuid),
        nvmlDeviceGetHandleByIndex=lambda index: ("handle", index),
        nvmlDeviceGetDecoderUtilization=lambda handle: (next(readings), 166666),
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(nvml, "_nvml", None)
    monkeypatch.setattr(nvml, "_nvml_reason", None)
    monkeypatch.setattr(nvml, "POLL_SECONDS", 0.001)
    sampler = DecoderUtilisation(0)
    assert sampler.available
    sampler.start()
    time.sleep(0.05)
    mean = sampler.stop()
    assert 40 <= mean <= 80
    assert mean == pytest.approx(sum(sampler._samples) / len(sampler._samples))
    assert len(sampler._samples) >= 3
