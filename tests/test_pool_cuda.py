"""`DecodePool` on a real GPU: batches equal `VideoDecoder(device="cuda")`'s,
NVDEC decoders reused per session, CPU fallbacks labelled, streams and memory
handed over safely. Marked `cuda`; skipped without a CUDA GPU, PyNvVideoCodec
or CuPy.

Run on a GPU machine with:
    PYTHONPATH=. python -m pytest tests/test_pool_cuda.py -v
"""

from __future__ import annotations

import random

import pytest
import torch
from gpu_fixtures import GPU_CORPUS, build_corpus

import framefeed.gpu_decode as gpu_decode
from framefeed.decoders import VideoDecoder
from framefeed.pool import DecodePool
from framefeed.samplers import clips_at_random_indices

pytestmark = pytest.mark.cuda

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU (torch.cuda.is_available() is False)", allow_module_level=True)
_UNAVAILABLE = gpu_decode.nvdec_unavailable_reason()
if _UNAVAILABLE:
    pytest.skip(f"NVDEC unavailable: {_UNAVAILABLE}", allow_module_level=True)

NVDEC_FILES = [entry.name for entry in GPU_CORPUS if entry.nvdec_on_hopper]
FALLBACK_FILES = [entry.name for entry in GPU_CORPUS if not entry.nvdec_on_hopper]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_corpus(tmp_path_factory)


def assert_same(ours, theirs, what):
    assert ours.data.device == theirs.data.device, what
    assert torch.equal(ours.data, theirs.data), what
    assert torch.equal(ours.pts_seconds, theirs.pts_seconds), what
    assert torch.equal(ours.duration_seconds, theirs.duration_seconds), what


@pytest.mark.parametrize("mode", ["exact", "approximate"])
def test_pool_equals_cuda_video_decoders(corpus, mode):
    rng = random.Random(3)
    with DecodePool("cuda:0") as pool:
        cases = []
        for name in NVDEC_FILES + FALLBACK_FILES:
            path = str(corpus[name])
            count = len(VideoDecoder(path, seek_mode=mode, device="cpu"))
            picks = [rng.randrange(count) for _ in range(5)] + [0]
            cases.append((name, picks, pool.submit(path, indices=picks, seek_mode=mode)))
        for name, picks, future in cases:
            batch = future.result()
            reference = VideoDecoder(str(corpus[name]), seek_mode=mode, device="cuda:0").get_frames_at(picks)
            assert_same(batch, reference, name)
            assert bool(batch.cpu_fallback) == (name in FALLBACK_FILES), batch.cpu_fallback
        stats = pool.stats()
    assert stats.cpu_fallbacks == len(FALLBACK_FILES)
    assert stats.decoders_created <= stats.completed - stats.cpu_fallbacks


def test_decoders_are_reused_per_session_and_destroyed_on_close(corpus):
    path = str(corpus["h264_closed_gop.mp4"])
    with DecodePool("cuda:0", sessions=2) as pool:
        batches = [pool.submit(path, indices=[i, 20]).result() for i in range(8)]
        stats = pool.stats()
        assert stats.decoders_created <= 2 and stats.decoders_reused == 8 - stats.decoders_created
        assert all(b.data.is_cuda for b in batches)
        utilisation = stats.nvdec_utilisation_percent
        assert utilisation is None or 0.0 <= utilisation <= 100.0
    assert sum(s.decoders_idle for s in pool.stats().sessions) == 0


def test_batches_are_safe_on_the_consumers_stream(corpus):
    path = str(corpus["hevc_cra.mp4"])
    side = torch.cuda.Stream()
    reference = VideoDecoder(path, device="cuda:0").get_frames_at([3, 30])
    with DecodePool("cuda:0", sessions=2) as pool, torch.cuda.stream(side):
        futures = [pool.submit(path, indices=[3, 30]) for _ in range(6)]
        totals = [f.result().data.float().sum() for f in futures]  # kernels on the side stream
    side.synchronize()
    assert all(total == reference.data.float().sum() for total in totals)


def test_seeded_samplers_over_a_cuda_pool(corpus):
    sources = [str(corpus[n]) for n in ("h264_closed_gop.mp4", "av1.mkv", "hevc_cra.mp4", "vp9.webm")]
    torch.manual_seed(5)
    expected = [clips_at_random_indices(VideoDecoder(s, device="cuda:0"), num_clips=3, num_frames_per_clip=4)
                for s in sources]
    torch.manual_seed(5)
    with DecodePool("cuda:0") as pool:
        futures = clips_at_random_indices(pool.videos(sources), num_clips=3, num_frames_per_clip=4)
        for future, reference, source in zip(futures, expected, sources, strict=True):
            assert_same(future.result(), reference, source)
