"""Packet preparation for NVDEC, checked against FFmpeg's own filters and
muxers, and the NVDEC backend's packet feeding, checked with a CPU stand-in
decoder (FFmpeg opened without extradata). No GPU needed. (The whole pipeline
on the emulated NVDEC runs over every corpus file in test_corpus_frames.py.)"""

from __future__ import annotations

import io
from types import SimpleNamespace

import av
import numpy as np
import pytest
import torch
from gpu_fixtures import (
    FakePacketData,
    demuxed_packets,
    hand_built_nvdec,
    host_converter,
)

from corpus import BY_NAME
from framefeed.engine.backends.gpu_decode.backend import NO_PTS, NvdecBackend
from framefeed.engine.backends.gpu_decode.bitstream import (
    START_CODE,
    PacketPreparer,
    avcc_parameter_sets,
    hvcc_parameter_sets,
    parameter_sets,
)
from framefeed.engine.backends.gpu_decode.capabilities import stream_reason, stream_traits

H264_RECORD_FILES = ["h264_bframes_long_gop.mp4", "h264_open_gop.mp4", "discard_edit_list.mp4", "h264_bframes.mkv"]
HEVC_FILES = ["hevc_cra.mp4", "hevc_10bit.mkv", "hevc_444.mp4"]


@pytest.fixture(scope="session")
def corpus(corpus_files):
    return corpus_files


def nal_units(annexb: bytes) -> list[bytes]:
    """NAL units of an Annex-B byte string (split on 3-byte start codes)."""
    parts = annexb.split(b"\x00\x00\x01")
    return [part.rstrip(b"\x00") for part in parts[1:] if part]


def h264_types(annexb: bytes) -> list[int]:
    return [unit[0] & 0x1F for unit in nal_units(annexb)]


def hevc_types(annexb: bytes) -> list[int]:
    return [(unit[0] >> 1) & 0x3F for unit in nal_units(annexb)]


def stream_of(container):
    return container.streams.video[0]


def filtered_by_ffmpeg(path, filter_name):
    """(packet, filtered bytes) for every packet, through a fresh PyAV filter."""
    with av.open(str(path)) as container:
        stream = stream_of(container)
        bsf = av.bitstream.BitStreamFilterContext(filter_name, in_stream=stream)
        out = []
        for packet in container.demux(stream):
            if packet.size:
                key = packet.is_keyframe
                out.append((key, b"".join(bytes(p) for p in bsf.filter(packet))))
        return out


def prepared_stream(path):
    """Every packet of the file through one PacketPreparer."""
    with av.open(str(path)) as container:
        stream = stream_of(container)
        preparer = PacketPreparer(stream)
        prepared = []
        for packet in container.demux(stream):
            if packet.size:
                prepared += [(p, p.to_bytes()) for p in preparer.prepare(packet)]
        return preparer.parameter_sets, prepared


def raw_elementary_stream(path, muxer):
    """The file remuxed by FFmpeg's raw `h264`/`hevc` muxer, which converts
    to Annex-B by itself (an independent path to the same bytes)."""
    buffer = io.BytesIO()
    with av.open(str(path)) as source, av.open(buffer, "w", format=muxer) as sink:
        stream = stream_of(source)
        out_stream = sink.add_stream_from_template(stream)
        for packet in source.demux(stream):
            if packet.size:
                packet.stream = out_stream
                sink.mux(packet)
    return buffer.getvalue()


# -- parameter sets -------------------------------------------------------------


@pytest.mark.parametrize("name", H264_RECORD_FILES)
def test_avcc_parameter_sets_are_those_h264_mp4toannexb_inserts(corpus, name):
    with av.open(str(corpus[name])) as container:
        extradata = bytes(stream_of(container).codec_context.extradata)
    ours = avcc_parameter_sets(extradata)
    assert h264_types(ours) == [7, 8]  # one SPS, one PPS, start-code form
    assert ours.startswith(START_CODE)
    key, first = filtered_by_ffmpeg(corpus[name], "h264_mp4toannexb")[0]
    assert key and ours in first  # FFmpeg put exactly these bytes before the first IDR


@pytest.mark.parametrize("name", HEVC_FILES)
def test_hvcc_parameter_sets_are_the_prefix_of_every_hevc_keyframe(corpus, name):
    with av.open(str(corpus[name])) as container:
        extradata = bytes(stream_of(container).codec_context.extradata)
    ours = hvcc_parameter_sets(extradata)
    assert hevc_types(ours)[:3] == [32, 33, 34]  # VPS, SPS, PPS
    keyframes = [data for key, data in filtered_by_ffmpeg(corpus[name], "hevc_mp4toannexb") if key]
    assert len(keyframes) >= 2
    for data in keyframes:  # hevc_mp4toannexb prefixes every IRAP picture, CRA included
        assert data.startswith(ours)


def test_annexb_extradata_is_sent_unchanged(corpus):
    with av.open(str(corpus["h264_bframes.ts"])) as container:
        extradata = bytes(stream_of(container).codec_context.extradata or b"")
    sets = parameter_sets("h264", extradata)
    assert sets == extradata
    if extradata:  # FFmpeg's TS demuxer exports the in-band SPS/PPS as Annex-B extradata
        assert {7, 8} <= set(h264_types(sets))


@pytest.mark.parametrize("codec", ["vp9", "vp8", "av1"])
def test_codecs_without_parameter_sets_get_none(codec):
    assert parameter_sets(codec, b"\x81\x00\x0c\x00") == b""


@pytest.mark.parametrize("record, parse", [
    (b"\x01\x64\x00\x0a\xff\xe1\x00\x20\x67", avcc_parameter_sets),  # SPS size beyond the record
    (b"\x02" + bytes(10), avcc_parameter_sets),  # wrong version
    (b"\x01" + bytes(21) + b"\x01\x20", hvcc_parameter_sets),  # one array announced, header cut short
    (b"\x01" + bytes(21) + b"\x01\x01\x00\x01\x00\x02\x00\x00", hvcc_parameter_sets),  # NAL type 1 in hvcC
])
def test_malformed_records_are_rejected(record, parse):
    with pytest.raises(ValueError):
        parse(record)


# -- prepared packets -------------------------------------------------------------


@pytest.mark.parametrize("name, muxer", [("h264_bframes_long_gop.mp4", "h264"), ("h264_open_gop.mp4", "h264"),
                                         ("h264_bframes.mkv", "h264"), ("hevc_cra.mp4", "hevc")])
def test_prepared_packets_equal_ffmpeg_raw_elementary_stream(corpus, name, muxer):
    sets, prepared = prepared_stream(corpus[name])
    first = prepared[0][1]
    assert first.startswith(sets)  # parameter sets go out with the first packet
    ours = first[len(sets):] + b"".join(data for _, data in prepared[1:])
    assert ours == raw_elementary_stream(corpus[name], muxer)


@pytest.mark.parametrize("name", ["h264_bframes_long_gop.mp4", "discard_edit_list.mp4", "h264_bframes.ts",
                                  "hevc_cra.mp4", "vp9.webm", "vp8.webm", "av1.mkv", "mpeg2.ts"])
def test_timestamps_and_flags_pass_through(corpus, name):
    reference = demuxed_packets(corpus[name])
    _, prepared = prepared_stream(corpus[name])
    assert len(prepared) == len(reference)
    for (ours, _), theirs in zip(prepared, reference, strict=True):
        assert (ours.pts, ours.dts, ours.is_keyframe, ours.is_discard) == (
            theirs.pts, theirs.dts, bool(theirs.is_keyframe), bool(theirs.is_discard))
        assert ours.duration == (theirs.duration or None)
    if BY_NAME[name].has_discard_packets:
        assert any(p.is_discard for p, _ in prepared)


@pytest.mark.parametrize("name", ["vp9.webm", "av1.mkv"])
def test_unfiltered_codecs_pass_packet_bytes_unchanged(corpus, name):
    reference = [bytes(p) for p in demuxed_packets(corpus[name])]
    _, prepared = prepared_stream(corpus[name])
    assert [data for _, data in prepared] == reference


def test_parameter_sets_go_out_again_only_after_reset(corpus):
    with av.open(str(corpus["h264_bframes_long_gop.mp4"])) as container:
        stream = stream_of(container)
        preparer = PacketPreparer(stream)
        packets = [p for p in container.demux(stream) if p.size]
        sets = preparer.parameter_sets
        outputs = [preparer.prepare(p)[0].to_bytes() for p in packets[:3]]
        preparer.reset()
        after_reset = preparer.prepare(packets[3])[0].to_bytes()
        next_one = preparer.prepare(packets[4])[0].to_bytes()
    assert outputs[0].startswith(sets)
    assert not outputs[1].startswith(sets) and not outputs[2].startswith(sets)
    assert after_reset.startswith(sets) and not next_one.startswith(sets)


def _decode_from_second_keyframe(path, with_parameter_sets):
    """Seek to the second keyframe, feed prepared packets to a decoder that
    never saw the extradata; returns {pts: rgb} of what it decoded."""
    with av.open(str(path)) as container:
        stream = stream_of(container)
        keyframes = [p.pts for p in container.demux(stream) if p.size and p.is_keyframe]
        container.seek(keyframes[1], stream=stream, backward=True, any_frame=False)
        preparer = PacketPreparer(stream)
        skip = 0 if with_parameter_sets else len(preparer.parameter_sets)
        decoder = av.CodecContext.create(stream.codec.name, "r")
        decoded = {}
        for packet in container.demux(stream):
            for prepared in preparer.prepare(packet) if packet.size else []:
                data = prepared.to_bytes()
                if data.startswith(preparer.parameter_sets) and skip:
                    data = data[skip:]
                av_packet = av.Packet(data)
                av_packet.pts = prepared.pts
                try:
                    frames = decoder.decode(av_packet)
                except av.error.InvalidDataError:
                    frames = []
                decoded.update({f.pts: f.to_ndarray(format="rgb24") for f in frames})
        decoded.update({f.pts: f.to_ndarray(format="rgb24") for f in decoder.decode(None)})
    return keyframes[1], decoded


def test_parameter_sets_make_a_recovery_point_seek_decodable(corpus):
    """Open-GOP H.264: the second keyframe is a non-IDR I-frame, in front of
    which h264_mp4toannexb inserts nothing (torchcodec issue 1502)."""
    path = corpus["h264_open_gop.mp4"]
    with av.open(str(path)) as container:
        full = {f.pts: f.to_ndarray(format="rgb24") for f in container.decode(video=0)}
    keyframe, without = _decode_from_second_keyframe(path, with_parameter_sets=False)
    assert without == {}  # the decoder cannot parse a single slice without SPS/PPS
    keyframe, decoded = _decode_from_second_keyframe(path, with_parameter_sets=True)
    later = [pts for pts in full if pts >= keyframe]
    assert sorted(decoded) == later  # every frame from the recovery point on...
    for pts in later:
        np.testing.assert_array_equal(decoded[pts], full[pts])  # ...bit-exact


# -- the backend's packet feeding, on a CPU stand-in for NVDEC ----------------------------


def emulated_backend(path, turns=0):
    """An NvdecBackend on `EmulatedNvdec` with framefeed's converter on the host stand-ins."""
    container = av.open(str(path))
    stream = stream_of(container)
    traits = stream_traits(stream)
    assert stream_reason(traits) == ""
    converter = host_converter(traits, turns)
    nvdec = hand_built_nvdec(stream.codec.name, converter)
    backend = NvdecBackend(decoder=nvdec, make_packet=FakePacketData, preparer=PacketPreparer(stream),
                           converter=converter, output_device=torch.device("cpu"))
    return container, stream, nvdec, backend


def test_backend_sends_parameter_sets_first_and_after_every_flush(corpus):
    container, stream, nvdec, backend = emulated_backend(corpus["h264_open_gop.mp4"])
    sets = PacketPreparer(stream).parameter_sets
    packets = [p for p in container.demux(stream) if p.size]
    stamps = [p.pts for p in packets]
    keys = [int(p.is_keyframe) for p in packets]
    for packet in packets[:5]:
        backend.send(packet)
    backend.reset()
    container.seek(stamps[12], stream=stream, backward=True, any_frame=False)
    resumed = [p for p in container.demux(stream) if p.size][:3]
    resumed_stamps = [p.pts for p in resumed]  # read first: the filter takes packets over
    for packet in resumed:
        backend.send(packet)
    frames = backend.drain()
    log = nvdec.log
    assert log[0][0].startswith(sets) and not any(entry[0].startswith(sets) for entry in log[1:5])
    assert log[5] is None  # reset = an end-of-stream packet (bsl 0)
    assert log[6][0].startswith(sets)  # parameter sets again after the flush
    assert log[-1] is None  # drain ends with end of stream
    assert [entry[1] for entry in log[:5]] == stamps[:5]  # pts passed through
    assert [entry[1] for entry in log[6:9]] == resumed_stamps
    assert [entry[2] for entry in log[:5]] == keys[:5]
    assert all(f.pts is not None for f in frames)
    container.close()


def test_backend_starts_feeding_at_a_keyframe_after_a_flush(corpus):
    """Packets between a seek's landing point and the next keyframe cannot
    decode; FFmpeg outputs nothing for them, so neither may the backend."""
    container, stream, nvdec, backend = emulated_backend(corpus["h264_bframes_long_gop.mp4"])
    packets = [p for p in container.demux(stream) if p.size]
    keys = [bool(p.is_keyframe) for p in packets]
    stamps = [p.pts for p in packets]
    first_key_after = keys.index(True, 5)
    backend.reset()
    produced = []
    for packet in packets[5 : first_key_after + 4]:  # land mid-GOP, as an MPEG-TS seek can
        produced += backend.send(packet)
    assert None not in nvdec.log  # nothing was decoded yet: no flush is sent
    assert [entry[1] for entry in nvdec.log] == stamps[first_key_after : first_key_after + 4]
    assert nvdec.log[0][0].startswith(PacketPreparer(stream).parameter_sets)
    container.close()


def test_backend_drops_the_frames_of_discard_packets_without_marking_them(corpus):
    """Issue 22, item 5: `PacketData.discardable` exists in PyNvVideoCodec
    2.2.4 but what its `Decode` does with it is not established (the 2.0.2
    sources ignore it; a 2.2.4 docstring says the picture is suppressed), so
    the backend leaves it False and drops discard frames itself by pts:
    FFmpeg's output either way."""
    path = corpus["discard_edit_list.mp4"]
    container, stream, nvdec, backend = emulated_backend(path)
    packets = [p for p in container.demux(stream) if p.size]
    discarded = {p.pts for p in packets if p.is_discard}
    assert discarded
    produced = []
    for packet in packets:
        produced += [f.pts for f in backend.send(packet)]
    produced += [f.pts for f in backend.drain()]
    marked = {entry[1] for entry in nvdec.log if entry is not None and entry[3]}
    assert marked == set()
    assert discarded <= {entry[1] for entry in nvdec.log if entry is not None}  # decoded (references), not shown
    with av.open(str(path)) as reference:  # FFmpeg decodes them but outputs nothing for them
        expected = [f.pts for f in reference.decode(video=0)]
    assert produced == expected
    container.close()


def test_backend_rejects_frames_used_after_the_next_decode(corpus):
    container, stream, _, backend = emulated_backend(corpus["h264_bframes_long_gop.mp4"])
    packets = iter([p for p in container.demux(stream) if p.size])
    frames = []
    while not frames:
        frames = backend.send(next(packets))
    kept = backend.retain(frames[0])
    backend.send(next(packets))
    with pytest.raises(RuntimeError, match="retained"):
        backend.write_rgb(frames[0], torch.empty(stream.height, stream.width, 3, dtype=torch.uint8))
    out = torch.empty(stream.height, stream.width, 3, dtype=torch.uint8)
    backend.write_rgb(kept, out)  # the retained copy survives the overwrite
    assert int(out.float().std()) > 10
    container.close()


def test_frames_without_timestamps_report_none():
    class Picture:
        def getPTS(self):  # noqa: N802
            return NO_PTS

    class Decoder:
        def Decode(self, packet):  # noqa: N802
            return [Picture()] if packet.bsl else []

    class Preparer:
        def prepare(self, packet):
            from framefeed.engine.backends.gpu_decode.bitstream import PreparedPacket

            return [PreparedPacket(b"x", 1, 1, None, None, None, True, False)]

        def reset(self):
            pass

    backend = NvdecBackend(decoder=Decoder(), make_packet=FakePacketData, preparer=Preparer(),
                           converter=None, output_device=torch.device("cpu"))
    (frame,) = backend.send(SimpleNamespace(is_keyframe=True))
    assert backend.pts_of(frame) is None
