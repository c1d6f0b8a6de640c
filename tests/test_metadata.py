"""VideoStreamMetadata in both seek modes, checked against the corpus recipes
and PyAV's view of each file."""

from __future__ import annotations

import dataclasses
import warnings
from fractions import Fraction

import av
import numpy as np
import pytest

import corpus
from framefeed import VideoDecoder, VideoStreamMetadata
from framefeed.engine.demux.frame_index import build_frame_index

IDS = [f.name for f in corpus.FILES]
HEADER_FIELDS = [
    "duration_seconds_from_header", "begin_stream_seconds_from_header", "num_frames_from_header",
    "average_fps_from_header", "bit_rate", "codec", "width", "height", "rotation", "pixel_format",
    "color_space", "color_primaries", "color_transfer_characteristic", "pixel_aspect_ratio", "stream_index",
]


@pytest.mark.parametrize("entry", corpus.FILES, ids=IDS)
def test_exact_metadata_describes_the_content(entry):
    reference = corpus.reference_frames(entry.name)
    meta = VideoDecoder(entry.path).metadata
    assert isinstance(meta, VideoStreamMetadata)
    assert meta.codec == entry.codec
    assert meta.stream_index == entry.video_stream_index
    assert meta.num_frames == meta.num_frames_from_content == len(reference)
    assert meta.begin_stream_seconds == meta.begin_stream_seconds_from_content == reference[0].seconds
    last_gap = reference[-1].seconds - reference[-2].seconds
    assert meta.end_stream_seconds == meta.end_stream_seconds_from_content
    # The last frame lasts one frame interval (its packet duration, or the
    # typical gap when packets carry none), so it is reachable by time.
    assert meta.end_stream_seconds > reference[-1].seconds
    if not entry.variable_frame_rate:
        assert meta.end_stream_seconds - reference[-1].seconds == pytest.approx(last_gap, rel=1e-6)
    span = meta.end_stream_seconds - meta.begin_stream_seconds
    assert meta.duration_seconds == pytest.approx(span)
    assert meta.average_fps == pytest.approx(len(reference) / span)
    height, width = reference[0].rgb.shape[:2]
    assert (meta.width, meta.height) == (width, height)  # after rotation
    assert meta.rotation == entry.rotation


def _ticking(stream) -> bool:
    """FFmpeg reports the time base's tick as the rate: the header gives none."""
    return stream.base_rate == 1 / stream.time_base and stream.base_rate > 240


@pytest.mark.parametrize("entry", corpus.FILES, ids=IDS)
def test_approximate_metadata_comes_from_the_header_only(entry):
    exact = VideoDecoder(entry.path).metadata
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        approx = VideoDecoder(entry.path, seek_mode="approximate").metadata
    with av.open(str(entry.path)) as container:
        if _ticking(container.streams[entry.video_stream_index]):
            return  # no rate in the header: see the next test
    assert not [w for w in caught if "packets' timing" in str(w.message)]
    for name in HEADER_FIELDS:
        assert getattr(approx, name) == getattr(exact, name), name
    assert approx.num_frames_from_content is None
    assert approx.begin_stream_seconds_from_content is None
    assert approx.end_stream_seconds_from_content is None
    with av.open(str(entry.path)) as container:
        stream = container.streams[entry.video_stream_index]
        header_frames = stream.frames or None
        assert approx.num_frames_from_header == header_frames
        assert approx.average_fps_from_header == pytest.approx(float(stream.base_rate))
        if stream.duration is not None:
            assert approx.duration_seconds == pytest.approx(float(stream.duration * stream.time_base))
        else:
            assert approx.duration_seconds == pytest.approx(container.duration / 1e6)
    held = round(approx.average_fps * approx.duration_seconds)
    if header_frames is None:
        assert approx.num_frames == int(approx.average_fps * approx.duration_seconds)
    elif held < header_frames:  # MP4 counts the samples an edit list discards: the duration's count
        assert entry.has_discard_packets and approx.num_frames == held == exact.num_frames
    else:
        assert approx.num_frames == header_frames
    assert approx.begin_stream_seconds == (approx.begin_stream_seconds_from_header or 0.0)
    assert approx.average_fps == approx.average_fps_from_header


@pytest.mark.parametrize("entry", [f for f in corpus.FILES if f.name == "vfr.mkv"], ids=["vfr.mkv"])
def test_a_header_without_a_frame_rate_gives_way_to_the_packets_timing(entry):
    """Matroska's 1 ms ticks on a variable-rate stream: FFmpeg reports 1000 fps,
    which would claim 4,040 frames for 90. Approximate mode takes the packets'
    median frame interval instead, and says so."""
    with av.open(str(entry.path)) as container:
        stream = container.streams.video[0]
        assert _ticking(stream)
        stamps = sorted(p.pts for p, _ in zip(container.demux(stream), range(32), strict=False) if p.pts is not None)
        rate = 1 / (float(np.median(np.diff(stamps))) * float(stream.time_base))
        span = container.duration / 1e6
    with pytest.warns(UserWarning, match=r"1000 fps over 4040 frames.*packets' timing \(25 fps"):
        approx = VideoDecoder(entry.path, seek_mode="approximate").metadata
    assert approx.average_fps == pytest.approx(rate)
    assert approx.num_frames == round(span * rate)
    assert approx.average_fps_from_header == 1000.0  # the header's own field is kept as it was


def test_colour_and_pixel_fields():
    full = VideoDecoder(corpus.BY_NAME["full_range_bt709.mp4"].path).metadata
    assert (full.color_space, full.pixel_format) == ("bt709", "yuvj420p")
    ten = VideoDecoder(corpus.BY_NAME["hevc_10bit.mkv"].path).metadata
    assert ten.pixel_format == "yuv420p10le"
    plain = VideoDecoder(corpus.BY_NAME["h264_bframes_long_gop.mp4"].path).metadata
    assert plain.color_space is None  # unspecified in the stream
    assert plain.pixel_aspect_ratio in (None, Fraction(1, 1))
    assert plain.bit_rate and plain.bit_rate > 0


def test_repr_prints_one_line_per_field():
    meta = VideoDecoder(corpus.BY_NAME["vp9.webm"].path).metadata
    lines = repr(meta).strip().splitlines()
    assert lines[0] == "VideoStreamMetadata:"
    assert len(lines) == 1 + len(dataclasses.fields(meta))
    assert "  codec: vp9" in lines


@pytest.mark.parametrize("entry", [f for f in corpus.FILES if f.path.suffix in (".mp4", ".mov")],
                         ids=lambda f: f.name)
def test_sample_table_index_equals_packet_scan(entry):
    """The MP4 fast path (FFmpeg's index + composition offsets) must build
    exactly the index a scan of every packet builds."""
    decoder = VideoDecoder(entry.path)
    table = build_frame_index(decoder._demuxer)
    scan = build_frame_index(decoder._demuxer, allow_sample_table=False)
    assert table.built_from == "sample-table"
    assert scan.built_from == "packet-scan"
    for field in ("pts", "durations", "is_keyframe", "seek_points"):
        assert np.array_equal(getattr(table, field), getattr(scan, field)), field
