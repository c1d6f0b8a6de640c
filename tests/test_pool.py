"""`framefeed.pool.DecodePool` against per-file `VideoDecoder`s.

Ground truth is `VideoDecoder` itself (whose frames the corpus tests hold
against PyAV's sequential decode): a pool must return, request by request,
what a decoder opened on that file returns, or raise what it raises. On the
CPU and on the emulated NVDEC decoder of `gpu_fixtures` (one fixture,
`emulated_gpu`, sets the fake machine up).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import gc
import os
import random
import threading
import time
import warnings

import av
import pytest
import torch
from gpu_fixtures import emulated_runtime

import corpus
from framefeed import VideoDecoder
from framefeed.engine.executor import OutputBuffer
from framefeed.errors import DecodingError
from framefeed.pool import DecodePool, DecodeRequest, PoolBatch, PoolClosedError
from framefeed.pool import _engine as pool_engine
from framefeed.pool import _hardware as pool_hardware
from framefeed.samplers import (
    clips_at_random_indices,
    clips_at_random_timestamps,
    clips_at_regular_indices,
    clips_at_regular_timestamps,
)
from framefeed.samples import VideoSpec, encode_video, x264_options
from framefeed.transforms import CenterCrop, RandomCrop, Resize

MIXED = ["h264_bframes_long_gop.mp4", "hevc_cra.mp4", "vp9.webm", "av1.mkv", "odd_321x241.webm", "rotated_90.mp4",
         "vfr.mkv", "h264_bframes.ts", "discard_edit_list.mp4", "h264_10bit.mp4"]


def path_of(name: str) -> str:
    return str(corpus.BY_NAME[name].path)


def quietly(call, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # approximate mode on VFR files warns that indices are estimates
        return call(*args, **kwargs)


def outcome(call):
    """("ok", batch) or ("error", type, message): what a call gave."""
    try:
        return ("ok", quietly(call))
    except Exception as error:
        return ("error", type(error), str(error))


def assert_same_outcome(ours, theirs, what):
    if theirs[0] == "error":
        assert ours[0] == "error" and ours[1:] == theirs[1:], what
        return
    assert ours[0] == "ok", (what, ours)
    assert_same_batch(ours[1], theirs[1], what)


def assert_same_batch(ours, theirs, what, atol=0):
    assert ours.data.shape == theirs.data.shape, what
    assert ours.data.device == theirs.data.device, what
    if atol:
        assert int((ours.data.int() - theirs.data.int()).abs().max()) <= atol, what
    else:
        assert torch.equal(ours.data, theirs.data), what
    assert torch.equal(ours.pts_seconds, theirs.pts_seconds), what
    assert torch.equal(ours.duration_seconds, theirs.duration_seconds), what


def request_mix(name: str, mode: str, rng: random.Random) -> list[tuple[DecodeRequest, str, tuple]]:
    """(request, VideoDecoder method, its arguments) for one file."""
    count = len(quietly(VideoDecoder, path_of(name), seek_mode=mode))
    metadata = quietly(VideoDecoder, path_of(name), seek_mode=mode).metadata
    begin, end = metadata.begin_stream_seconds, metadata.end_stream_seconds
    picks = [rng.randrange(count) for _ in range(5)] + [0, -1]
    picks += picks[:2]  # duplicates
    times = [begin + (end - begin) * rng.random() for _ in range(4)] + [begin]
    start = rng.randrange(count)
    source = path_of(name)
    return [
        (DecodeRequest(source, indices=picks, seek_mode=mode), "get_frames_at", (picks,)),
        (DecodeRequest(source, seconds=times, seek_mode=mode, dimension_order="NHWC"), "get_frames_played_at",
         (times,)),
        (DecodeRequest(source, start=start, stop=start + 9, step=2, seek_mode=mode), "get_frames_in_range",
         (start, start + 9, 2)),
        (DecodeRequest(source, seek_mode=mode), "get_all_frames", ()),
        (DecodeRequest(source, indices=[count], seek_mode=mode), "get_frames_at", ([count],)),  # out of range
    ]


def expected(request: DecodeRequest, method: str, args: tuple):
    def call():
        decoder = VideoDecoder(request.source, seek_mode=request.seek_mode, dimension_order=request.dimension_order)
        return getattr(decoder, method)(*args)

    return outcome(call)


# -- results equal per-file VideoDecoder output ---------------------------------------------------


@pytest.mark.parametrize("mode", ["exact", "approximate"])
def test_pool_equals_video_decoder_for_mixed_codecs_sizes_and_requests(mode):
    rng = random.Random(11)
    cases = [case for name in MIXED for case in request_mix(name, mode, rng)]
    with DecodePool("cpu", sessions=2) as pool:
        futures = [pool.submit(request) for request, _, _ in cases]
        failures = 0
        for future, (request, method, args) in zip(futures, cases, strict=True):
            theirs = expected(request, method, args)
            assert_same_outcome(outcome(future.result), theirs, (request.source, method, args))
            failures += theirs[0] == "error"
        stats = pool.stats()
    assert failures >= len(MIXED)  # at least every out-of-range request
    assert (stats.failed, stats.completed) == (failures, len(cases) - failures)
    assert stats.frames_returned == sum(len(f.result()) for f in futures if f.exception() is None)


def test_batches_carry_how_they_were_decoded():
    with DecodePool("cpu", sessions=2) as pool:
        batch = pool.submit(path_of("h264_bframes_long_gop.mp4"), indices=[150, 120]).result()
    assert isinstance(batch, PoolBatch)
    assert batch.info.session in (0, 1) and "h264_bframes_long_gop.mp4" in batch.info.source
    assert not batch.cpu_fallback and not batch.info.decoder_reused
    # GOP-exact: decoding starts at the keyframe at 100 and stops at 150; a
    # fraction of the 200 frames, yet more than the two returned.
    assert 2 < batch.info.frames_decoded <= 51


def test_decoder_transforms_as_video_decoder_applies_them():
    path = path_of("rotated_90.mp4")  # transforms apply after rotation
    transforms = [CenterCrop((200, 100)), Resize((50, 40))]
    with DecodePool("cpu", sessions=2) as pool:
        batch = pool.submit(path, indices=[4, 2, 4], transforms=transforms, dimension_order="NHWC").result()
        with pytest.raises(ValueError, match="does not fit"):
            pool.submit(path, indices=[1], transforms=[CenterCrop((500, 500))]).result()
        with pytest.raises(ValueError):
            pool.submit(path, indices=[1], transforms=[lambda data: data])  # refused when submitted
    reference = VideoDecoder(path, transforms=transforms, dimension_order="NHWC").get_frames_at([4, 2, 4])
    assert batch.data.shape == (3, 50, 40, 3)
    assert_same_batch(batch, reference, "transforms")


def test_random_crops_are_drawn_from_the_seeded_rng():
    path = path_of("h264_bframes_long_gop.mp4")

    def crops(seed):
        torch.manual_seed(seed)
        with DecodePool("cpu", sessions=2) as pool:
            futures = [pool.submit(path, indices=[7], transforms=[RandomCrop((32, 48))]) for _ in range(4)]
            return [f.result().data for f in futures]

    first, again, other = crops(3), crops(3), crops(4)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    whole = VideoDecoder(path).get_frames_at([7]).data[0]
    for crop in first:  # each is a 32x48 window of the frame
        found = any((whole[:, top:top + 32].unfold(2, 48, 1) == crop[0][:, :, None, :]).all(-1).all(1).all(0).any()
                    for top in range(whole.shape[1] - 32 + 1))
        assert found


def test_map_yields_in_order_with_bounded_lookahead():
    names = ["vp9.webm", "hevc_cra.mp4", "h264_bframes_long_gop.mp4", "rotated_90.mp4"] * 3
    pulled = 0

    def requests():
        nonlocal pulled
        for i, name in enumerate(names):
            pulled += 1
            yield DecodeRequest(path_of(name), indices=[i % 5, 7])

    with DecodePool("cpu", sessions=2) as pool:
        seen = 0
        for batch in pool.map(requests(), lookahead=3):
            seen += 1
            assert pulled - seen <= 3  # submitted ahead of the consumer
            assert names[seen - 1] in batch.info.source
            reference = VideoDecoder(path_of(names[seen - 1])).get_frames_at([(seen - 1) % 5, 7])
            assert_same_batch(batch, reference, seen)
        assert seen == len(names)
        unordered = list(pool.map([path_of(n) for n in names[:4]], ordered=False))
        assert sorted(len(b) for b in unordered) == sorted(len(VideoDecoder(path_of(n))) for n in names[:4])


def test_map_raises_or_returns_a_failed_request(tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(random.Random(0).randbytes(4096))
    items = [path_of("vp9.webm"), str(garbage), path_of("hevc_cra.mp4")]
    with DecodePool("cpu", sessions=2) as pool:
        results = list(pool.map(items, return_exceptions=True))
        assert isinstance(results[1], ValueError) and "garbage.mp4" in str(results[1])
        assert len(results[0]) == 60 and len(results[2]) == 90
        iterator = pool.map(items)
        assert len(next(iterator)) == 60
        with pytest.raises(ValueError, match="garbage.mp4"):
            next(iterator)
        assert len(pool.submit(items[2], indices=[1]).result()) == 1  # the pool carries on


# -- failures stay with their request -------------------------------------------------------------


@pytest.fixture(scope="module")
def truncated(tmp_path_factory):
    """An MP4 with its index first, cut in half: it opens in approximate mode,
    and decoding past the cut fails (`test_bad_input` has the details)."""
    whole = tmp_path_factory.mktemp("pool-truncated") / "whole.mp4"
    encode_video(whole, VideoSpec(num_frames=100, codec_options=x264_options(25)))
    faststart = whole.with_name("faststart.mp4")
    with av.open(str(whole)) as src, av.open(str(faststart), "w", options={"movflags": "faststart"}) as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.size:
                packet.stream = out
                dst.mux(packet)
    half = faststart.with_name("half.mp4")
    half.write_bytes(faststart.read_bytes()[: faststart.stat().st_size // 2])
    return half


def test_a_corrupt_file_among_good_ones_fails_alone(tmp_path, truncated):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x00\x00\x18ftypmp42" + random.Random(0).randbytes(20000))
    good = [path_of(n) for n in ("h264_bframes_long_gop.mp4", "hevc_cra.mp4", "vp9.webm")]
    bad = [
        (DecodeRequest(str(garbage), indices=[0]), lambda: VideoDecoder(str(garbage))),
        (DecodeRequest(str(tmp_path / "missing.mp4"), indices=[0]),
         lambda: VideoDecoder(str(tmp_path / "missing.mp4"))),
        (DecodeRequest(str(truncated), indices=[99], seek_mode="approximate"),
         lambda: VideoDecoder(str(truncated), seek_mode="approximate").get_frames_at([99])),
    ]
    with DecodePool("cpu", sessions=2) as pool:
        good_futures = [pool.submit(path, indices=[0, 5, 30]) for path in good]
        bad_futures = [pool.submit(request) for request, _ in bad]
        good_futures += [pool.submit(path, indices=[2]) for path in good]
        for (_, reference), future in zip(bad, bad_futures, strict=True):
            assert_same_outcome(outcome(future.result), outcome(reference), future)
        assert isinstance(bad_futures[2].exception(), DecodingError)
        for future in good_futures:
            assert future.exception() is None
        stats = pool.stats()
    assert (stats.failed, stats.completed) == (3, 6)


# -- memory: back-pressure holds the cap in flight --------------------------------------------------


def slow_decoding(monkeypatch, seconds):
    """Every decode takes `seconds` longer (its buffers stay in flight meanwhile)."""
    execute = pool_engine.execute

    def slow_execute(*args, **kwargs):
        result = execute(*args, **kwargs)
        time.sleep(seconds)
        return result

    monkeypatch.setattr(pool_engine, "execute", slow_execute)



def test_back_pressure_holds_the_frames_in_flight_cap(monkeypatch):
    """Output buffers are counted when allocated and uncounted when their batch
    exists; the largest count must stay within the cap (a single larger
    request runs alone)."""
    cap = 12
    live, peak, lock = [0], [0], threading.Lock()
    allocate = OutputBuffer.allocate.__func__

    def counting_allocate(cls, count, *args, **kwargs):
        with lock:
            live[0] += count
            peak[0] = max(peak[0], live[0])
        return allocate(cls, count, *args, **kwargs)

    def counting_batch(self):
        super(PoolBatch, self).__post_init__()
        with lock:
            live[0] -= self.pts_seconds.numel()

    monkeypatch.setattr(OutputBuffer, "allocate", classmethod(counting_allocate))
    monkeypatch.setattr(PoolBatch, "__post_init__", counting_batch)
    slow_decoding(monkeypatch, 0.02)  # hold buffers a while so requests overlap

    sizes = [5, 3, 8, 4, 5, 2, 7, 6, 5, 3] * 2
    with DecodePool("cpu", sessions=3, max_frames_in_flight=cap, queue_depth=2) as pool:
        futures = [pool.submit(path_of("vp9.webm"), indices=list(range(n))) for n in sizes]
        assert [len(f.result()) for f in futures] == sizes
        assert peak[0] <= cap and pool.stats().peak_frames_in_flight <= cap
        assert peak[0] > 8  # requests did overlap up to the cap
        peak[0] = 0
        big = pool.submit(path_of("vp9.webm"), start=0, stop=20).result()  # 20 > cap: admitted alone
        assert len(big) == 20 and peak[0] == 20
    stats = pool.stats()  # after close: every batch handed out and out of flight
    assert stats.frames_in_flight == 0 and live[0] == 0 and stats.max_frames_in_flight == cap


def test_back_pressure_without_the_big_request(monkeypatch):
    cap = 10
    live, peak, lock = [0], [0], threading.Lock()
    allocate = OutputBuffer.allocate.__func__

    def counting_allocate(cls, count, *args, **kwargs):
        with lock:
            live[0] += count
            peak[0] = max(peak[0], live[0])
        return allocate(cls, count, *args, **kwargs)

    def counting_batch(self):
        super(PoolBatch, self).__post_init__()
        with lock:
            live[0] -= self.pts_seconds.numel()

    monkeypatch.setattr(OutputBuffer, "allocate", classmethod(counting_allocate))
    monkeypatch.setattr(PoolBatch, "__post_init__", counting_batch)
    slow_decoding(monkeypatch, 0.01)
    frame_bytes = 240 * 320 * 3
    with DecodePool("cpu", sessions=3, max_frames_in_flight=cap, max_bytes_in_flight=8 * frame_bytes) as pool:
        futures = [pool.submit(path_of("h264_bframes_long_gop.mp4"), indices=[i, i + 1, i + 2, i + 3])
                   for i in range(0, 80, 4)]
        concurrent.futures.wait(futures)
    stats = pool.stats()
    assert all(f.exception() is None for f in futures)
    assert peak[0] <= 8  # the byte cap (8 frames) is the tighter one
    assert 4 < stats.peak_frames_in_flight <= 8 and stats.peak_bytes_in_flight <= 8 * frame_bytes


# -- lifetime ---------------------------------------------------------------------------------------


def open_files() -> list[str]:
    """The test videos this process holds open (other tests' sockets, pipes
    and threads come and go; only the pool's own files matter here)."""
    corpus_dir = str(corpus.cache_dir())
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith(corpus_dir):
            held.append(target)
    return sorted(held)


def pool_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("framefeed-pool")]


def test_close_releases_everything_and_refuses_further_use():
    before = open_files()
    pool = DecodePool("cpu", sessions=2)
    futures = [pool.submit(path_of(n), indices=[0, 3]) for n in ("vp9.webm", "hevc_cra.mp4")]
    pool.close()  # finishes what was submitted
    assert all(len(f.result()) == 2 for f in futures)
    gc.collect()
    assert pool_threads() == [] and open_files() == before
    assert pool.closed and "closed" in repr(pool)
    for use in (lambda: pool.submit(path_of("vp9.webm")), lambda: pool.map([]),
                lambda: pool.videos([path_of("vp9.webm")])):
        with pytest.raises(RuntimeError, match="closed"):
            use()
    pool.close()  # idempotent


def test_close_with_cancel_pending_cancels_queued_work(monkeypatch):
    slow_decoding(monkeypatch, 0.05)
    with pytest.raises(KeyError):
        with DecodePool("cpu", sessions=1, queue_depth=64) as pool:
            futures = [pool.submit(path_of("vp9.webm"), indices=[i]) for i in range(30)]
            raise KeyError("leaving the block with an exception cancels what is queued")
    done, _ = concurrent.futures.wait(futures, timeout=30)
    assert len(done) == len(futures)
    cancelled = [f for f in futures if f.cancelled() or isinstance(f.exception(), PoolClosedError)]
    assert len(cancelled) >= len(futures) - 3  # at most the running one and two admitted ones finish
    assert all(len(f.result()) == 1 for f in futures if f not in cancelled)
    assert pool.stats().cancelled == len(cancelled)
    assert pool_threads() == []


def test_a_dropped_pool_stops_its_threads():
    pool = DecodePool("cpu", sessions=1)
    pool.submit(path_of("vp9.webm"), indices=[0]).result()
    del pool
    gc.collect()
    deadline = time.monotonic() + 10
    while pool_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool_threads() == []


def test_arguments_are_checked_in_the_callers_thread():
    with DecodePool("cpu", sessions=1) as pool:
        with pytest.raises(ValueError, match="one of indices, seconds or start/stop/step"):
            pool.submit("x.mp4", indices=[1], seconds=[0.5])
        with pytest.raises(ValueError, match="Invalid seek mode"):
            pool.submit("x.mp4", seek_mode="fast")
        with pytest.raises(ValueError, match="step cannot be zero"):
            pool.submit("x.mp4", start=0, stop=4, step=0)
        with pytest.raises(TypeError, match="indices"):
            pool.submit("x.mp4", indices=[1.5])
        with pytest.raises(TypeError, match="either a DecodeRequest"):
            pool.submit(DecodeRequest("x.mp4"), indices=[0])
    with pytest.raises(ValueError, match="sessions must be at least 1"):
        DecodePool("cpu", sessions=0)


def test_defaults_come_from_the_hardware():
    with DecodePool("cpu") as pool:
        stats = pool.stats()
        assert pool.sessions == pool_hardware.cpu_cores() == len(stats.sessions)
        assert stats.demux_threads == pool_hardware.default_demux_threads(pool.sessions)
        assert stats.max_bytes_in_flight > 0 and stats.nvdec_utilisation_percent is None


# -- seeded samplers over a pool equal seeded samplers over decoders ----------------------------------


SAMPLER_CALLS = [
    (clips_at_random_indices, {"num_clips": 3, "num_frames_per_clip": 4, "num_indices_between_frames": 2}),
    (clips_at_regular_indices, {"num_clips": 2, "num_frames_per_clip": 3}),
    (clips_at_random_timestamps, {"num_clips": 3, "num_frames_per_clip": 2}),
    (clips_at_regular_timestamps, {"seconds_between_clip_starts": 1.0, "num_frames_per_clip": 2}),
]


@pytest.mark.parametrize("sampler, kwargs", SAMPLER_CALLS, ids=lambda v: getattr(v, "__name__", ""))
@pytest.mark.parametrize("mode", ["exact", "approximate"])
def test_seeded_samplers_over_a_pool_equal_seeded_samplers_over_decoders(sampler, kwargs, mode, tmp_path):
    garbage = tmp_path / "garbage.mkv"
    garbage.write_bytes(random.Random(0).randbytes(3000))
    names = ["h264_bframes_long_gop.mp4", "vp9.webm", "rotated_90.mp4", "hevc_cra.mp4", "vfr.mkv"]
    sources = [path_of(n) for n in names[:2]] + [str(garbage)] + [path_of(n) for n in names[2:]]

    torch.manual_seed(1234)
    expected_results = []
    for source in sources:  # the per-decoder loop a user would write
        expected_results.append(outcome(lambda s=source: sampler(VideoDecoder(s, seek_mode=mode), **kwargs)))
    expected_state = torch.get_rng_state()

    torch.manual_seed(1234)
    with DecodePool("cpu", sessions=2) as pool:
        futures = quietly(sampler, pool.videos(sources, seek_mode=mode, lookahead=2), **kwargs)
        assert torch.equal(torch.get_rng_state(), expected_state)  # the RNG drawn exactly as the loop draws it
        assert len(futures) == len(sources)
        for future, theirs, source in zip(futures, expected_results, sources, strict=True):
            assert_same_outcome(outcome(future.result), theirs, source)
            if theirs[0] == "ok":
                assert future.result().data.ndim == 5


def test_seeded_samplers_with_random_crops_over_a_pool_equal_decoders():
    """VideoDecoder(source, transforms=[RandomCrop]) draws the window when it
    is created, then the sampler draws clip starts: the pool draws both on the
    caller's thread in that order, source after source."""
    sources = [path_of(n) for n in ("h264_bframes_long_gop.mp4", "vp9.webm", "rotated_90.mp4")]
    transforms = [RandomCrop((64, 80)), Resize((32, 40))]
    torch.manual_seed(99)
    expected_batches = [clips_at_random_indices(VideoDecoder(s, transforms=transforms), num_clips=2,
                                                num_frames_per_clip=3) for s in sources]
    expected_state = torch.get_rng_state()
    torch.manual_seed(99)
    with DecodePool("cpu", sessions=2) as pool:
        futures = clips_at_random_indices(pool.videos(sources, transforms=transforms), num_clips=2,
                                          num_frames_per_clip=3)
        assert torch.equal(torch.get_rng_state(), expected_state)
        for future, reference, source in zip(futures, expected_batches, sources, strict=True):
            assert_same_batch(future.result(), reference, source)


def test_sampler_errors_fail_that_source_only():
    short = path_of("full_range_bt709.mp4")  # 20 frames: too short for 30-frame clips without a policy
    with DecodePool("cpu", sessions=1) as pool:
        futures = clips_at_random_indices(pool.videos([path_of("vp9.webm"), short]), num_clips=1,
                                          num_frames_per_clip=30, sampling_range_end=5, policy="error")
        assert futures[0].result().data.shape[:2] == (1, 30)
        with pytest.raises(ValueError, match="'error' policy"):
            futures[1].result()


# -- the emulated NVDEC decoder --------------------------------------------------------------------------


@pytest.fixture
def emulated_gpu(monkeypatch):
    """An NVDEC runtime for an 'H200' (7 engines) whose PyNvVideoCodec is
    `gpu_fixtures.FakePyNvVideoCodec` (decoders are `EmulatedNvdec`), whose
    CUDA runtime is the recording stand-in (`runtime.calls`), whose colour
    conversion is the torch reference and whose batches land in host
    memory, on a machine where torch sees one GPU. Pools get it as
    `DecodePool("cuda:0", nvdec_runtime=...)`. `runtime.nvc.created` lists
    the decoders created, `runtime.retired` those handed to the reaper."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    from framefeed.engine.backends.gpu_decode.reaper import reaper

    retired = []

    def retire(entry):  # recorded, then destroyed as on a GPU: by the reaper thread
        retired.append(entry)
        reaper().retire(entry)

    runtime = dataclasses.replace(emulated_runtime(), retire=retire)
    runtime.retired = retired
    yield runtime
    assert runtime.calls.violations == []  # the pool kept the stream ordering rules


NVDEC_NAMES = ["h264_bframes_long_gop.mp4", "h264_open_gop.mp4", "hevc_cra.mp4", "vp9.webm", "h264_bframes.mkv",
               "discard_edit_list.mp4"]
FALLBACK_NAMES = {"av1.mkv": "no AV1 decoder", "odd_321x241.webm": "odd frame size",
                  "mpeg4_part2.mp4": "no NVDEC path"}


@pytest.mark.parametrize("mode", ["exact", "approximate"])
def test_emulated_nvdec_pool_equals_per_file_decoders(emulated_gpu, mode):
    """NVDEC-routed files within the colour conversion's tolerance of the CPU
    decoder (the emulated NVDEC converts with the torch reference), pts and
    durations identical; CPU fallbacks identical and labelled."""
    rng = random.Random(5)
    names = NVDEC_NAMES + list(FALLBACK_NAMES)
    with DecodePool("cuda:0", nvdec_runtime=emulated_gpu) as pool:
        assert pool.sessions == 7  # the engine count from GetDecoderCaps
        cases = []
        for name in names:
            path = path_of(name)
            count = len(VideoDecoder(path, seek_mode=mode))
            picks = sorted({rng.randrange(count) for _ in range(4)}) + [0]
            cases.append((name, picks, pool.submit(path, indices=picks, seek_mode=mode)))
            cases.append((name, None, pool.submit(path, start=2, stop=count, step=3, seek_mode=mode)))
        for name, picks, future in cases:
            batch = future.result()
            decoder = VideoDecoder(path_of(name), seek_mode=mode, device="cpu")
            reference = decoder.get_frames_at(picks) if picks else decoder.get_frames_in_range(2, len(decoder), 3)
            if name in FALLBACK_NAMES:
                assert batch.cpu_fallback and FALLBACK_NAMES[name] in str(batch.cpu_fallback)
                assert_same_batch(batch, reference, name)
            else:
                assert not batch.cpu_fallback, batch.cpu_fallback
                assert_same_batch(batch, reference, name, atol=2)
        stats = pool.stats()
    assert stats.cpu_fallbacks == 2 * len(FALLBACK_NAMES)
    assert stats.decoders_created == len(emulated_gpu.nvc.created)


def test_emulated_nvdec_decoders_are_owned_per_session_and_reused(emulated_gpu):
    a, b = path_of("h264_bframes_long_gop.mp4"), path_of("hevc_cra.mp4")  # two decoder keys
    with DecodePool("cuda:0", sessions=1, nvdec_runtime=emulated_gpu) as pool:
        batches = [pool.submit(path, indices=[1, 5]).result() for path in (a, a, b, a, b)]
        stats = pool.stats()
        assert [batch.info.decoder_reused for batch in batches] == [False, True, False, True, True]
        assert (stats.decoders_created, stats.decoders_reused) == (2, 3)
        assert len(emulated_gpu.nvc.created) == 2  # PyNvVideoCodec was asked for two decoders, no more
        assert stats.sessions[0].decoders_idle == 2
        reference = VideoDecoder(a).get_frames_at([1, 5])
        assert_same_batch(batches[3], reference, "reused decoder", atol=2)
    assert len(emulated_gpu.retired) == 2  # close destroyed both
    assert all(entry.decoder is None for entry in emulated_gpu.retired)
    assert pool.stats().sessions[0].decoders_idle == 0


def test_emulated_nvdec_sessions_each_own_their_decoders(emulated_gpu):
    path = path_of("hevc_cra.mp4")
    with DecodePool("cuda:0", sessions=3, nvdec_runtime=emulated_gpu) as pool:
        batches = list(pool.map([DecodeRequest(path, indices=[i % 30, 31]) for i in range(24)], lookahead=6))
        stats = pool.stats()
    used = {batch.info.session for batch in batches}
    created = sum(s.decoders_created for s in stats.sessions)
    assert created == len(emulated_gpu.nvc.created) == stats.decoders_created <= 3
    assert created == len([s for s in stats.sessions if s.decoders_created]) and len(used) == created
    assert stats.decoders_reused == 24 - created
    assert stats.frames_returned == 48 and stats.frames_decoded >= 24


def test_emulated_nvdec_samplers_over_a_pool(emulated_gpu):
    sources = [path_of(n) for n in ("h264_bframes_long_gop.mp4", "av1.mkv", "hevc_cra.mp4")]
    torch.manual_seed(77)
    expected_batches = [clips_at_random_indices(VideoDecoder(s), num_clips=2, num_frames_per_clip=3)
                        for s in sources]
    torch.manual_seed(77)
    with DecodePool("cuda:0", sessions=2, nvdec_runtime=emulated_gpu) as pool:
        futures = clips_at_random_indices(pool.videos(sources), num_clips=2, num_frames_per_clip=3)
        for future, reference, source in zip(futures, expected_batches, sources, strict=True):
            assert_same_batch(future.result(), reference, source, atol=2)


def test_emulated_nvdec_pool_applies_transforms_in_the_fused_kernel(emulated_gpu, monkeypatch):
    """On NVDEC the pool hands the transforms to the backend (the fused colour
    kernel, here its torch reference) instead of resizing full frames after."""
    from framefeed.engine.backends.transformed import TorchTransformer

    def refuse(*args, **kwargs):
        raise AssertionError("the unfused torch transform path ran on an NVDEC backend")

    monkeypatch.setattr(TorchTransformer, "write", refuse)
    path = path_of("h264_bframes_long_gop.mp4")
    transforms = [Resize((60, 80)), CenterCrop((48, 64))]
    with DecodePool("cuda:0", sessions=1, nvdec_runtime=emulated_gpu) as pool:
        batch = pool.submit(path, indices=[0, 5, 9, 5], transforms=transforms).result()
    assert not batch.cpu_fallback, batch.cpu_fallback
    monkeypatch.undo()
    reference = VideoDecoder(path, transforms=transforms, device="cpu").get_frames_at([0, 5, 9, 5])
    assert batch.data.shape == reference.data.shape == (4, 3, 48, 64)
    difference = (batch.data.int() - reference.data.int()).abs().float()
    assert difference.mean() <= 1.0 and difference.max() <= 6, (difference.mean(), difference.max())
    assert torch.equal(batch.pts_seconds, reference.pts_seconds)
