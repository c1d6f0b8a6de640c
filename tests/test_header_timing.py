"""Approximate mode on a header whose frame timing contradicts its packets
(`framefeed.engine.demux.header_timing`): the grid is checked against the
first packets' timestamps at open. Where the packets' timing is usable,
indices follow it with a warning (and return the frames exact mode returns);
where it is not, opening raises `VideoOpenError` naming the contradiction and
suggesting exact mode. Never frame 0 for every index, and iterating costs one
pass, not a seek per frame.

The edits are the fuzz harness's own (`framefeed.testing.fuzz_inputs`): an
MP4 edit list whose segment lasts one tick, a media timescale of 0xFFFFFFFF,
and Matroska's DefaultDuration set to 1 ns or half a second.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import corpus
from framefeed import VideoDecoder
from framefeed.errors import VideoOpenError
from framefeed.testing.fuzz_inputs import set_ebml_uint, set_edit_list_duration, set_timescale

MP4 = "h264_bframes_long_gop.mp4"
MKV = "h264_bframes.mkv"
DEFAULT_DURATION = b"\x23\xe3\x83"


def _bytes(name: str) -> bytes:
    return corpus.BY_NAME[name].path.read_bytes()


@pytest.mark.parametrize("edit", ["edit list of one tick", "timescale 0xFFFFFFFF"])
def test_an_mp4_header_that_hides_its_frames_is_refused_naming_why(edit):
    data = _bytes(MP4)
    data = set_edit_list_duration(data, 1) if edit.startswith("edit") else set_timescale(data, 0xFFFFFFFF)
    with pytest.raises(VideoOpenError, match=r"discards \d+ of its first \d+ packets.*seek_mode='exact'"):
        VideoDecoder(data, seek_mode="approximate")
    # Exact mode reads every packet and agrees with FFmpeg: the edit shows one frame.
    assert len(VideoDecoder(data, seek_mode="exact")) == 1


def test_an_mp4_timescale_without_an_edit_list_agrees_with_its_packets(tmp_path):
    """No edit list: FFmpeg refuses the timescale and reads the track in whole
    seconds, header and packets alike (a frame every 512 s). Odd, but not a
    contradiction: approximate mode returns what exact mode returns."""
    import av

    source = corpus.BY_NAME[MP4].path
    plain = tmp_path / "no_edit_list.mp4"
    with av.open(str(source)) as src, av.open(str(plain), "w", options={"use_editlist": "0"}) as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.size:
                packet.stream = stream
                dst.mux(packet)
    data = set_timescale(plain.read_bytes(), 0xFFFFFFFF)
    assert b"elst" not in data
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        approximate = VideoDecoder(data, seek_mode="approximate")
    exact = VideoDecoder(data, seek_mode="exact")
    some = [0, 1, 50, 199]
    got, expected = approximate.get_frames_at(some), exact.get_frames_at(some)
    assert got.pts_seconds.tolist() == expected.pts_seconds.tolist()
    assert len(set(got.pts_seconds.tolist())) == len(some)
    assert torch.equal(got.data, expected.data)


@pytest.mark.parametrize("nanoseconds", [1, 500_000_000])
def test_a_matroska_default_duration_edit_gives_way_to_the_packets(nanoseconds):
    data = set_ebml_uint(_bytes(MKV), DEFAULT_DURATION, nanoseconds)
    exact = VideoDecoder(data, seek_mode="exact")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        approximate = VideoDecoder(data, seek_mode="approximate")
        approximate[0]
    messages = [str(w.message) for w in caught]
    assert any("packets' timing (25 fps from 0 s, 200 frames)" in m for m in messages), messages
    assert not any("estimates" in m for m in messages)  # the packets show a constant rate
    assert len(approximate) == len(exact) == 200
    every = list(range(len(exact)))
    got, expected = approximate.get_frames_at(every), exact.get_frames_at(every)
    assert got.pts_seconds.tolist() == expected.pts_seconds.tolist()
    assert torch.equal(got.data, expected.data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        walker = VideoDecoder(data, seek_mode="approximate")
    frames = sum(1 for _ in walker)
    assert frames == 200
    assert walker._session.stats.seeks <= 2  # one forward pass, not a seek per frame


def test_intact_headers_open_without_reading_more_than_the_sample():
    """The check costs no warning and no change on the corpus's intact files."""
    for entry in corpus.FILES:
        if entry.name == "vfr.mkv":
            continue  # its header gives no frame rate: test_metadata covers it
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            try:
                decoder = VideoDecoder(entry.path, seek_mode="approximate")
            except UserWarning as warning:
                assert "estimates" in str(warning), (entry.name, warning)
                continue
        assert decoder.metadata.average_fps == decoder.metadata.average_fps_from_header, entry.name
