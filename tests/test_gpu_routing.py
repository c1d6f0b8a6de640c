"""Which streams go to NVDEC and which to the CPU, decided at construction;
`device="cuda"` without a GPU or without PyNvVideoCodec; the decoder cache.
No GPU needed: GPU capabilities come from a fake `GetDecoderCaps` table
modelled on NVIDIA's published NVDEC limits."""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
import weakref
from types import SimpleNamespace

import av
import pytest
import torch
from gpu_fixtures import (
    HOPPER_CAPS,
    UNSUPPORTED,
    FakePacketData,
    caps,
    emulated_nvdec_decoders,
    hand_built_nvdec,
    host_converter,
)

from corpus import FILES, reference_frames
from framefeed.decoders import VideoDecoder
from framefeed.engine.backends.cpu_fallback.backend import CpuBackend
from framefeed.engine.backends.gpu_decode import NvdecDecoders
from framefeed.engine.backends.gpu_decode.backend import NvdecBackend
from framefeed.engine.backends.gpu_decode.bitstream import PacketPreparer, PreparedPacket
from framefeed.engine.backends.gpu_decode.capabilities import (
    DecoderCapsCache,
    hardware_reason,
    stream_reason,
    stream_traits,
)
from framefeed.engine.backends.gpu_decode.decoder_cache import (
    DecoderCache,
    DecoderKey,
    PooledDecoder,
)
from framefeed.engine.backends.registry import BackendContext, open_backend
from framefeed.engine.demux.demuxer import Demuxer
from framefeed.engine.packets import CodecParameters
from framefeed.engine.source import resolve_source
from framefeed.errors import CudaUnavailableError


@pytest.fixture(scope="session")
def corpus(corpus_files):
    return corpus_files


# Ada (L4, L40) adds AV1.
ADA_CAPS = {**HOPPER_CAPS, **{("av1", "420", depth): caps(128, 128, 8192, 8192, 262144) for depth in (8, 10)}}


def route(path, table, compute_capability, device_name="NVIDIA H200"):
    """The routing reason for a file ("" = NVDEC), as open_nvdec_backend decides it."""
    with av.open(str(path)) as container:
        traits = stream_traits(container.streams.video[0])
    reason = stream_reason(traits)
    if reason:
        return reason
    answer = table.get((traits.codec, traits.chroma_format, traits.bit_depth), UNSUPPORTED)
    return hardware_reason(traits, answer, compute_capability, device_name)


@pytest.mark.parametrize("entry", FILES, ids=lambda entry: entry.name)
def test_routing_of_each_corpus_file_on_hopper(corpus, entry):
    reason = route(corpus[entry.name], HOPPER_CAPS, (9, 0))
    if entry.nvdec_on_hopper:
        assert reason == ""
    else:
        assert entry.nvdec_fallback in reason, reason


def test_av1_goes_to_nvdec_on_ada_but_not_on_hopper_or_a100(corpus):
    path = corpus["av1.mkv"]
    assert route(path, ADA_CAPS, (8, 9), "NVIDIA L40S") == ""
    assert "no AV1 decoder" in route(path, ADA_CAPS, (9, 0))  # even if the caps claimed otherwise
    assert "no AV1 decoder" in route(path, ADA_CAPS, (8, 0), "NVIDIA A100")
    assert "GetDecoderCaps" in route(path, HOPPER_CAPS, (8, 9))  # caps say no: no


@pytest.mark.parametrize("name, words", [
    ("h264_10bit.mp4", "High 10"), ("h264_422.mp4", "yuv422p"), ("h264_interlaced.mp4", "deinterlaces"),
    ("odd_321x241.webm", "321x241"), ("mpeg4_part2.mp4", "mpeg4"), ("hevc_below_minimum.mp4", "144x144"),
])
def test_fallback_reasons_name_the_cause(corpus, name, words):
    assert words in route(corpus[name], HOPPER_CAPS, (9, 0))


def test_caps_limits_are_enforced():
    from framefeed.engine.backends.gpu_decode.capabilities import StreamTraits
    from framefeed.engine.backends.gpu_decode.colour import colour_spec_for

    def traits(width, height, codec="hevc"):
        return StreamTraits(codec, width, height, "yuv420p", None, False, colour_spec_for("yuv420p", 2, 0)[0])

    table = caps(144, 144, 4096, 2304, 32768)
    assert hardware_reason(traits(1920, 1080), table, (9, 0)) == ""
    assert "exceeds" in hardware_reason(traits(4352, 1080), table, (9, 0))  # too wide
    assert "exceeds" in hardware_reason(traits(4096, 2304), table, (9, 0))  # 36864 macroblocks > 32768
    assert "below" in hardware_reason(traits(1920, 128), table, (9, 0))
    assert "GetDecoderCaps" in hardware_reason(traits(1920, 1080), UNSUPPORTED, (9, 0))
    # A caps answer without "supported" (older builds): a decoder that exists reports a maximum size.
    assert hardware_reason(traits(1920, 1080), {"width_max": 8192, "height_max": 8192}, (9, 0)) == ""
    assert "GetDecoderCaps" in hardware_reason(traits(1920, 1080), {}, (9, 0))


def test_decoder_caps_are_queried_once_per_codec_format_and_depth():
    calls = []
    barrier = threading.Barrier(8)

    def query(device, codec, chroma, depth):
        calls.append((device, codec, chroma, depth))
        return HOPPER_CAPS.get((codec, chroma, depth), UNSUPPORTED)

    cache = DecoderCapsCache(query)

    def ask():
        barrier.wait()
        for _ in range(20):
            assert cache.get(0, "hevc", "420", 10)["supported"] == 1
            assert cache.get(0, "av1", "420", 8)["supported"] == 0

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cache.get(1, "hevc", "420", 10)  # another device is another question
    assert sorted(calls) == [(0, "av1", "420", 8), (0, "hevc", "420", 10), (1, "hevc", "420", 10)]


# -- device="cuda" without a GPU, without PyNvVideoCodec ------------------------------------------


def test_cuda_without_a_gpu_is_a_clear_error(corpus, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:0", torch.device("cuda", 1)):
        with pytest.raises(CudaUnavailableError, match="no usable CUDA GPU") as info:
            VideoDecoder(str(corpus["h264_bframes_long_gop.mp4"]), device=device)
        assert isinstance(info.value, RuntimeError)
        assert "device='cpu'" in str(info.value)


def _open_backend_for(path, device, owner=None):
    demuxer = Demuxer(resolve_source(str(path)), None)
    params = CodecParameters.from_stream(demuxer.stream)
    return demuxer, open_backend(params, device, BackendContext(stream=demuxer.stream, nvdec=owner))


@pytest.fixture
def no_pynvvideocodec(monkeypatch, tmp_path):
    """A PyNvVideoCodec whose import fails the way it does when the driver's
    video libraries are missing (the package raises RuntimeError), on a
    machine where torch sees a GPU; yields a fresh decoder owner."""
    package = tmp_path / "PyNvVideoCodec"
    package.mkdir()
    (package / "__init__.py").write_text(
        "raise RuntimeError('libnvcuvid.so.1: cannot open shared object file: No such file or directory')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "PyNvVideoCodec", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    yield NvdecDecoders(0)


def test_missing_driver_library_falls_back_with_the_reason(corpus, no_pynvvideocodec):
    demuxer, selection = _open_backend_for(corpus["h264_bframes_long_gop.mp4"], torch.device("cuda", 0),
                                           no_pynvvideocodec)
    try:
        assert isinstance(selection.backend, CpuBackend)
        assert bool(selection.status) is True
        assert "libnvcuvid.so.1" in str(selection.status) and "PyNvVideoCodec" in str(selection.status)
    finally:
        demuxer.close()


def test_stream_reasons_come_before_library_checks(corpus, no_pynvvideocodec):
    demuxer, selection = _open_backend_for(corpus["odd_321x241.webm"], torch.device("cuda", 0),
                                           no_pynvvideocodec)
    try:
        assert isinstance(selection.backend, CpuBackend)
        assert "odd frame size" in str(selection.status)
    finally:
        demuxer.close()


def test_video_decoder_on_cuda_without_pynvvideocodec_reports_cpu_fallback(corpus, monkeypatch, no_pynvvideocodec):
    """With a GPU visible to torch but no usable PyNvVideoCodec, construction
    succeeds and says why it decodes on the CPU (no frames are decoded here:
    this machine has no GPU to upload them to)."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    decoder = VideoDecoder(str(corpus["h264_bframes_long_gop.mp4"]), device="cuda:0")
    assert bool(decoder.cpu_fallback) is True
    assert "libnvcuvid.so.1" in str(decoder.cpu_fallback)


def test_cpu_decoders_never_fall_back(corpus):
    decoder = VideoDecoder(str(corpus["h264_bframes_long_gop.mp4"]), device="cpu")
    assert bool(decoder.cpu_fallback) is False


def test_importing_framefeed_does_not_import_pynvvideocodec_or_cupy(corpus):
    script = (
        "import sys, framefeed, framefeed.engine.backends.gpu_decode\n"
        "from framefeed.decoders import VideoDecoder\n"
        f"VideoDecoder({str(corpus['h264_bframes_long_gop.mp4'])!r}, device='cpu')[0]\n"
        "bad = [m for m in ('PyNvVideoCodec', 'cupy') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# -- the decoder cache ---------------------------------------------------------------------------


class Factory:
    def __init__(self):
        self.made = []

    def __call__(self, key):
        entry = PooledDecoder(key, decoder=f"decoder-{len(self.made)}", stream=f"stream-{len(self.made)}")
        self.made.append(entry)
        return entry


def key(codec="h264", width=128, height=96, surface="NV12", device=0):
    return DecoderKey(device, codec, width, height, surface)


def test_cache_reuses_a_released_decoder_for_the_same_key():
    factory = Factory()
    cache = DecoderCache(factory, capacity=4)
    first = cache.acquire(key())
    assert not first.reused
    cache.release(first)
    again = cache.acquire(key())
    assert again is first and again.reused
    assert (cache.created, cache.reused) == (1, 1)


def test_cache_never_hands_one_decoder_to_two_owners():
    cache = DecoderCache(Factory(), capacity=4)
    a, b = cache.acquire(key()), cache.acquire(key())
    assert a is not b and a.decoder != b.decoder


@pytest.mark.parametrize("other", [key(codec="hevc"), key(width=256), key(surface="P016"), key(device=1)])
def test_cache_keys_on_codec_size_format_and_device(other):
    cache = DecoderCache(Factory(), capacity=4)
    cache.release(cache.acquire(key()))
    assert cache.acquire(other).key == other
    assert cache.created == 2


def test_cache_evicts_the_least_recently_released_beyond_capacity():
    evicted = []
    cache = DecoderCache(Factory(), capacity=2, on_evict=evicted.append)
    entries = [cache.acquire(key(width=64 * (i + 1))) for i in range(3)]
    for entry in entries:
        cache.release(entry)
    assert evicted == [entries[0]]  # handed over for destruction (the reaper's job, off this thread)
    assert cache.idle_count() == 2
    assert cache.acquire(key(width=128)) is entries[1]
    assert cache.acquire(key(width=64)) is not entries[0]  # gone: a new one
    cache.clear()
    assert cache.idle_count() == 0 and evicted == [entries[0], entries[2]]
    plain = DecoderCache(Factory(), capacity=0)  # without on_evict the last reference is dropped inline
    dropped = plain.acquire(key())
    plain.release(dropped)
    assert dropped.decoder is None


def test_cache_capacity_from_environment(monkeypatch):
    from framefeed.engine.backends.gpu_decode.decoder_cache import (
        DEFAULT_CAPACITY,
        capacity_from_environment,
    )

    monkeypatch.setenv("FRAMEFEED_NVDEC_CACHE_SIZE", "3")
    assert capacity_from_environment() == 3
    monkeypatch.setenv("FRAMEFEED_NVDEC_CACHE_SIZE", "many")
    assert capacity_from_environment() == DEFAULT_CAPACITY


def test_backend_gives_its_decoder_back_when_collected(corpus):
    """A loop over many short videos: each VideoDecoder's backend returns its
    decoder to the cache when it goes away, and the next one reuses it."""
    path = corpus["limited_bt709.mkv"]  # 20 frames of H.264
    with av.open(str(path)) as container:
        converter = host_converter(stream_traits(container.streams.video[0]))
    cache = DecoderCache(lambda k: PooledDecoder(k, hand_built_nvdec("h264", converter), None), capacity=2)

    def open_one():
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            pooled = cache.acquire(key())
            backend = NvdecBackend(decoder=pooled.decoder, make_packet=FakePacketData,
                                   preparer=PacketPreparer(stream), converter=converter,
                                   output_device=torch.device("cpu"), flush_first=pooled.reused,
                                   on_close=lambda: cache.release(pooled))
            for packet in container.demux(stream):
                if packet.size:
                    backend.send(packet)
            return weakref.ref(backend), pooled

    seen = set()
    for _ in range(20):
        ref, pooled = open_one()
        gc.collect()
        assert ref() is None
        seen.add(id(pooled))
    assert (cache.created, cache.reused) == (1, 19) and len(seen) == 1
    # A reused decoder was flushed first: its log shows an end-of-stream packet before new data.
    assert pooled.decoder.log[0] is not None and None in pooled.decoder.log


def test_backend_close_is_idempotent():
    released = []
    preparer = SimpleNamespace(prepare=lambda packet: [PreparedPacket(b"x", 1, 1, 0, 0, None, True, False)])
    backend = NvdecBackend(decoder=None, make_packet=FakePacketData, preparer=preparer, converter=None,
                           output_device=torch.device("cpu"), on_close=lambda: released.append(1))
    backend.close()
    backend.close()
    with pytest.raises(RuntimeError, match="closed"):
        backend.send(SimpleNamespace(is_keyframe=True, pts=0, dts=0, duration=0, is_discard=False))
    del backend
    gc.collect()
    assert released == [1]


# -- open_nvdec_backend's wiring, with a fake PyNvVideoCodec ------------------------------------------


@pytest.fixture
def fake_gpu():
    """A decoder owner on an emulated 'H200' (see `gpu_fixtures.emulated_runtime`)."""
    return emulated_nvdec_decoders(HOPPER_CAPS)


def _open_nvdec(path, owner):
    demuxer = Demuxer(resolve_source(str(path)), None)
    backend, reason = owner.open_backend(CodecParameters.from_stream(demuxer.stream), stream=demuxer.stream)
    return demuxer, backend, reason


def test_open_nvdec_backend_wires_pynvvideocodec(corpus, fake_gpu):
    demuxer, backend, reason = _open_nvdec(corpus["hevc_10bit.mkv"], fake_gpu)
    nvc = fake_gpu.runtime()[0].nvc
    try:
        assert reason == "" and isinstance(backend, NvdecBackend)
        assert nvc.caps_queries == [(0, "HEVC", "420", 10)]
        (created,) = nvc.created
        stream = created.pop("cudastream")
        assert stream not in (0, 1, 2) and stream == backend.producer.handle  # the decoder's own stream
        # 320x240 HEVC: created for its size bucket (multiples of 64), so every coded size of it fits
        assert created == {"gpuid": 0, "codec": "HEVC", "cudacontext": 777, "usedevicememory": True,
                           "maxwidth": 320, "maxheight": 256, "outputColorType": "NATIVE"}
        frames = []
        for packet in demuxer.packets():
            frames += [backend.retain(f) for f in backend.send(packet)]
        frames += backend.drain()
        assert len(frames) == len(reference_frames("hevc_10bit.mkv"))
    finally:
        backend.close()
        demuxer.close()


def test_open_nvdec_backend_reuses_and_routes(corpus, fake_gpu):
    nvc = fake_gpu.runtime()[0].nvc
    for _ in range(3):
        demuxer, backend, reason = _open_nvdec(corpus["h264_bframes_long_gop.mp4"], fake_gpu)
        assert reason == ""
        backend.close()
        demuxer.close()
    assert len(nvc.created) == 1  # one decoder, reused through the owner's cache
    assert fake_gpu.decoder_cache.reused == 2
    assert len(nvc.caps_queries) == 1
    other = emulated_nvdec_decoders(HOPPER_CAPS)  # another owner (a pool thread) has its own decoders
    demuxer, backend, reason = _open_nvdec(corpus["h264_bframes_long_gop.mp4"], other)
    backend.close()
    demuxer.close()
    assert other.decoder_cache.created == 1 and fake_gpu.decoder_cache.created == 1
    demuxer, backend, reason = _open_nvdec(corpus["av1.mkv"], fake_gpu)
    demuxer.close()
    assert backend is None and "no AV1 decoder" in reason
    demuxer, backend, reason = _open_nvdec(corpus["hevc_below_minimum.mp4"], fake_gpu)
    demuxer.close()
    assert backend is None and "below" in reason


def test_open_nvdec_backend_falls_back_when_decoder_creation_fails(corpus, fake_gpu, monkeypatch):
    class PyNvVCException(Exception):
        pass

    def refuse(**kwargs):
        raise PyNvVCException("cuvidCreateDecoder failed: CUDA_ERROR_OUT_OF_MEMORY")

    monkeypatch.setattr(fake_gpu.runtime()[0].nvc, "CreateDecoder", refuse)
    demuxer, backend, reason = _open_nvdec(corpus["h264_bframes_long_gop.mp4"], fake_gpu)
    demuxer.close()
    assert backend is None and "CUDA_ERROR_OUT_OF_MEMORY" in reason
