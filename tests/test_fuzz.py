"""The fuzz harness, CI-sized: seeded damaged inputs over every container and
codec, each run in a forked child with a memory cap and a time limit. Fails on
any crash, hang, runaway allocation or undocumented exception type.

The long run with torchcodec side by side is `python benchmarks/fuzz_campaign.py`.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from types import SimpleNamespace

import pytest

import corpus
from framefeed.testing import fuzz_runner
from framefeed.testing.fuzz_campaign import Limits, outcome_counts, run_campaign
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
# The executor bounds decoding work per request (about one keyframe interval,
# two when the output order shows the pts are wrong), so no run should take
# longer than a clean decode of these small inputs: the slowest of the 1,232
# runs took 2.0 s on the 2-core machine at load 10 (0.9 s at lower load).
# A hang is anything past five times that.
CI_TIME_LIMIT_S = 10.0


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
    # Wrapped internals fail too: a clean type over a KeyError is a bug the caller cannot see.
    bad = [f"{r['outcome']}: {r['case']} ({r['damage']}) {r['source']} {r['seek_mode']}: {r['detail'][:300]}"
           for r in records if r["outcome"] in fuzz_runner.FAILING_OUTCOMES]
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


# -- internal errors behind documented types -------------------------------------------------------


def test_an_internal_error_wrapped_by_public_api_is_its_own_failing_outcome(monkeypatch):
    """A KeyError inside a decoding call comes out of the public API as a
    DecodingError (errors.public_api): by its outer type alone a clean error.
    The harness looks down the cause chain, calls it `wrapped_internal`,
    names what it wraps, and counts it as a failure (the CI subset above fails
    on one)."""
    from framefeed.decoders import VideoDecoder

    def broken(self, target):
        raise KeyError("an internal bug")

    monkeypatch.setattr(VideoDecoder, "_decode_one", broken)  # the forked child inherits it
    request = fuzz_runner.RunRequest(path=str(corpus.BY_NAME["h264_bframes_long_gop.mp4"].path),
                                     library="framefeed")
    result = fuzz_runner._run_forked(fuzz_runner._Library("framefeed"), request)
    assert result.outcome == "wrapped_internal", result
    assert result.detail.startswith("get_frame_at: framefeed.errors.DecodingError: ")
    assert "(wraps builtins.KeyError: 'an internal bug')" in result.detail
    assert "wrapped_internal" in fuzz_runner.FAILING_OUTCOMES and "clean_error" not in fuzz_runner.FAILING_OUTCOMES
    failing = next(call for call in result.calls if not call["ok"])
    assert failing["error"]["chain"] == ["framefeed.errors.DecodingError", "builtins.KeyError"]


def _raised(outer: BaseException, *causes: BaseException) -> BaseException:
    """`outer` as raised from causes[0], raised from causes[1], ..."""
    chain = [outer, *causes]
    for upper, lower in itertools.pairwise(chain):
        upper.__cause__ = lower
    return chain[0]


def test_deliberate_chains_of_damaged_input_stay_clean():
    import struct

    import av

    from framefeed.errors import DecodingError, VideoOpenError

    library = SimpleNamespace(documented=(VideoOpenError, DecodingError))
    ffmpeg = av.error.InvalidDataError(1094995529, "Invalid data found when processing input")
    cases = {
        "clean_error": [
            VideoOpenError("no video"),
            _raised(DecodingError("FFmpeg could not decode a packet"), ffmpeg),
            _raised(VideoOpenError("damaged MP4 header"), ValueError("damaged MP4 header: ..."),
                    struct.error("unpack requires a buffer of 8 bytes")),  # the parser's own verdict
            _raised(DecodingError("Reading failed"), OSError(5, "Input/output error")),
            _raised(VideoOpenError("failed"), DecodingError("data unreadable at open time"), ffmpeg),
        ],
        "wrapped_internal": [
            _raised(DecodingError("failed with an internal IndexError"), IndexError("index 9 is out of bounds")),
            _raised(VideoOpenError("failed"), DecodingError("x"), AttributeError("'NoneType' has no attribute")),
            _raised(DecodingError("failed with an internal RuntimeError"), RuntimeError("torch: shape mismatch")),
            _raised(VideoOpenError("failed"), struct.error("unpack requires a buffer")),  # not through the parser
        ],
    }
    for outcome, errors in cases.items():
        for error in errors:
            assert fuzz_runner._classify_error(library, error) == outcome, (outcome, fuzz_runner._describe(error))
    suppressed = DecodingError("x")
    suppressed.__context__, suppressed.__suppress_context__ = KeyError("k"), True  # raise ... from None
    assert fuzz_runner._classify_error(library, suppressed) == "clean_error"
