"""Times derived from frame rates are exact: metadata is computed from integer
timestamps and rational rates and rounded to float once, so a 25 fps,
345-frame stream says `average_fps == 25.0` and `duration_seconds == 13.8`,
and time-based samplers whose default spacing is `1 / average_fps` land on
the frames torchcodec returns.

The files are generated here (a few seconds of 64x48 H.264) in MP4, Matroska
and QuickTime at 25, 30 and 30000/1001 fps; expected values are computed from
the encoding parameters with `fractions.Fraction`, and compared with
torchcodec's metadata when torchcodec is importable."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from framefeed.decoders import VideoDecoder
from framefeed.samplers import clips_at_random_timestamps, clips_at_regular_timestamps

RATES = {"25": (Fraction(25), 345), "30": (Fraction(30), 300), "29.97": (Fraction(30000, 1001), 300)}
CONTAINERS = ["mp4", "mkv", "mov"]
CASES = [(rate, container) for rate in RATES for container in CONTAINERS]


def _encode(path: Path, rate: Fraction, frames: int) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate, options={"x264-params": "keyint=25:bframes=2"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index in range(frames):
            picture = np.full((48, 64, 3), (index * 7) % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[tuple[str, str], Path]:
    folder = tmp_path_factory.mktemp("exact-times")
    paths = {}
    for rate_name, container in CASES:
        rate, frames = RATES[rate_name]
        path = folder / f"rate_{rate_name}_{frames}.{container}"
        _encode(path, rate, frames)
        paths[(rate_name, container)] = path
    return paths


def _torchcodec_decoders():
    try:
        import torchcodec.decoders as decoders
    except Exception as error:  # noqa: BLE001 - any import failure means "not available here"
        pytest.skip(f"torchcodec not importable: {error}")
    return decoders


@pytest.mark.parametrize("seek_mode", ["exact", "approximate"])
@pytest.mark.parametrize("rate_name, container", CASES)
def test_metadata_times_are_the_exact_rationals_rounded_once(videos, rate_name, container, seek_mode):
    rate, frames = RATES[rate_name]
    meta = VideoDecoder(str(videos[(rate_name, container)]), seek_mode=seek_mode).metadata
    duration = frames / rate
    assert meta.num_frames == frames
    assert meta.begin_stream_seconds == 0.0
    assert meta.average_fps == float(rate)
    assert meta.duration_seconds == float(duration)
    assert meta.end_stream_seconds == float(duration)
    if rate_name == "25":  # the values the issue names, spelt out
        assert (meta.average_fps, meta.duration_seconds) == (25.0, 13.8)


@pytest.mark.parametrize("seek_mode", ["exact", "approximate"])
@pytest.mark.parametrize("rate_name, container", CASES)
def test_metadata_times_equal_torchcodecs(videos, rate_name, container, seek_mode):
    decoders = _torchcodec_decoders()
    path = str(videos[(rate_name, container)])
    ours = VideoDecoder(path, seek_mode=seek_mode).metadata
    theirs = decoders.VideoDecoder(path, seek_mode=seek_mode).metadata
    for name in ("average_fps", "duration_seconds", "begin_stream_seconds", "end_stream_seconds", "num_frames"):
        assert getattr(ours, name) == getattr(theirs, name), name


@pytest.mark.parametrize("seek_mode", ["exact", "approximate"])
def test_regular_timestamps_default_spacing_lands_on_the_next_frames(videos, seek_mode):
    """The trap: with average_fps 25.000000000000004 the default spacing fell
    just short of 0.04 and the first clip repeated frame 0 ([0.0, 0.0, 0.04])."""
    decoder = VideoDecoder(str(videos[("25", "mp4")]), seek_mode=seek_mode)
    clips = clips_at_regular_timestamps(decoder, seconds_between_clip_starts=1.5, num_frames_per_clip=3)
    assert clips.pts_seconds[0].tolist() == [0.0, 0.04, 0.08]
    # Starts 0, 1.5, ... 13.5 (the last start < 13.8 - 2 * 0.04); each sampling
    # time start + k / 25 shows frame floor(25 * time), at pts frame / 25.
    expected = [[float(Fraction(int(25 * (Fraction(3, 2) * clip + Fraction(k, 25))), 25)) for k in range(3)]
                for clip in range(10)]
    assert clips.pts_seconds.tolist() == expected


@pytest.mark.parametrize("seek_mode", ["exact", "approximate"])
@pytest.mark.parametrize("rate_name, container", CASES)
def test_time_samplers_with_default_spacing_equal_torchcodecs(videos, rate_name, container, seek_mode):
    """Both seek modes against torchcodec's exact mode, which returns the
    frames displayed at the sampling times. (torchcodec's approximate mode
    maps a time to an index through the frame rate, so on Matroska's
    millisecond timestamps it can return the next frame; framefeed's
    approximate mode finds the frame actually displayed.)"""
    decoders = _torchcodec_decoders()
    samplers = pytest.importorskip("torchcodec.samplers")
    path = str(videos[(rate_name, container)])
    ours, theirs = VideoDecoder(path, seek_mode=seek_mode), decoders.VideoDecoder(path, seek_mode="exact")
    for ours_sampler, their_sampler, kwargs in [
        (clips_at_regular_timestamps, samplers.clips_at_regular_timestamps,
         {"seconds_between_clip_starts": 1.5, "num_frames_per_clip": 3}),
        (clips_at_random_timestamps, samplers.clips_at_random_timestamps, {"num_clips": 6, "num_frames_per_clip": 4}),
    ]:
        torch.manual_seed(7)
        mine = ours_sampler(ours, **kwargs)
        torch.manual_seed(7)
        reference = their_sampler(theirs, **kwargs)
        assert torch.equal(mine.pts_seconds, reference.pts_seconds.to(mine.pts_seconds.dtype)), ours_sampler.__name__
        assert torch.equal(mine.data, reference.data), ours_sampler.__name__


@pytest.mark.parametrize("rate_name", list(RATES))
def test_approximate_index_times_sit_mid_frame(videos, rate_name):
    """Approximate mode maps index i to `begin + (i + 1/2) / rate`, computed
    exactly: every frame of a constant-rate file is found by index."""
    rate, frames = RATES[rate_name]
    path = str(videos[(rate_name, "mp4")])
    exact, approximate = VideoDecoder(path), VideoDecoder(path, seek_mode="approximate")
    indices = [0, 1, frames // 2, frames - 2, frames - 1]
    assert torch.equal(approximate.get_frames_at(indices).pts_seconds, exact.get_frames_at(indices).pts_seconds)
    assert approximate._timeline.index_to_seconds(frames - 1) == float((frames - Fraction(1, 2)) / rate)
