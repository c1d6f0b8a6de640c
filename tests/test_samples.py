"""Sample encoding leaves the process as it found it."""

from __future__ import annotations

import os

import av
import pytest
import torch

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


def test_example_files_are_written_once_and_decode(tmp_path, monkeypatch):
    """`python -m framefeed.samples DIR`: the README's example files; a broken one on purpose."""
    import subprocess
    import sys

    from framefeed import VideoDecoder, samples
    from framefeed.errors import VideoOpenError

    monkeypatch.setattr(samples, "EXAMPLE_CLIPS", 2)  # the README's folder holds 8; two show the naming
    paths = samples.write_examples(tmp_path / "samples")
    names = [p.relative_to(tmp_path / "samples").as_posix() for p in paths]
    assert names == ["h264_bframes.mp4", "hevc_cra.mp4", "vp9.webm", "clips/clip_00.mp4", "clips/clip_01.mp4",
                     "broken.mp4"]
    expected = {"h264_bframes.mp4": (200, 240, 320, "h264"), "hevc_cra.mp4": (90, 240, 320, "hevc"),
                "vp9.webm": (60, 240, 320, "vp9"), "clips/clip_00.mp4": (100, 360, 640, "h264")}
    for name, (frames, height, width, codec) in expected.items():
        metadata = VideoDecoder(tmp_path / "samples" / name).metadata
        assert (metadata.num_frames, metadata.height, metadata.width, metadata.codec) == (frames, height, width, codec)
    with pytest.raises(VideoOpenError):
        VideoDecoder(tmp_path / "samples" / "broken.mp4")
    # Different content per clip (seeded), the same on every run.
    clips = [VideoDecoder(tmp_path / "samples" / f"clips/clip_0{i}.mp4")[10] for i in range(2)]
    assert not torch.equal(clips[0], clips[1])
    before = {p: p.stat().st_mtime_ns for p in paths}
    assert samples.write_examples(tmp_path / "samples") == paths  # kept, not written again
    assert {p: p.stat().st_mtime_ns for p in paths} == before

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = subprocess.run([sys.executable, "-m", "framefeed.samples", str(blocker / "samples")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"python -m framefeed.samples: error: cannot write {blocker / 'samples'}: Not a directory"]
