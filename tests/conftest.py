"""Shared fixtures: the generated corpus and its PyAV ground truth; what
`cuda`-marked tests do without a usable GPU.

Tests marked `cuda` (directly, or through the "cuda" entry of
`backends_under_test.BACKENDS`) need an NVIDIA GPU that NVDEC can be used on
(PyNvVideoCodec and CuPy importable). Without one they are skipped, unless
`FRAMEFEED_REQUIRE_CUDA=1`: then each fails, so a GPU CI job cannot pass by
skipping everything.
"""

from __future__ import annotations

import functools
import os

import pytest
import torch

import corpus

REQUIRE_CUDA = os.environ.get("FRAMEFEED_REQUIRE_CUDA", "").strip() not in ("", "0")

# The tests' torch work is many small CPU ops (the emulated NVDEC's reference
# colour conversion above all). Intra-op threads gain little on such sizes and,
# on a busy CI machine, spin against the decoders: 20x slower when measured
# on 2 shared cores. One thread keeps the suite's time predictable.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def corpus_files():
    """Generate (or reuse) every corpus file once per session; name -> path."""
    return {entry.name: entry.path for entry in corpus.FILES}


@functools.cache
def cuda_unavailable_reason() -> str:
    """Why `cuda` tests cannot run in this process ("" when they can)."""
    try:
        if not torch.cuda.is_available():
            return "torch.cuda.is_available() is False"
        from framefeed.engine.backends.gpu_decode import nvdec_unavailable_reason

        reason = nvdec_unavailable_reason()
    except Exception as error:  # pragma: no cover - import problems surface elsewhere
        return f"framefeed.engine.backends.gpu_decode failed ({type(error).__name__}: {error})"
    return f"NVDEC unavailable: {reason}" if reason else ""


def pytest_runtest_setup(item):
    """`cuda` tests skip (or, with FRAMEFEED_REQUIRE_CUDA=1, fail) before any
    of their fixtures is set up: a module-scoped GPU fixture must not run."""
    if item.get_closest_marker("cuda") is None:
        return
    reason = cuda_unavailable_reason()
    if reason and REQUIRE_CUDA:
        pytest.fail(f"FRAMEFEED_REQUIRE_CUDA=1 but {reason}", pytrace=False)
    if reason:
        pytest.skip(f"needs a CUDA GPU with NVDEC: {reason}")


# The longest files, started first: the README's command runs the suite on two
# xdist workers, one file per worker at a time (`--dist loadfile`), and a file of
# minutes queued last (the image build) would leave one worker idle at the end.
LONGEST_FILES_FIRST = ("test_docker.py", "test_fuzz.py", "test_cli_bench.py", "test_corpus_frames.py")


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        name = item.path.name
        return LONGEST_FILES_FIRST.index(name) if name in LONGEST_FILES_FIRST else len(LONGEST_FILES_FIRST)

    items.sort(key=rank)  # stable: order within a file, and among the rest, is kept
