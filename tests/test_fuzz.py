"""The fuzz harness, CI-sized: seeded damaged inputs over every container and
codec, each run in a forked child with a memory cap and a time limit. Fails on
any crash, hang, runaway allocation or undocumented exception type.

The long run with torchcodec side by side is `python benchmarks/fuzz_campaign.py`.
"""

from __future__ import annotations

import os
import signal
import time
from types import SimpleNamespace

import pytest

import corpus
from framefeed.testing import fuzz_runner
from framefeed.testing.fuzz_campaign import FAILURES, Limits, outcome_counts, run_campaign
from framefeed.testing.fuzz_inputs import (
    MUTATIONS,
    SEEDS,
    FuzzCase,
    generate_cases,
    header_ranges,
    seed_path,
)

# 11 seeds x 28 rounds: every seed meets every mutation four times (about a
# minute on two cores).
CI_CASES = 308
# Generous: a damaged stream may still be decoded in full several times over
# until the executor bounds its work per request (issue 10); the inputs are small.
CI_TIME_LIMIT_S = 60.0


def _seed_root():
    return corpus.cache_dir() / "fuzz-seeds-v1"


def test_ci_subset_has_no_crash_hang_runaway_or_undocumented_exception():
    cases = generate_cases(CI_CASES, seed=2024, include_campaign_seeds=False)
    assert {c.seed for c in cases} == {s.name for s in SEEDS if not s.campaign_only}
    assert {c.mutation for c in cases} == set(MUTATIONS)
    records = run_campaign(cases, ["framefeed"], limits=Limits(time_limit_s=CI_TIME_LIMIT_S),
                           seed_root=_seed_root())
    counts = outcome_counts(records)["framefeed"]
    assert counts["runs"] == CI_CASES * 4
    bad = [f"{r['outcome']}: {r['case']} ({r['damage']}) {r['source']} {r['seek_mode']}: {r['detail'][:300]}"
           for r in records if r["outcome"] in FAILURES]
    assert not bad, "\n".join(bad)
    # The harness exercised both outcomes that are allowed.
    assert counts["ok"] > 0 and counts["clean_error"] > 0, counts


def test_cases_are_reproducible_and_aim_at_headers():
    case = FuzzCase("h264.mp4", "bit_flips", 12345)
    first, description = case.data(_seed_root())
    again, _ = case.data(_seed_root())
    assert first == again and "bit flip" in description
    original = seed_path(next(s for s in SEEDS if s.name == "h264.mp4"), _seed_root()).read_bytes()
    ranges = header_ranges(original, "h264.mp4")
    assert any(original[start + 4:start + 8] == b"moov" for start, _ in ranges)


# -- the harness's own verdicts --------------------------------------------------------------


def _stub_library(open_source):
    return SimpleNamespace(name="stub", documented=(ValueError,), samplers=None, open=open_source)


def _run_stub(open_source, **limits) -> fuzz_runner.RunResult:
    request = fuzz_runner.RunRequest(path=str(corpus.BY_NAME["h264_bframes_long_gop.mp4"].path), library="stub",
                                     **limits)
    return fuzz_runner._run_forked(_stub_library(open_source), request)


def test_harness_classifies_crash_hang_memory_and_exception_types():
    def segfault(source, mode):
        os.kill(os.getpid(), signal.SIGSEGV)

    def sleep(source, mode):
        time.sleep(30)

    def hog(source, mode):
        return bytearray(4 << 30)  # over the address-space cap

    def touch(source, mode):
        block = bytearray(96 << 20)
        block[::4096] = b"\x01" * len(block[::4096])  # resident, under the cap
        raise ValueError("bad data")

    def leak(source, mode):
        raise KeyError("internal")

    assert _run_stub(segfault).outcome == "crash"
    hang = _run_stub(sleep, time_limit_s=1.0)
    assert hang.outcome == "hang" and hang.seconds < 10
    assert _run_stub(hog, memory_cap_mb=1024).outcome == "memory"
    assert _run_stub(touch, rss_budget_mb=32).outcome == "memory"
    assert _run_stub(touch).outcome == "clean_error"
    assert _run_stub(leak).outcome == "undocumented"


@pytest.mark.parametrize("message, outcome", [
    ("Unable to allocate 16.0 GiB for an array", "memory"),  # numpy: our allocation
    ("[Errno 12] Cannot allocate memory", "clean_error"),  # FFmpeg refused: its own bound
])
def test_memory_errors_from_ffmpeg_are_its_bounded_answer(message, outcome):
    library = _stub_library(None)
    error = ValueError("wrapped")
    error.__cause__ = MemoryError(message)
    assert fuzz_runner._classify_error(library, error) == outcome
