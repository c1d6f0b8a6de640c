"""Decoding work per request is bounded on damaged input: a frame the
decoder never produces costs about one decode of its keyframe interval, not
a retry seek per earlier keyframe (issue 16). Work is counted (seeks, frames
decoded), never timed."""

from __future__ import annotations

import dataclasses
import struct
import warnings

import av
import numpy as np
import pytest
from backends_under_test import open_selection

import corpus
from framefeed import VideoDecoder
from framefeed.engine.bundling import ship_request
from framefeed.engine.demux.disposable import disposable_test_for
from framefeed.engine.executor import OutputBuffer, execute_plan
from framefeed.engine.packets import BundleSource, MissingPacketsError
from framefeed.errors import DecodingError
from framefeed.samples import VideoSpec, encode_video, x265_options

GOP = 10
FRAMES = 300


@pytest.fixture(scope="module")
def damaged_hevc(tmp_path_factory):
    """HEVC in MP4, 30 keyframe intervals; one byte changed in the 6th
    packet of the 28th interval turns its slice into a reserved NAL type,
    which the decoder drops: that frame never comes out, although the
    container's index lists it."""
    path = tmp_path_factory.mktemp("damaged") / "hevc_one_byte.mp4"
    encode_video(path, VideoSpec(codec="libx265", num_frames=FRAMES, codec_options=x265_options(GOP)))
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size]
        victim = packets[27 * GOP + 5]
        position, pts = victim.pos, victim.pts
        first_nal = bytes(victim)[:6]
    data = bytearray(path.read_bytes())
    assert data[position:position + 6] == first_nal
    # Length prefix (4 bytes), then the NAL header: type 41 is reserved.
    data[position + 4] = (41 << 1) | (data[position + 4] & 0x81)
    path.write_bytes(bytes(data))
    return path, pts


def test_a_frame_the_decoder_never_produces_fails_after_one_interval(damaged_hevc):
    path, pts = damaged_hevc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        decoder = VideoDecoder(path)
        index = decoder._timeline.index
        missing = int((index.pts == pts).nonzero()[0][0])
        with pytest.raises(DecodingError, match=rf"Frame {missing} \(pts {pts}"):
            decoder.get_frame_at(missing)
    # One seek to its keyframe, at most one interval decoded (plus the reorder
    # delay); before the bound: 25 seeks and 1,476 frames decoded.
    assert decoder._session.stats.seeks == 1
    assert decoder._backend.frames_decoded <= GOP + 4
    # A clean neighbour still decodes, and the stream is usable afterwards.
    with av.open(str(path)) as container:
        truth = {f.pts: f.to_ndarray(format="rgb24", interpolation="BICUBIC")
                 for f in container.decode(video=0)}
    assert pts not in truth  # FFmpeg itself never outputs it
    good = missing - 6  # the interval's keyframe: before the damage
    frame = decoder.get_frame_at(good)
    assert (frame.data.permute(1, 2, 0).numpy() == truth[int(index.pts[good])]).all()


def test_a_time_whose_frame_never_comes_out_fails_promptly_in_approximate_mode(damaged_hevc):
    path, pts = damaged_hevc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        decoder = VideoDecoder(path, seek_mode="approximate")
        when = float(pts * decoder._timeline.time_base)
        try:
            decoder.get_frame_played_at(when)
        except DecodingError:
            pass
    # Whatever the answer (the previous frame stays displayed, or an error),
    # the work is one interval from one or two seeks, not 24.
    assert decoder._session.stats.seeks <= 2
    assert decoder._backend.frames_decoded <= 2 * GOP + 4


# -- out-of-order output: a damaged composition-offset table ---------------------------------


def _ctts_run_damaged(data: bytes) -> bytes:
    """`data` (an MP4) with the first `ctts` run count set to 0x7FFFFFFF:
    FFmpeg then gives every sample the first composition offset, so frames
    leave the decoder out of pts order (and open-GOP leading pictures look
    like trailing ones)."""
    out = bytearray(data)
    at = out.find(b"ctts")
    assert at > 0
    struct.pack_into(">I", out, at + 12, 0x7FFFFFFF)
    return bytes(out)


def _sequential(path) -> dict[int, np.ndarray]:
    with av.open(str(path)) as container:
        return {f.pts: f.to_ndarray(format="rgb24") for f in container.decode(video=0) if f.pts is not None}


@pytest.fixture(scope="module")
def reordered_damaged_hevc(damaged_hevc, tmp_path_factory):
    path = tmp_path_factory.mktemp("reordered") / "hevc_ctts_and_one_byte.mp4"
    path.write_bytes(_ctts_run_damaged(damaged_hevc[0].read_bytes()))
    return path


def test_out_of_order_output_returns_what_ffmpeg_outputs_within_two_intervals(reordered_damaged_hevc):
    """Every frame of the last intervals, one fresh decoder each: FFmpeg's
    frame when its sequential decode outputs it, else a DecodingError; either
    way at most two keyframe intervals of work (the second only when the
    output order shows the pts are wrong: a leading picture needs the keyframe
    before the one its pts points at)."""
    path = reordered_damaged_hevc
    truth = _sequential(path)
    assert len(truth) < FRAMES  # the damaged picture and those referencing it
    outcomes = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for position in range(FRAMES - 5 * GOP, FRAMES):
            decoder = VideoDecoder(path, dimension_order="NHWC")
            pts = int(decoder._timeline.index.pts[position])
            if pts in truth:
                assert np.array_equal(decoder.get_frame_at(position).data.numpy(), truth[pts]), position
            else:
                with pytest.raises(DecodingError, match=rf"Frame {position} \(pts {pts}"):
                    decoder.get_frame_at(position)
            outcomes.add((pts in truth, decoder._session.stats.seeks))
            assert decoder._session.stats.seeks <= 2, position
            assert decoder._backend.frames_decoded <= 2 * GOP + 4, position
    assert outcomes == {(True, 1), (True, 2), (False, 2)}  # leading pictures were found by the retry


def test_out_of_order_output_in_one_call_and_sequentially_is_one_pass(reordered_damaged_hevc):
    path = reordered_damaged_hevc
    truth = _sequential(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        decoder = VideoDecoder(path, dimension_order="NHWC")
        index = decoder._timeline.index
        present = [i for i in range(FRAMES) if int(index.pts[i]) in truth]
        batch = decoder.get_frames_at(present)
        for slot, position in enumerate(present):
            assert np.array_equal(batch.data[slot].numpy(), truth[int(index.pts[position])]), position
        assert decoder._backend.frames_decoded <= FRAMES and decoder._session.stats.seeks <= 2
        sequential = VideoDecoder(path, dimension_order="NHWC")
        for position in present:
            frame = sequential.get_frame_at(position)
            assert np.array_equal(frame.data.numpy(), truth[int(index.pts[position])]), position
        assert sequential._backend.frames_decoded <= FRAMES and sequential._session.stats.seeks <= 2


H264_LONG_GOP = corpus.BY_NAME["h264_bframes_long_gop.mp4"]  # keyframes at frames 0 and 100


@pytest.fixture(scope="module")
def reordered_h264(tmp_path_factory):
    path = tmp_path_factory.mktemp("reordered") / "h264_ctts.mp4"
    path.write_bytes(_ctts_run_damaged(H264_LONG_GOP.path.read_bytes()))
    return path


@pytest.mark.parametrize("position", [50, 99, 150, 199])
def test_out_of_order_output_costs_about_a_clean_decode(reordered_h264, position):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clean, damaged = VideoDecoder(H264_LONG_GOP.path), VideoDecoder(reordered_h264, dimension_order="NHWC")
        clean.get_frame_at(position)
        frame = damaged.get_frame_at(position)
    assert np.array_equal(frame.data.numpy(), _sequential(reordered_h264)[position * 512])
    assert damaged._session.stats.seeks == clean._session.stats.seeks == 1
    assert damaged._backend.frames_decoded <= clean._backend.frames_decoded + 4


def test_shipped_packets_of_out_of_order_output(reordered_h264):
    """The same executor over a bundle: all frames right; a bundle cut before
    the target's packet names its pts."""
    truth = _sequential(reordered_h264)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan, bundle = ship_request(reordered_h264, indices=list(range(200)))
        out = _execute(plan, bundle)
        for slot, (pts, rgb) in enumerate(sorted(truth.items())):
            assert out.pts_seconds[slot] == pts / 12800
            assert np.array_equal(out.frames[slot].numpy(), rgb)
        plan, bundle = ship_request(reordered_h264, indices=[150])
        assert np.array_equal(_execute(plan, bundle).frames[0].numpy(), truth[150 * 512])
        cut = len(bundle) - 3
        short = dataclasses.replace(
            bundle, payload=bundle.payload[:bundle.offsets[cut]], offsets=bundle.offsets[:cut + 1],
            pts=bundle.pts[:cut], dts=bundle.dts[:cut], durations=bundle.durations[:cut], flags=bundle.flags[:cut],
            stretches=[dataclasses.replace(bundle.stretches[-1], stop=cut)])
        with pytest.raises(MissingPacketsError, match=rf"Frame 150 \(pts {150 * 512}"):
            _execute(plan, short)


def _execute(plan, bundle) -> OutputBuffer:
    params = bundle.params
    backend = open_selection("cpu", params).backend
    out = OutputBuffer.allocate(plan.slot_count, params.height, params.width, backend.output_device)
    try:
        return execute_plan(plan, BundleSource(bundle), backend, out,
                            disposable=disposable_test_for(params.codec, params.extradata))
    finally:
        backend.close()


# -- retries that land on the same keyframe ------------------------------------------------------


def test_retries_that_land_on_the_same_keyframe_go_back_once_more(tmp_path):
    """The keyframe before the landing one is damaged, so "just before the
    keyframe" lands on it again: the next retry steps back in time (here to
    the stream's start), instead of 24 identical seeks or a wrong frame."""
    from framefeed.testing.fuzz_inputs import FuzzCase

    data, _ = FuzzCase("hevc.mkv", "burst", 1736125124).data(corpus.cache_dir() / "fuzz-seeds-v1")
    path = tmp_path / "hevc-burst.mkv"
    path.write_bytes(data)
    truth = _sequential(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        decoder = VideoDecoder(path, seek_mode="approximate", dimension_order="NHWC")
        frame = decoder.get_frame_played_at(0.5)
    assert frame.pts_seconds == 0.12 and np.array_equal(frame.data.numpy(), truth[120])
    assert decoder._session.stats.seeks <= 3
    # No more than decoding the stream from its start up to the frame after 0.5 s.
    assert decoder._backend.frames_decoded <= sum(pts <= 640 for pts in truth) + 4
