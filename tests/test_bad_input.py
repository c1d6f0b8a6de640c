"""Bad input: each case a clear Python exception naming the bad value, never
a crash, a hang or a silently wrong frame."""

from __future__ import annotations

import io
import os
import warnings

import av
import numpy as np
import pytest
import torch

import corpus
from framefeed import VideoDecoder
from framefeed.errors import DecodingError, FrameTimeOutOfRangeError, VideoOpenError
from framefeed.samples import VideoSpec, encode_video, x264_options

H264 = corpus.BY_NAME["h264_bframes_long_gop.mp4"]


@pytest.fixture(scope="module")
def decoder():
    return VideoDecoder(H264.path)


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        VideoDecoder(missing)
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        VideoDecoder(str(missing))


def test_empty_file_and_empty_bytes(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoOpenError, match="empty.mp4"):
        VideoDecoder(empty)
    with pytest.raises(ValueError, match="0 bytes"):
        VideoDecoder(b"")


@pytest.mark.parametrize("seek_mode", ["exact", "approximate"])
def test_random_bytes(tmp_path, seek_mode):
    garbage = np.random.default_rng(0).integers(0, 256, 100_000, dtype=np.uint8).tobytes()
    path = tmp_path / "garbage.mp4"
    path.write_bytes(garbage)
    with pytest.raises(VideoOpenError, match="garbage.mp4") as info:
        VideoDecoder(path, seek_mode=seek_mode)
    assert isinstance(info.value, RuntimeError)  # what torchcodec users catch
    with pytest.raises(VideoOpenError, match="bytes"):
        VideoDecoder(garbage, seek_mode=seek_mode)


@pytest.mark.parametrize("seek_mode", ["exact", "approximate"])
def test_mp4_cut_in_half_with_index_at_the_end(tmp_path, seek_mode):
    data = H264.path.read_bytes()
    path = tmp_path / "half.mp4"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoOpenError, match="half.mp4"):
        VideoDecoder(path, seek_mode=seek_mode)


@pytest.fixture(scope="module")
def faststart_half(tmp_path_factory):
    """An MP4 with its index first (faststart), cut in half: it opens, but half
    of the frames its header promises are gone."""
    whole = tmp_path_factory.mktemp("faststart") / "whole.mp4"
    spec = VideoSpec(num_frames=100, codec_options=x264_options(25))
    encode_video(whole, spec)
    faststart = whole.with_name("faststart.mp4")
    with av.open(str(whole)) as src, av.open(str(faststart), "w", options={"movflags": "faststart"}) as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.size:
                packet.stream = out
                dst.mux(packet)
    data = faststart.read_bytes()
    half = faststart.with_name("faststart_half.mp4")
    half.write_bytes(data[: len(data) // 2])
    return faststart, half


def test_truncated_faststart_mp4_exact_mode_indexes_the_intact_frames(faststart_half):
    whole, half = faststart_half
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decoder = VideoDecoder(half)
    complete = VideoDecoder(whole)
    assert 0 < len(decoder) < len(complete)
    assert any("truncated" in str(w.message) for w in caught)
    with pytest.warns(UserWarning, match="could not be decoded"):  # the packet cut in half
        for i in range(len(decoder)):
            frame = decoder.get_frame_at(i)
            # Every indexed frame is intact: equal to the complete file's frame at that time.
            assert torch.equal(frame.data, complete.get_frame_played_at(frame.pts_seconds).data), i


def test_truncated_faststart_mp4_approximate_mode_refuses_missing_frames(faststart_half):
    whole, half = faststart_half
    decoder = VideoDecoder(half, seek_mode="approximate")
    complete = VideoDecoder(whole)
    assert torch.equal(decoder[0], complete[0])
    with pytest.raises(DecodingError, match="truncated"), pytest.warns(UserWarning, match="could not be decoded"):
        decoder[len(decoder) - 1]


def test_approximate_indices_past_the_cut_never_get_a_neighbouring_frame(faststart_half):
    """The header promises 200 frames; the file, cut in half, holds fewer (and,
    with B-frames, not a prefix of them). Every index gives its own frame
    (the complete file's frame at that index, pts and pixels) or an error that
    names it: never the frame before (the last one there, or a neighbour of a
    frame whose packet was cut)."""
    whole, half = faststart_half
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        decoder = VideoDecoder(half, seek_mode="approximate")
        complete = VideoDecoder(whole)
        assert len(decoder) == len(complete)
        answered, refused = [], []
        for index in range(len(decoder)):
            try:
                frame = decoder.get_frame_at(index)
            except DecodingError as error:
                assert f"Frame {index} was not produced" in str(error) or "truncated" in str(error), (index, error)
                refused.append(index)
                continue
            expected = complete.get_frame_at(index)
            assert frame.pts_seconds == expected.pts_seconds, (index, frame.pts_seconds, expected.pts_seconds)
            assert torch.equal(frame.data, expected.data), index
            answered.append(index)
    assert answered[:10] == list(range(10)) and refused[-1] == len(decoder) - 1
    assert len(answered) < len(decoder) // 2 + 10


@pytest.mark.parametrize("fraction", [0.3, 0.6])
def test_cut_webm_without_index_opens_and_decodes_what_is_there(fraction, tmp_path):
    """A Matroska file cut short has no cues: even rewinding needs care."""
    entry = corpus.BY_NAME["vp9.webm"]
    reference = corpus.reference_frames(entry.name)
    data = entry.path.read_bytes()
    cut = tmp_path / "cut.webm"
    cut.write_bytes(data[: int(len(data) * fraction)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exact = VideoDecoder(cut, dimension_order="NHWC")
        approximate = VideoDecoder(cut, seek_mode="approximate", dimension_order="NHWC")
        assert 0 < len(exact) < len(reference)
        for i in range(len(exact)):
            assert torch.equal(exact[i], torch.from_numpy(reference[i].rgb)), i
        assert torch.equal(approximate[1], torch.from_numpy(reference[1].rgb))
        with pytest.raises(DecodingError, match="truncated"):
            approximate[len(reference) - 1]


def test_file_without_video_stream(tmp_path):
    path = tmp_path / "audio.m4a"
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=48000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 48000, 0
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    with pytest.raises(VideoOpenError, match="No video stream.*audio"):
        VideoDecoder(path)


def test_stream_index_errors():
    audio_first = corpus.BY_NAME["audio_first.mp4"].path
    with pytest.raises(ValueError, match=r"stream_index 0.*audio.*\[1\]"):
        VideoDecoder(audio_first, stream_index=0)
    with pytest.raises(ValueError, match="stream_index 7.*2 streams"):
        VideoDecoder(audio_first, stream_index=7)
    with pytest.raises(TypeError, match="stream_index"):
        VideoDecoder(audio_first, stream_index="1")
    assert VideoDecoder(audio_first, stream_index=1).stream_index == 1
    assert VideoDecoder(audio_first).stream_index == 1  # best video stream, not stream 0


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        ({"seek_mode": "fast"}, ValueError, "Invalid seek mode.*fast.*exact, approximate"),
        ({"dimension_order": "CHW"}, ValueError, "Invalid dimension order.*CHW.*NCHW, NHWC"),
        ({"num_ffmpeg_threads": -1}, ValueError, "num_ffmpeg_threads.*-1"),
        ({"num_ffmpeg_threads": "2"}, TypeError, "num_ffmpeg_threads.*'2'"),
        ({"num_ffmpeg_threads": None}, TypeError, "num_ffmpeg_threads"),
        ({"device": "tpu"}, ValueError, "tpu"),
        ({"device": 3}, TypeError, "device.*int"),
    ],
)
def test_constructor_argument_errors(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        VideoDecoder(H264.path, **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(RuntimeError, match="cuda.*no usable CUDA GPU.*device='cpu'"):
        VideoDecoder(H264.path, device="cuda")


def test_index_errors(decoder):
    count = len(decoder)
    with pytest.raises(IndexError, match=rf"Invalid frame index={count}.*\[-{count}, {count}\)"):
        decoder.get_frame_at(count)
    with pytest.raises(IndexError, match=f"Invalid frame index={-count - 1}"):
        decoder[-count - 1]
    with pytest.raises(IndexError, match="Invalid frame index=500"):
        decoder.get_frames_at([0, 500])
    with pytest.raises(TypeError, match="Unsupported key type: <class 'str'>"):
        decoder["0"]
    with pytest.raises(TypeError, match="1.5"):
        decoder.get_frames_at([1.5])
    with pytest.raises(TypeError, match="whole numbers"):
        decoder.get_frames_at(torch.tensor([1.5]))
    with pytest.raises(ValueError, match="step"):
        decoder.get_frames_in_range(0, 10, 0)


def test_time_errors(decoder):
    end = decoder.metadata.end_stream_seconds
    with pytest.raises(IndexError, match=rf"Invalid pts in seconds: {end}"):
        decoder.get_frame_played_at(end)
    with pytest.raises(IndexError, match="Invalid pts in seconds: -0.5"):
        decoder.get_frame_played_at(-0.5)
    with pytest.raises(FrameTimeOutOfRangeError, match="Invalid pts in seconds: 99"):
        decoder.get_frames_played_at([0.0, 99.0])
    with pytest.raises(RuntimeError):  # torchcodec raises RuntimeError here: still caught
        decoder.get_frames_played_at([99.0])
    with pytest.raises(IndexError, match="Invalid pts in seconds: nan"):
        decoder.get_frame_played_at(float("nan"))
    with pytest.raises(TypeError, match="seconds"):
        decoder.get_frame_played_at("1.0")
    with pytest.raises(ValueError, match="Invalid start seconds: 2.*stop seconds \\(1"):
        decoder.get_frames_played_in_range(2.0, 1.0)
    with pytest.raises(ValueError, match="Invalid start seconds: -1"):
        decoder.get_frames_played_in_range(-1.0, 1.0)
    with pytest.raises(ValueError, match="Invalid stop seconds: 100"):
        decoder.get_frames_played_in_range(0.0, 100.0)


def test_decoder_survives_errors(decoder):
    """After a rejected request the decoder still returns correct frames."""
    reference = corpus.reference_frames(H264.name)
    with pytest.raises(IndexError):
        decoder.get_frames_at([3, 10_000])
    assert decoder.get_frame_at(3).pts_seconds == reference[3].seconds


def test_text_mode_file_and_unsupported_types():
    with open(H264.path, encoding="latin-1") as text, pytest.raises(TypeError, match="'rb'"):
        VideoDecoder(text)
    with pytest.raises(TypeError, match="text mode"):
        VideoDecoder(io.StringIO("not a video"))
    with pytest.raises(TypeError, match="Unknown source type.*int.*file-like"):
        VideoDecoder(42)
    with pytest.raises(TypeError, match="uint8"):
        VideoDecoder(torch.zeros(10, dtype=torch.float32))
    with pytest.raises(ValueError, match="contiguous"):
        VideoDecoder(torch.zeros(20, dtype=torch.uint8)[::2])


def test_directory_is_not_a_video(tmp_path):
    with pytest.raises(IsADirectoryError):
        VideoDecoder(tmp_path)
    assert os.path.isdir(tmp_path)
