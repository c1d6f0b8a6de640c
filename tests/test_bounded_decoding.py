"""Decoding work per request is bounded on damaged input: a frame the
decoder never produces costs about one decode of its keyframe interval, not
a retry seek per earlier keyframe (issue 16). Work is counted (seeks, frames
decoded), never timed."""

from __future__ import annotations

import warnings

import av
import pytest

from framefeed import VideoDecoder
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
