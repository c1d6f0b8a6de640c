"""Sample encoding leaves the process as it found it."""

from __future__ import annotations

import os

import av
import pytest

from framefeed.samples import VideoSpec, encode_video


def test_av1_encoding_keeps_the_threads_scheduling_policy(tmp_path):
    """SVT-AV1 run as root makes the opening thread SCHED_FIFO 99; every later
    subprocess of the test session inherited it (CI's image build starved)."""
    if "libsvtav1" not in av.codecs_available:
        pytest.skip("PyAV's FFmpeg has no libsvtav1")
    before = (os.sched_getscheduler(0), os.sched_getparam(0))
    path = encode_video(tmp_path / "av1.mkv", VideoSpec(codec="libsvtav1", width=64, height=64, num_frames=4,
                                                        codec_options={"preset": "12"}))
    assert (os.sched_getscheduler(0), os.sched_getparam(0)) == before
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name in ("libdav1d", "av1", "libaom-av1")
        assert sum(1 for _ in container.decode(video=0)) == 4
