"""Frame / FrameBatch semantics, dimension orders, threads, get_all_frames,
and the `framefeed info` command."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import corpus
from framefeed import Frame, FrameBatch, VideoDecoder
from framefeed.decoders import CpuFallbackStatus, VideoStreamMetadata

H264 = corpus.BY_NAME["h264_bframes_long_gop.mp4"]


def test_public_names_match_torchcodec_modules():
    import framefeed.decoders as decoders

    assert {"VideoDecoder", "VideoStreamMetadata", "CpuFallbackStatus"} <= set(dir(decoders))
    assert VideoStreamMetadata is decoders.VideoStreamMetadata


def test_frame_dataclass():
    data = torch.zeros(3, 4, 5, dtype=torch.uint8)
    frame = Frame(data, 1, 0.5)
    image, pts, duration = frame
    assert image is data and pts == 1.0 and duration == 0.5
    assert isinstance(frame.pts_seconds, float)
    assert "data (shape): torch.Size([3, 4, 5])" in repr(frame)
    with pytest.raises(ValueError, match="data must be 3-dimensional"):
        Frame(torch.zeros(4, 5), 0.0, 0.0)


def test_frame_batch_indexing_and_validation():
    data = torch.arange(4 * 3 * 2 * 2, dtype=torch.uint8).reshape(4, 3, 2, 2)
    pts = torch.tensor([0.0, 0.1, 0.2, 0.3], dtype=torch.float64)
    batch = FrameBatch(data, pts, pts + 0.1)
    assert len(batch) == 4
    for key, expected in [(slice(1, 3), [0.1, 0.2]), (torch.tensor([True, False, False, True]), [0.0, 0.3]),
                          (torch.tensor([3, 0]), [0.3, 0.0]), ([2], [0.2])]:
        sub = batch[key]
        assert isinstance(sub, FrameBatch)
        assert sub.pts_seconds.tolist() == expected
        assert sub.data.shape[0] == len(expected)
    single = batch[1]
    assert isinstance(single, FrameBatch) and single.data.shape == (3, 2, 2)
    assert [b.pts_seconds.item() for b in batch] == pts.tolist()
    assert "data (shape): torch.Size([4, 3, 2, 2])" in repr(batch)
    assert "pts_seconds: tensor(" in repr(batch)
    with pytest.raises(ValueError, match="leading dimensions"):
        FrameBatch(data, pts[:3], pts[:3])
    clips = FrameBatch(torch.zeros(2, 3, 3, 4, 4, dtype=torch.uint8), torch.zeros(2, 3), torch.zeros(2, 3))
    assert clips[0].data.shape == (3, 3, 4, 4)


def test_dimension_orders_hold_the_same_pixels():
    nchw = VideoDecoder(H264.path)
    nhwc = VideoDecoder(H264.path, dimension_order="NHWC")
    assert nchw[5].shape == (3, 240, 320)
    assert nhwc[5].shape == (240, 320, 3)
    assert torch.equal(nchw[5].permute(1, 2, 0), nhwc[5])
    batch_a = nchw.get_frames_at([1, 7])
    batch_b = nhwc.get_frames_at([1, 7])
    assert batch_a.data.shape == (2, 3, 240, 320)
    assert torch.equal(batch_a.data.permute(0, 2, 3, 1), batch_b.data)
    assert batch_a.pts_seconds.dtype == torch.float64 and batch_a.pts_seconds.device.type == "cpu"


@pytest.mark.parametrize("threads", [0, 2])
def test_thread_counts_decode_identical_frames(threads):
    single = VideoDecoder(H264.path)
    threaded = VideoDecoder(H264.path, num_ffmpeg_threads=threads)
    picks = [0, 33, 99, 150, 199]
    assert torch.equal(single.get_frames_at(picks).data, threaded.get_frames_at(picks).data)
    assert sum(1 for _ in threaded) == len(threaded)


def test_get_all_frames_in_both_modes():
    reference = corpus.reference_frames(H264.name)
    for mode in ("exact", "approximate"):
        everything = VideoDecoder(H264.path, seek_mode=mode).get_all_frames()
        assert everything.pts_seconds.tolist() == [r.seconds for r in reference]
        assert everything.data.shape == (len(reference), 3, 240, 320)


def test_cpu_fallback_status_on_cpu():
    status = VideoDecoder(H264.path).cpu_fallback
    assert isinstance(status, CpuFallbackStatus)
    assert not status
    assert "No fallback required" in str(status)
    fallback = CpuFallbackStatus("cuda:0", True, "odd frame size 321x241")
    assert fallback and "odd frame size" in str(fallback)


def test_played_in_range_with_fps_resamples():
    decoder = VideoDecoder(H264.path)
    reference = corpus.reference_frames(H264.name)
    batch = decoder.get_frames_played_in_range(0.0, 1.0, fps=10)
    assert len(batch) == 10
    # As torchcodec: sample k is the frame displayed at k / 10 s, reported with
    # that time as pts and 1 / fps as duration (frames last 0.04 s here).
    shown = [max(i for i, r in enumerate(reference) if r.seconds <= k * 0.1) for k in range(10)]
    for sample, index in enumerate(shown):
        assert torch.equal(batch.data[sample].permute(1, 2, 0), torch.from_numpy(reference[index].rgb))
    assert batch.pts_seconds.tolist() == [k * 0.1 for k in range(10)]
    assert batch.duration_seconds.tolist() == [0.1] * 10


def test_info_command_prints_metadata(tmp_path):
    result = subprocess.run([sys.executable, "-m", "framefeed.cli", "info", str(H264.path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "codec: h264" in result.stdout
    assert "num_frames: 200" in result.stdout
    assert "decoded frames [0, 100, 199]" in result.stdout
    missing = subprocess.run([sys.executable, "-m", "framefeed.cli", "info", str(tmp_path / "x.mp4")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2
    assert "no such video file" in missing.stderr


def test_close_releases_the_file_and_refuses_further_calls():
    import gc
    import os

    def open_files() -> int:
        return len(os.listdir("/proc/self/fd"))

    with VideoDecoder(H264.path) as decoder:
        assert decoder[1].shape == (3, 240, 320)
    with pytest.raises(RuntimeError, match="closed"):
        decoder[2]
    gc.disable()  # dropped decoders must release their file without the collector
    try:
        before = open_files()
        for _ in range(20):
            dropped = VideoDecoder(H264.path)
            dropped[0]
            del dropped
        assert open_files() == before
    finally:
        gc.enable()
