"""NVDEC on a real GPU: CUDA output against the CPU decoder, kernel against
the torch reference, threads, decoder reuse, memory. Marked `cuda`; skipped
without a CUDA GPU, PyNvVideoCodec or CuPy (a failure instead with
FRAMEFEED_REQUIRE_CUDA=1, see conftest.py). The corpus frame tests also run
on cuda (test_corpus_frames.py, test_shipping.py).

Run on a GPU machine with:
    PYTHONPATH=. python -m pytest tests/test_gpu_cuda.py -v -s
(`-s` shows the 10-bit max/mean differences this file reports.)
"""

from __future__ import annotations

import gc
import random
import threading

import av
import numpy as np
import pytest
import torch

import framefeed.engine.backends.gpu_decode as gpu_decode
from corpus import BY_NAME, FILES
from framefeed.decoders import VideoDecoder
from framefeed.engine.backends.gpu_decode.backend import NvdecBackend, OwnedSurface
from framefeed.engine.backends.gpu_decode.capabilities import stream_traits
from framefeed.engine.backends.gpu_decode.colour import (
    native_planes,
    reference_rgb,
    surface_format_for,
)
from framefeed.engine.backends.gpu_decode.surfaces import surface_rows
from framefeed.engine.demux.demuxer import Demuxer
from framefeed.engine.packets import CodecParameters
from framefeed.engine.source import resolve_source

pytestmark = pytest.mark.cuda  # conftest.py skips (or fails) these without a usable GPU

DEVICE = torch.device("cuda", 0)
NVDEC_FILES = [entry.name for entry in FILES if entry.nvdec_on_hopper]
FALLBACK_FILES = [entry.name for entry in FILES if not entry.nvdec_on_hopper]


@pytest.fixture(scope="session")
def corpus(corpus_files):
    return corpus_files


def open_pair(path, **kwargs):
    return VideoDecoder(str(path), device="cuda", **kwargs), VideoDecoder(str(path), device="cpu", **kwargs)


def compare(cuda_batch, cpu_batch, name, what, capsys=None):
    """Pixels within tolerance, timestamps identical; returns (max, mean) |diff|."""
    assert cuda_batch.data.device.type == "cuda"
    assert cuda_batch.pts_seconds.device.type == "cpu" and cuda_batch.pts_seconds.dtype == torch.float64
    assert torch.equal(cuda_batch.pts_seconds, cpu_batch.pts_seconds), what
    assert torch.equal(cuda_batch.duration_seconds, cpu_batch.duration_seconds), what
    diff = (cuda_batch.data.cpu().int() - cpu_batch.data.int()).abs()
    worst, mean = int(diff.max()) if diff.numel() else 0, float(diff.float().mean()) if diff.numel() else 0.0
    if BY_NAME[name].ten_bit and capsys is not None:
        with capsys.disabled():
            print(f"\n[10-bit] {name} {what}: max |diff| {worst}, mean {mean:.3f}")
    check_pixels(name, worst, mean, what)
    return worst, mean


# MPEG-2 allows decoders to differ: its inverse DCT is specified only to IEEE 1180
# accuracy, and differences drift through predicted pictures until the next
# I picture. NVDEC's IDCT is not FFmpeg's, so MPEG-2 is held to FFmpeg's own
# NVDEC output sample for sample (test_our_nv12_equals_ffmpeg_nvdec) and to this
# bound against FFmpeg's software decoder (2026-11-28 on an H200: max 9, mean
# 0.78; two of FFmpeg's own IDCTs differ by up to 9 on a long-GOP file; see
# benchmarks/results/mpeg2-nvdec-vs-software.md). A wrong matrix or range
# gives mean differences of 10-40.
MPEG2_MAX_DIFF = 12
MPEG2_MEAN_DIFF = 1.0


def check_pixels(name, worst, mean, what):
    """Every NVDEC stream within 2 of the CPU decoder (10-bit included: the
    kernel performs swscale's own 10-bit arithmetic), except MPEG-2 (above)."""
    if name.startswith("mpeg2"):
        assert worst <= MPEG2_MAX_DIFF and mean < MPEG2_MEAN_DIFF, (
            f"{name} {what}: max |diff| {worst}, mean {mean:.3f} (MPEG-2 bound {MPEG2_MAX_DIFF}/{MPEG2_MEAN_DIFF})")
    else:
        assert worst <= 2, f"{name} {what}: max |diff| {worst}, mean {mean:.3f}"


@pytest.mark.parametrize("name", NVDEC_FILES + FALLBACK_FILES)
def test_every_frame_by_index_equals_the_cpu_decoder(corpus, name, capsys):
    entry = BY_NAME[name]
    cuda, cpu = open_pair(corpus[name])
    if entry.nvdec_on_hopper:
        assert not cuda.cpu_fallback, str(cuda.cpu_fallback)
        assert isinstance(cuda._backend, NvdecBackend)
    elif name == "av1.mkv" and not cuda.cpu_fallback:
        pass  # GPUs other than Hopper and A100 decode AV1
    else:
        assert cuda.cpu_fallback and entry.nvdec_fallback in str(cuda.cpu_fallback), str(cuda.cpu_fallback)
    assert len(cuda) == len(cpu)
    compare(cuda.get_frames_in_range(0, len(cpu)), cpu.get_frames_in_range(0, len(cpu)), name, "batch", capsys)
    fresh_cuda, fresh_cpu = open_pair(corpus[name])
    for index in range(len(cpu)):  # one call per frame: sequential access continues
        ours, theirs = fresh_cuda.get_frame_at(index), fresh_cpu.get_frame_at(index)
        assert ours.data.device == DEVICE and ours.pts_seconds == theirs.pts_seconds
        diff = (ours.data.cpu().int() - theirs.data.int()).abs()
        check_pixels(name, int(diff.max()), float(diff.float().mean()), f"frame {index}")


@pytest.mark.parametrize("name", NVDEC_FILES)
@pytest.mark.parametrize("dimension_order", ["NCHW", "NHWC"])
def test_random_order_batches(corpus, name, dimension_order, capsys):
    cuda, cpu = open_pair(corpus[name], dimension_order=dimension_order)
    rng = random.Random(f"{name}-{dimension_order}")
    for _ in range(4):
        indices = [rng.randrange(len(cpu)) for _ in range(10)]  # duplicates included
        compare(cuda.get_frames_at(indices), cpu.get_frames_at(indices), name, f"indices {indices}", capsys)


@pytest.mark.parametrize("name, seek_mode", [
    ("h264_open_gop.mp4", "exact"), ("hevc_cra.mp4", "exact"), ("discard_edit_list.mp4", "exact"),
    ("h264_bframes.ts", "exact"), ("mpeg2.ts", "exact"),
    # Approximate mode maps index to time from the header: files whose header counts the frames exactly.
    ("h264_open_gop.mp4", "approximate"), ("hevc_cra.mp4", "approximate"), ("vp9.webm", "approximate"),
])
def test_seeks_backwards_and_across_keyframes(corpus, name, seek_mode):
    """Open-GOP H.264 (recovery-point I-frames) and HEVC CRA pictures: every
    frame in reverse order, each one a seek."""
    cuda, cpu = open_pair(corpus[name], seek_mode=seek_mode)
    for index in reversed(range(len(cpu))):
        ours, theirs = cuda.get_frame_at(index), cpu.get_frame_at(index)
        assert ours.pts_seconds == theirs.pts_seconds, index
        diff = (ours.data.cpu().int() - theirs.data.int()).abs()
        check_pixels(name, int(diff.max()), float(diff.float().mean()), f"frame {index}")
    assert cuda._session.stats.seeks >= 2  # reverse order cannot be served without seeking


@pytest.mark.parametrize("name", ["h264_bframes_long_gop.mp4", "hevc_cra.mp4", "vp9.webm", "discard_edit_list.mp4"])
def test_time_based_access(corpus, name, capsys):
    cuda, cpu = open_pair(corpus[name])
    begin, end = cpu.metadata.begin_stream_seconds, cpu.metadata.end_stream_seconds
    rng = random.Random(name)
    times = [begin + (end - begin) * rng.random() for _ in range(12)]
    compare(cuda.get_frames_played_at(times), cpu.get_frames_played_at(times), name, "played_at", capsys)
    compare(cuda.get_frames_played_in_range(begin, end), cpu.get_frames_played_in_range(begin, end), name,
            "played_in_range", capsys)
    compare(cuda.get_all_frames(), cpu.get_all_frames(), name, "all", capsys)


def test_samplers_work_unchanged_on_cuda(corpus):
    samplers = pytest.importorskip("framefeed.samplers")
    if not hasattr(samplers, "clips_at_random_indices"):
        pytest.skip("framefeed.samplers is not implemented in this checkout")
    cuda, cpu = open_pair(corpus["h264_bframes_long_gop.mp4"])
    for sampler, kwargs in [(samplers.clips_at_random_indices, {"num_clips": 3, "num_frames_per_clip": 4}),
                            (samplers.clips_at_regular_timestamps,
                             {"seconds_between_clip_starts": 0.3, "num_frames_per_clip": 2})]:
        torch.manual_seed(0)
        ours = sampler(cuda, **kwargs)
        torch.manual_seed(0)
        theirs = sampler(cpu, **kwargs)
        assert ours.data.device == DEVICE
        assert torch.equal(ours.pts_seconds, theirs.pts_seconds)
        assert (ours.data.cpu().int() - theirs.data.int()).abs().max().item() <= 2


@pytest.mark.parametrize("name", FALLBACK_FILES)
def test_cpu_fallback_uploads_exact_cpu_frames(corpus, name):
    cuda, cpu = open_pair(corpus[name])
    if not cuda.cpu_fallback:
        pytest.skip(f"{name} decodes on this GPU's NVDEC")
    ours, theirs = cuda.get_frames_in_range(0, len(cpu)), cpu.get_frames_in_range(0, len(cpu))
    assert ours.data.device == DEVICE
    assert torch.equal(ours.data.cpu(), theirs.data)


def test_output_is_ready_on_the_callers_stream(corpus):
    """Frames returned while a side stream is current are safe to use on it
    without any explicit synchronisation by the caller."""
    name = "h264_bframes_long_gop.mp4"
    cuda, cpu = open_pair(corpus[name])
    expected = cpu.get_frames_in_range(0, len(cpu)).data.float().mean(dim=(1, 2, 3))
    side = torch.cuda.Stream(DEVICE)
    with torch.cuda.stream(side):
        batch = cuda.get_frames_in_range(0, len(cpu))
        means = batch.data.float().mean(dim=(1, 2, 3))  # enqueued on `side`
    side.synchronize()
    assert torch.allclose(means.cpu(), expected, atol=2.0)


# -- the fused kernel against the torch reference -------------------------------------------------


def _open_backend(path, turns):
    demuxer = Demuxer(resolve_source(str(path)), None)
    params = CodecParameters.from_stream(demuxer.stream, turns)
    backend, reason = gpu_decode.open_nvdec_backend(params, DEVICE, stream=demuxer.stream)
    assert backend is not None, reason
    return demuxer, backend


def _surface_tensor(owned: OwnedSurface, surface_format: str, height: int) -> torch.Tensor:
    planes = owned.planes
    rows = surface_rows(surface_format, height)
    torch.cuda.synchronize(DEVICE)  # the copy was made on the decoder's stream
    raw = owned.buffer.cpu()
    if planes.sample_bytes == 2:
        samples = raw.view(torch.int16).to(torch.int32) & 0xFFFF
        return samples.reshape(rows, planes.luma_pitch // 2)
    return raw.reshape(rows, planes.luma_pitch).to(torch.int32)


@pytest.mark.parametrize("name", ["h264_bframes_long_gop.mp4", "full_range_bt709.mp4", "hevc_10bit.mkv",
                                  "hevc_444.mp4", "hevc_444_10bit.mp4", "vp9.webm"])
@pytest.mark.parametrize("turns", [0, 1, 2, 3])
def test_fused_kernel_equals_torch_reference(corpus, name, turns):
    demuxer, backend = _open_backend(corpus[name], turns)
    traits = stream_traits(demuxer.stream)
    surface_format = surface_format_for(traits.colour)
    shift = 16 - traits.bit_depth if surface_format in ("P016", "YUV444_16Bit") else 0
    checked = 0
    try:
        backend.reset()
        for packet in demuxer.packets():
            for frame in backend.send(packet):
                owned = backend.retain(frame)
                surface = _surface_tensor(owned.owned, surface_format, traits.height)
                luma, cb, cr = native_planes(surface, surface_format, traits.height, traits.width)
                expected = torch.rot90(reference_rgb(luma, cb, cr, traits.colour, sample_shift=shift), turns,
                                       dims=(0, 1))
                out_h, out_w = expected.shape[:2]
                planar = torch.empty(2, 3, out_h, out_w, dtype=torch.uint8, device=DEVICE)
                packed = torch.empty(2, out_h, out_w, 3, dtype=torch.uint8, device=DEVICE)
                backend.write_rgb(frame, planar[1].permute(1, 2, 0))  # the decoder-owned picture
                backend.write_rgb(owned, packed[0])  # the retained copy
                assert torch.equal(planar[1].permute(1, 2, 0).cpu(), expected)
                assert torch.equal(packed[0].cpu(), expected)
                checked += 1
            if checked >= 6:
                break
    finally:
        backend.close()
        demuxer.close()
    assert checked >= 6


# -- concurrency, reuse, memory ---------------------------------------------------------------------


def test_two_decoders_in_two_threads_at_once(corpus):
    names = ["h264_bframes_long_gop.mp4", "hevc_cra.mp4"]
    expected = {name: VideoDecoder(str(corpus[name]), device="cpu").get_all_frames() for name in names}
    results, errors = {}, []
    barrier = threading.Barrier(len(names))

    def work(name):
        try:
            decoder = VideoDecoder(str(corpus[name]), device="cuda")
            barrier.wait()
            for _ in range(3):
                results[name] = decoder.get_all_frames()
                torch.cuda.current_stream(DEVICE).synchronize()
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for name in names:
        compare(results[name], expected[name], name, "thread")


def test_decoder_cache_reuses_decoders(corpus):
    path = str(corpus["h264_bframes_long_gop.mp4"])
    VideoDecoder(path, device="cuda")[0]  # make sure one exists
    gc.collect()
    cache = gpu_decode.default_decoders(0).decoder_cache
    created, reused = cache.created, cache.reused
    for _ in range(10):
        decoder = VideoDecoder(path, device="cuda")
        decoder[len(decoder) - 1]
        del decoder
        gc.collect()
    assert cache.created == created  # no new decoder for the same codec, size and format
    assert cache.reused >= reused + 10


def test_gpu_memory_stays_flat_across_500_decoder_creations(corpus):
    paths = [str(corpus[name]) for name in ("h264_bframes_long_gop.mp4", "hevc_cra.mp4")]
    for path in paths:  # warm up: contexts, kernels, one cached decoder per key
        VideoDecoder(path, device="cuda")[0]
    gc.collect()
    torch.cuda.synchronize(DEVICE)
    torch.cuda.empty_cache()
    free_before = torch.cuda.mem_get_info(DEVICE)[0]
    allocated_before = torch.cuda.memory_allocated(DEVICE)
    for round_index in range(500):
        decoder = VideoDecoder(paths[round_index % 2], device="cuda")
        frame = decoder[round_index % len(decoder)]
        del decoder, frame
        if round_index % 50 == 49:
            gc.collect()
    gc.collect()
    torch.cuda.synchronize(DEVICE)
    torch.cuda.empty_cache()
    grown = free_before - torch.cuda.mem_get_info(DEVICE)[0]
    assert grown < 64 << 20, f"device memory grew by {grown / 2**20:.1f} MiB over 500 decoders"
    assert torch.cuda.memory_allocated(DEVICE) <= allocated_before + (1 << 20)


def _ffmpeg_nvdec_nv12(path, count: int) -> list[np.ndarray]:
    """The first `count` pictures as FFmpeg's own NVDEC path (PyAV hwaccel,
    downloaded to system memory) decodes them: `(H * 3 // 2, W)` uint8 NV12."""
    try:
        from av.codec.hwaccel import HWAccel
    except ImportError:
        pytest.skip("this PyAV has no hwaccel support")
    pictures = []
    try:
        with av.open(str(path), hwaccel=HWAccel("cuda", allow_software_fallback=False)) as container:
            for frame in container.decode(video=0):
                nv12 = frame if frame.format.name == "nv12" else frame.reformat(format="nv12")
                height, width = nv12.height, nv12.width
                luma = np.frombuffer(nv12.planes[0], np.uint8).reshape(-1, nv12.planes[0].line_size)[:height, :width]
                chroma = np.frombuffer(nv12.planes[1], np.uint8).reshape(-1, nv12.planes[1].line_size)
                pictures.append(np.concatenate([luma, chroma[: (height + 1) // 2, :width]]))
                if len(pictures) == count:
                    break
    except Exception as error:  # no NVDEC in PyAV's FFmpeg build, or hwaccel refused
        pytest.skip(f"PyAV hwaccel decode unavailable: {error}")
    return pictures


def _our_nv12(path, count: int) -> list[np.ndarray]:
    """The first `count` pictures as framefeed's NVDEC backend decodes them (before colour conversion)."""
    demuxer, backend = _open_backend(path, 0)
    traits = stream_traits(demuxer.stream)
    height, width = traits.height, traits.width
    owned = []
    try:
        backend.reset()
        for packet in demuxer.packets():
            owned += [backend.retain(frame) for frame in backend.send(packet)]
            if len(owned) >= count:
                break
        else:
            owned += [backend.retain(frame) for frame in backend.drain()]
        surfaces = [_surface_tensor(frame.owned, "NV12", height) for frame in owned[:count]]
    finally:
        backend.close()
        demuxer.close()
    rows = height + (height + 1) // 2
    return [surface[:rows, :width].numpy().astype(np.uint8) for surface in surfaces]


@pytest.mark.parametrize("name", ["h264_bframes_long_gop.mp4", "mpeg2.ts"])
def test_our_nv12_equals_ffmpeg_nvdec(corpus, name, capsys):
    """The raw NV12 pictures: FFmpeg's own NVDEC path through PyAV (hwaccel)
    decodes the same packets to the same samples. For MPEG-2 this is the
    proof that its difference from FFmpeg's software decoder is the hardware
    decoder's (IDCT), not our packet feeding or colour conversion; the
    per-picture drift against software is reported."""
    with av.open(str(corpus[name])) as container:
        software = [("?IPB"[int(frame.pict_type)] if int(frame.pict_type) < 4 else "?",
                     frame.reformat(format="nv12").to_ndarray().astype(np.int32))
                    for frame in container.decode(video=0)]
    count = len(software)
    theirs = _ffmpeg_nvdec_nv12(corpus[name], count)
    ours = _our_nv12(corpus[name], count)
    assert len(ours) == len(theirs) == len(software) == count
    for index, (mine, ffmpeg) in enumerate(zip(ours, theirs, strict=True)):
        assert np.array_equal(mine, ffmpeg), f"{name} picture {index}: NV12 differs from FFmpeg's NVDEC output"
    if name.startswith("mpeg2"):
        with capsys.disabled():
            drift = [f"{index}:{kind} {int(np.abs(mine - reference).max())}/{np.abs(mine - reference).mean():.2f}"
                     for index, (mine, (kind, reference)) in enumerate(zip(ours, software, strict=True))]
            print(f"\n[mpeg2] NVDEC vs FFmpeg software NV12, max/mean |diff| per picture: {' '.join(drift)}")


# -- issue 22: streams, surfaces and reuse on the real binding ------------------------------------


def test_each_decoder_runs_on_a_non_blocking_stream_of_its_own(corpus):
    """Two VideoDecoders: two streams, neither a default stream, neither one
    of torch's pooled streams, both non-blocking; a picture's
    `__cuda_array_interface__` says stream 2 whatever stream decoded it
    (which is why framefeed does not read it)."""
    import cupy

    first = VideoDecoder(str(corpus["h264_bframes_long_gop.mp4"]), device="cuda")
    second = VideoDecoder(str(corpus["hevc_cra.mp4"]), device="cuda")
    handles = [decoder._backend.producer.handle for decoder in (first, second)]
    pooled = {torch.cuda.Stream(DEVICE).cuda_stream for _ in range(64)}  # torch's 32 per priority, twice round
    assert len(set(handles)) == 2 and not set(handles) & ({0, 1, 2} | pooled)
    with cupy.cuda.Device(0):
        assert all(cupy.cuda.runtime.streamGetFlags(h) & cupy.cuda.runtime.streamNonBlocking for h in handles)
    backend = first._backend
    with av.open(str(corpus["h264_bframes_long_gop.mp4"])) as container:
        stream = container.streams.video[0]
        pictures = []
        for packet in container.demux(stream):
            if packet.size:
                pictures = backend.send(packet)
                if pictures:
                    break
    assert pictures[0].picture.cuda()[0].__cuda_array_interface__["stream"] == 2


def test_a_reused_decoder_takes_every_coded_size_of_its_bucket(tmp_path):
    """1920x1080 HEVC coded as 1080 rows, then as 1088 (x265 min-cu-size 16),
    on one decoder: created with the bucket 1920x1088 as maximum,
    reconfigured with setReconfigParams; frames as the CPU decodes them."""
    from framefeed.samples import VideoSpec, encode_video, x265_options

    paths = []
    for min_cu in (8, 16):
        options = dict(x265_options(8))
        options["x265-params"] += f":min-cu-size={min_cu}"
        paths.append(encode_video(tmp_path / f"hevc_{min_cu}.mp4", VideoSpec(
            codec="libx265", width=1920, height=1080, num_frames=8, codec_options=options)))
    cache = gpu_decode.default_decoders(0).decoder_cache  # what VideoDecoder(device="cuda") uses
    created = cache.created
    for path in [*paths, paths[0]]:
        cuda, cpu = open_pair(path)
        assert not cuda.cpu_fallback
        worst = int((cuda.get_frames_at(list(range(8))).data.cpu().int()
                     - cpu.get_frames_at(list(range(8))).data.int()).abs().max())
        assert worst <= 2, (path, worst)
        cuda.close()
    assert cache.created - created <= 1  # one decoder (or an idle one of the bucket) served all three
