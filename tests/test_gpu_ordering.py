"""Issue 22: what the first GPU run needs, checked on the CPU.

Every GPU mode runs framefeed's real NVDEC code on the emulated NVDEC and
the recording CUDA stand-in of `gpu_fixtures` (PyNvVideoCodec 2.2.4's
behaviour, cited there): streams and events (items 1, 2), decoder
destruction (3), decoder reuse and failures (4), the DataLoader start
method (7), CUDA IPC lifetimes (8) and the Ray actor's host copies (9).
Items 5 and 6 are tested in test_gpu_bitstream.py and test_gpu_colour.py.
"""

from __future__ import annotations

import dataclasses
import threading
import warnings
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from gpu_fixtures import (
    DISPLAY_DELAY,
    EmulatedNvdec,
    FakePacketData,
    ParserCallbackAbort,
    RecordingCudaCalls,
    emulated_nvdec_decoders,
    emulated_runtime,
    hand_built_nvdec,
    host_converter,
)

import corpus
from framefeed import VideoDecoder
from framefeed.engine.backends.gpu_decode.backend import NvdecBackend
from framefeed.engine.backends.gpu_decode.bitstream import PacketPreparer
from framefeed.engine.backends.gpu_decode.capabilities import stream_traits
from framefeed.engine.backends.registry import open_backend
from framefeed.errors import DecodingError
from framefeed.samples import VideoSpec, encode_video, x264_options, x265_options

CUDA = torch.device("cuda", 0)
DEFAULTS = (0, 1, 2)


class OwnedVideoDecoder(VideoDecoder):
    """`VideoDecoder(device="cuda")` on an emulated H200 owner of the test's own."""

    def __init__(self, source, owner, **kwargs):
        self._owner = owner
        super().__init__(source, device="cpu", **kwargs)

    def _open_backend(self, params, context):
        return open_backend(params, CUDA, dataclasses.replace(context, nvdec=self._owner))


def path_of(name: str) -> str:
    return str(corpus.BY_NAME[name].path)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """Streams whose reuse NVDEC gets wrong without size buckets: HEVC with
    the same 320x232 display size but coded 232 or 240 rows (x265's minimum
    coding unit of 8 or 16, the 1080-vs-1088 case in small), and H.264 with
    coded 240 rows shown as 232 or 240."""
    folder = tmp_path_factory.mktemp("issue22")

    def hevc(name: str, min_cu: int, height: int) -> Path:
        options = dict(x265_options(8))
        options["x265-params"] += f":min-cu-size={min_cu}"
        return encode_video(folder / name, VideoSpec(codec="libx265", width=320, height=height, num_frames=16,
                                                     codec_options=options))

    def h264(name: str, height: int) -> Path:
        return encode_video(folder / name, VideoSpec(width=320, height=height, num_frames=16,
                                                     codec_options=x264_options(8)))

    made = {"hevc_coded_232": hevc("hevc_coded_232.mp4", 8, 232), "hevc_coded_240": hevc("hevc_coded_240.mp4", 16, 232),
            "h264_shown_232": h264("h264_232.mp4", 232), "h264_shown_240": h264("h264_240.mp4", 240)}
    for name, path in made.items():  # the premise: coded sizes as named
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            next(container.decode(stream))
            coded = stream.codec_context.coded_height
        assert coded == {"hevc_coded_232": 232, "hevc_coded_240": 240, "h264_shown_232": 240,
                         "h264_shown_240": 240}[name], (name, coded)
    return made


def cpu_frames(path, indices):
    return VideoDecoder(str(path), device="cpu").get_frames_at(indices)


def max_diff(a, b) -> int:
    return int((a.int() - b.int()).abs().max())


# -- items 1 and 2: streams and events -----------------------------------------------------------


def test_videodecoder_produces_on_the_decoders_stream_and_hands_frames_to_the_callers():
    """Pictures are converted on the decoder's own stream (not the stream 2
    the binding's `__cuda_array_interface__` names, not the caller's legacy
    stream 0); the output is allocated there too, so the producer never
    waits on the caller; the caller's stream waits on the producer's event;
    the events are made once, not per frame."""
    owner = emulated_nvdec_decoders()
    calls = owner.runtime()[0].calls
    decoder = OwnedVideoDecoder(path_of("h264_bframes_long_gop.mp4"), owner)
    assert calls.current_stream(0).cuda_stream == 0  # this thread's stream: the legacy default
    batch = decoder.get_frames_at([0, 40, 41, 99])
    single = decoder[120]
    more = decoder.get_frames_at(list(range(150, 170)))
    approximate = OwnedVideoDecoder(path_of("hevc_cra.mp4"), owner, seek_mode="approximate")
    ranged = approximate.get_frames_played_in_range(0.5, 1.5)
    assert calls.violations == []
    for output in (batch.data, single, more.data, ranged.data):
        calls.assert_visible(output, 0)
    nvdec_events = sum(len(nvdec._events) for nvdec in owner.runtime()[0].nvc.decoders)  # one per output buffer
    assert calls.events_created - nvdec_events == 2 * calls.streams_created  # framefeed's: two per stream, not per frame
    producer = decoder._backend.producer
    assert producer.handle not in DEFAULTS
    assert ("wait", 0, producer._ready) in calls.log  # the caller waits on the producer's event
    assert not any(entry[0] == "wait" and entry[1] == producer.handle for entry in calls.log)
    reference = cpu_frames(path_of("h264_bframes_long_gop.mp4"), [0, 40, 41, 99])
    assert max_diff(batch.data, reference.data) <= 2
    assert torch.equal(batch.pts_seconds, reference.pts_seconds)


def test_every_pool_session_and_decoder_owns_a_stream_and_hands_over_complete_batches(monkeypatch):
    """21 sessions: 21 session streams plus one per decoder, all distinct
    and none a default stream (torch's pool would hand out 32 streams round
    robin, so sessions and decoders would share); batches are complete (the
    session waited for its producer on the host) when their futures
    resolve, and nothing the pool queues waits on the legacy stream."""
    from framefeed.pool import DecodePool

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    runtime = emulated_runtime()
    calls = runtime.calls
    names = ["h264_bframes_long_gop.mp4", "hevc_cra.mp4", "vp9.webm", "av1.mkv"]  # av1: a CPU fallback, uploaded
    with DecodePool("cuda:0", sessions=21, nvdec_runtime=runtime) as pool:
        futures = [pool.submit(path_of(name), indices=[i % 7, 30 + i % 5]) for i in range(42) for name in names]
        batches = [future.result() for future in futures]
        session_streams = [session.stream.handle for session in pool._engine.sessions]
    decoder_streams = [created["cudastream"] for created in runtime.nvc.created]
    streams = session_streams + decoder_streams
    assert len(session_streams) == 21 and len(set(streams)) == len(streams)
    assert not set(streams) & set(DEFAULTS)
    assert calls.streams_created == len(streams) and calls.streams_destroyed == len(streams)  # closed with the pool
    assert calls.violations == []
    assert sum(1 for batch in batches if batch.cpu_fallback) == 42
    for batch in batches:
        if not batch.cpu_fallback:  # (a fallback's upload would be on the session stream; on the host there is none)
            calls.assert_visible(batch.data, 0)
    scopes = {entry[1] for entry in calls.log if entry[0] == "scope"}
    assert scopes <= set(streams)  # pool work ran on owned streams only


# -- item 3: destruction off the hot path ------------------------------------------------------


def test_evicted_decoders_are_destroyed_on_the_reaper_thread(monkeypatch):
    from framefeed.engine.backends.gpu_decode import NvdecDecoders, reaper

    destroyed_on = []
    original = reaper.destroy

    def recording_destroy(entry):
        destroyed_on.append(threading.current_thread().name)
        original(entry)

    monkeypatch.setattr(reaper, "destroy", recording_destroy)
    runtime = emulated_runtime()
    owner = NvdecDecoders(0, runtime=runtime, capacity=1)
    for name in ["h264_bframes_long_gop.mp4", "hevc_cra.mp4"] * 3:  # two keys, room for one: every release evicts
        decoder = OwnedVideoDecoder(path_of(name), owner)
        decoder.get_frames_at([3])
        decoder.close()
    owner.close()
    assert len(destroyed_on) == len(runtime.nvc.created) == 6
    assert set(destroyed_on) == {"framefeed-nvdec-reaper"}
    waits = {entry[2] for entry in runtime.calls.log if entry[0] == "synchronize"}
    assert waits == {"framefeed-nvdec-reaper"}  # only the reaper waited for a decoder's stream
    assert runtime.calls.streams_destroyed == 6 and runtime.calls.violations == []


# -- item 4: reuse by size bucket, and failures ------------------------------------------------


def test_one_decoder_serves_every_coded_size_of_its_bucket(clips):
    """HEVC 320x232 coded as 232 then 240 rows (1080 vs 1088 in small) and
    back, and H.264 shown as 232 then 240 rows of the same coded 240: one
    decoder each, created with the bucket (320x256) as its maximum, given
    `setReconfigParams` with the stream's size on reuse after the flush;
    every frame as the CPU decodes it."""
    owner = emulated_nvdec_decoders()
    nvc = owner.runtime()[0].nvc
    for names in (["hevc_coded_232", "hevc_coded_240", "hevc_coded_232"],
                  ["h264_shown_232", "h264_shown_240", "h264_shown_232"]):
        for name in names:
            decoder = OwnedVideoDecoder(clips[name], owner)
            batch = decoder.get_frames_at(list(range(16)))
            reference = cpu_frames(clips[name], list(range(16)))
            assert max_diff(batch.data, reference.data) <= 2, name
            assert torch.equal(batch.pts_seconds, reference.pts_seconds), name
            decoder.close()
    assert [(c["codec"], c["maxwidth"], c["maxheight"]) for c in nvc.created] == [("HEVC", 320, 256),
                                                                                  ("H264", 320, 256)]
    hevc, h264 = nvc.decoders
    assert hevc.reconfigured == [(320, 232), (320, 232)] and h264.reconfigured == [(320, 240), (320, 232)]
    assert owner.runtime()[0].calls.violations == []


def feed(backend, path):
    """Every packet of `path` through `backend`; the frames' pts."""
    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        backend._preparer = PacketPreparer(stream)
        for packet in container.demux(stream):
            if packet.size:
                frames += [backend.pts_of(f) for f in backend.send(packet)]
        frames += [backend.pts_of(f) for f in backend.drain()]
    return frames


def test_the_emulated_nvdec_fails_where_pynvvideocodec_does_without_buckets(clips):
    """The stand-in reproduces what framefeed avoids: a decoder created
    without a maximum size takes the first coded size as its maximum, and a
    larger coded size throws inside the parser callback."""
    with av.open(str(clips["hevc_coded_232"])) as container:
        converter = host_converter(stream_traits(container.streams.video[0]))
    nvdec = hand_built_nvdec("hevc", converter)  # maxwidth/maxheight 0: what framefeed passed before issue 22
    backend = NvdecBackend(decoder=nvdec, make_packet=FakePacketData, preparer=None, converter=converter,
                           output_device=torch.device("cpu"))
    assert len(feed(backend, clips["hevc_coded_232"])) == 16
    with pytest.raises(ParserCallbackAbort, match="width/height > maxwidth/maxheight"):
        feed(backend, clips["hevc_coded_240"])


def test_the_emulated_nvdec_scales_or_overflows_without_set_reconfig_params(clips):
    """Within its maximum, a reused decoder still needs `setReconfigParams`:
    without it a new coded size comes out scaled into the old size, and a
    bigger display size with the same coded size overflows the old buffers."""
    with av.open(str(clips["hevc_coded_232"])) as container:
        traits = stream_traits(container.streams.video[0])
    converter = host_converter(traits)
    nvdec = EmulatedNvdec("hevc", calls=converter.stream.calls, stream=converter.stream.handle, max_width=320,
                          max_height=256)
    backend = NvdecBackend(decoder=nvdec, make_packet=FakePacketData, preparer=None, converter=converter,
                           output_device=torch.device("cpu"))
    feed(backend, clips["hevc_coded_232"])
    frames = []
    with av.open(str(clips["hevc_coded_240"])) as container:
        stream = container.streams.video[0]
        backend._preparer = PacketPreparer(stream)
        for packet in container.demux(stream):
            for frame in backend.send(packet) if packet.size else []:
                out = torch.empty(232, 320, 3, dtype=torch.uint8)
                backend.write_rgb(frame, out)
                frames.append(out)
    reference = cpu_frames(clips["hevc_coded_240"], list(range(len(frames))))
    assert max_diff(torch.stack(frames), reference.data.permute(0, 2, 3, 1)) > 20  # squeezed 240 -> 232 rows

    with av.open(str(clips["h264_shown_240"])) as container:
        converter = host_converter(stream_traits(container.streams.video[0]))
    nvdec = EmulatedNvdec("h264", calls=converter.stream.calls, stream=converter.stream.handle, max_width=320,
                          max_height=256)
    backend = NvdecBackend(decoder=nvdec, make_packet=FakePacketData, preparer=None, converter=converter,
                           output_device=torch.device("cpu"))
    feed(backend, clips["h264_shown_232"])
    with pytest.raises(ParserCallbackAbort, match="heap overflow"):
        feed(backend, clips["h264_shown_240"])


def test_an_nvdec_failure_fails_the_call_naming_the_packet_and_the_decoder_is_not_reused():
    """A `Decode` that raises loses pictures: the executor skips a
    `DecodingError` as a damaged packet, so the backend raises another
    type; at the API it is a `DecodingError` naming the packet, never fewer
    frames. The failed decoder is destroyed, not handed to the next video."""
    owner = emulated_nvdec_decoders()
    nvc = owner.runtime()[0].nvc
    nvc.fail_at = 30
    path = path_of("h264_bframes_long_gop.mp4")
    decoder = OwnedVideoDecoder(path, owner, seek_mode="approximate")
    metadata = decoder.metadata
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not a "packets could not be decoded" warning either
        with pytest.raises(DecodingError, match=r"NVDEC failed while decoding the packet with pts \d+"):
            decoder.get_frames_played_in_range(metadata.begin_stream_seconds, metadata.end_stream_seconds)
    decoder.close()
    nvc.fail_at = None
    again = OwnedVideoDecoder(path, owner)
    assert len(again.get_frames_at([0, 10, 199])) == 3
    assert len(nvc.created) == 2  # a new decoder: the failed one was destroyed, not reused


# -- the stand-in itself: what it presents --------------------------------------------------------


def test_emulated_pictures_look_like_pynvvideocodec_2_2_4s():
    """Pictures through `__cuda_array_interface__` as the binding presents
    them; NVDEC's display delay and end-of-stream burst; caps as
    `GetDecoderCaps` returns them."""
    from framefeed.engine.backends.gpu_decode.surfaces import planes_of_decoded_frame

    runtime = emulated_runtime()
    nvc = runtime.nvc
    assert set(nvc.GetDecoderCaps(gpuid=0, codec="HEVC", chromaformat="420", bitdepth=10)) == {
        "codec_id", "chromaformat_id", "bitdepth", "supported", "num_decoder_engines", "width_max", "height_max",
        "mb_num_max", "width_min", "height_min"}
    assert nvc.GetDecoderCaps(gpuid=0, codec="AV1", chromaformat="420", bitdepth=8)["supported"] == 0
    path = path_of("hevc_10bit.mkv")
    nvdec = nvc.CreateDecoder(gpuid=0, codec="HEVC", cudacontext=0, cudastream=runtime.calls.create_stream(0),
                              usedevicememory=True, outputColorType="NATIVE")
    with av.open(path) as container:
        stream = container.streams.video[0]
        preparer = PacketPreparer(stream)
        shown, ffmpeg = [], []
        reference = av.CodecContext.create("hevc", "r")
        for packet in container.demux(stream):
            if not packet.size:
                continue
            for prepared in preparer.prepare(packet):
                data = FakePacketData()
                data.bsl_data, data.bsl, data.pts = prepared.address, prepared.size, prepared.pts or 0
                shown.append(len(nvdec.Decode(data)))
                ffmpeg.append(len(reference.decode(av.Packet(bytes(prepared.payload)))))
        burst = nvdec.Decode(FakePacketData())
    first_ffmpeg = next(i for i, n in enumerate(ffmpeg) if n)
    assert next(i for i, n in enumerate(shown) if n) == first_ffmpeg + DISPLAY_DELAY
    assert len(burst) >= DISPLAY_DELAY and sum(shown) + len(burst) == len(corpus.reference_frames("hevc_10bit.mkv"))
    picture = burst[0]
    luma = picture.cuda()[0].__cuda_array_interface__
    width, height = stream_width, stream_height = 320, 240
    assert luma["stream"] == 2 and luma["version"] == 3 and luma["typestr"] == "|u2"
    assert luma["shape"] == [height, width, 1] and luma["strides"] == [width, 1, 1]  # samples, not bytes
    planes = planes_of_decoded_frame(picture, "P016", stream_width, stream_height)
    assert planes.luma_pitch == 2 * width and planes.cb == luma["data"][0] + 2 * width * height


# -- item 7: DataLoader workers of a CUDA-holding process ----------------------------------------


def test_a_cuda_loader_never_forks_its_workers(monkeypatch):
    from framefeed.data import ClipDataset, ClipLoader
    from framefeed.engine.backends.devices import worker_start_method

    assert worker_start_method(torch.device("cpu"), None) is None
    assert worker_start_method(torch.device("cpu"), "fork") == "fork"
    assert worker_start_method(CUDA, None) == "forkserver"
    assert worker_start_method(CUDA, "spawn") == "spawn"
    with pytest.raises(ValueError, match="'fork' cannot be used on cuda:0"):
        worker_start_method(CUDA, "fork")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    dataset = ClipDataset([path_of("h264_bframes_long_gop.mp4")], sampler="random_indices", num_clips=1,
                          num_frames_per_clip=2)
    loader = ClipLoader(dataset, device="cuda", num_workers=2)
    assert loader._loader.multiprocessing_context.get_start_method() == "forkserver"
    with pytest.raises(ValueError, match="'fork' cannot be used"):
        ClipLoader(dataset, device="cuda", num_workers=2, multiprocessing_context="fork")
    cpu = ClipLoader(dataset, device="cpu", num_workers=2, multiprocessing_context="fork")  # no CUDA: as asked
    assert cpu._loader.multiprocessing_context.get_start_method() == "fork"


# -- item 8: CUDA IPC lifetimes -----------------------------------------------------------------


class _FakeCupy:
    """The slice of `cupy` the IPC slab uses, recording runtime calls."""

    def __init__(self):
        import types

        self.calls = []
        fake = self

        class Device:
            def __init__(self, index):
                self.index = index

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return None

        runtime = types.SimpleNamespace(
            ipcOpenMemHandle=lambda handle: fake.calls.append(("open", handle)) or 0xD000,
            ipcCloseMemHandle=lambda pointer: fake.calls.append(("close", pointer)),
            free=lambda pointer: fake.calls.append(("free", pointer)),
        )
        self.cuda = types.SimpleNamespace(Device=Device, runtime=runtime)


def test_a_client_unmaps_the_slab_once_and_its_finalizers_never_run_at_exit(monkeypatch):
    import sys

    from framefeed.serve._cuda_ipc import DeviceSlabView

    cupy = _FakeCupy()
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    view = DeviceSlabView({"handle": b"h" * 64, "size": 1 << 20}, CUDA)
    host = np.zeros(64, dtype=np.uint8)
    kept = []  # the view object lives as long as the tensor's storage would
    monkeypatch.setattr(torch, "as_tensor", lambda memory, device=None: kept.append(memory) or torch.from_numpy(host))
    freed = []
    tensor, finalizer = view.lease_tensor(0, 64, [64], [1], lambda: freed.append(1))
    assert finalizer.alive and finalizer.atexit is False  # no CUDA work from a finalizer at interpreter exit
    view.close()
    view.close()
    assert cupy.calls == [("open", b"h" * 64), ("close", 0xD000)]
    with pytest.raises(RuntimeError, match="closed"):
        view.lease_tensor(0, 64, [64], [1], lambda: None)


def test_the_server_frees_its_slab_only_when_no_client_may_map_it(monkeypatch):
    import sys

    from framefeed.serve._cuda_ipc import DeviceSlab
    from framefeed.serve._service import DecodeService, DeviceState

    cupy = _FakeCupy()
    monkeypatch.setitem(sys.modules, "cupy", cupy)

    def slab():
        made = object.__new__(DeviceSlab)
        made.device, made._pointer, made.closed, made.tensor = CUDA, 0xBEEF, False, None
        made._copy = type("Copy", (), {"finish": lambda self: None, "close": lambda self: None})()
        return made

    kept, freed = slab(), slab()
    kept.close(clients_may_map=True)
    freed.close(clients_may_map=False)
    freed.close()
    assert cupy.calls == [("free", 0xBEEF)]
    closed_with = []
    state = object.__new__(DeviceState)
    state.close = lambda clients_may_map=False: closed_with.append(clients_may_map)
    service = object.__new__(DecodeService)
    service.devices, service.probe = {"cuda:0": state}, None
    service.book = type("Book", (), {"sessions": {"token": object()}})()
    service.close()
    service.book.sessions = {}
    service.close()
    assert closed_with == [True, False]


# -- item 9: the Ray GPU actor's copies to the host ------------------------------------------------


def test_ray_actor_threads_copy_to_pinned_memory_each_on_its_own_stream():
    from framefeed.ray._decode import HostCopies

    calls = RecordingCudaCalls()
    copies = HostCopies(calls, pinned=False)  # pinned memory needs CUDA; the stream work is what is checked
    data = torch.arange(3 * 4 * 5, dtype=torch.uint8).reshape(3, 4, 5)
    results = [None] * 16

    def copy(index):
        results[index] = copies.copy(data)

    threads = [threading.Thread(target=copy, args=(i,), name=f"call-{i}") for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(torch.equal(result, data) for result in results)
    scopes = [entry for entry in calls.log if entry[0] == "scope"]
    assert len({handle for _, handle, _ in scopes}) == 16 and not {h for _, h, _ in scopes} & set(DEFAULTS)
    waits = [entry for entry in calls.log if entry[0] == "synchronize"]
    assert {name for *_, name in waits} == {f"call-{i}" for i in range(16)}  # each thread waits for its own copy
    copies.close()
    assert calls.streams_destroyed == 16 and calls.violations == []
