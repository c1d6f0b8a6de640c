"""What torchcodec 0.14-0.17 added to the video API besides `output_dtype`
(tests/test_output_dtype.py): `VideoStreamMetadata.media_type`, and names a
drop-in user imports from `torchcodec.decoders` (`set_cuda_backend`,
`SimpleVideoDecoder`). The README's table lists what is left out."""

from __future__ import annotations

import threading

import pytest

import corpus
from framefeed.decoders import SimpleVideoDecoder, VideoDecoder, set_cuda_backend
from framefeed.decoders._cuda_backend import cuda_backend


def test_metadata_says_its_media_type(corpus_files):
    metadata = VideoDecoder(corpus.BY_NAME["vp9.webm"].path, seek_mode="approximate").metadata
    assert metadata.media_type == "video"
    assert "  media_type: video\n" in repr(metadata)


def test_simple_video_decoder_is_video_decoder():
    assert SimpleVideoDecoder is VideoDecoder


@pytest.mark.parametrize("name, recorded", [("nvdec", "nvdec"), ("NVDEC", "nvdec"), ("beta", "nvdec"),
                                            ("ffmpeg", "ffmpeg"), ("FFmpeg", "ffmpeg")])
def test_set_cuda_backend_accepts_torchcodecs_names_for_its_block(name, recorded, corpus_files):
    assert cuda_backend() == "nvdec"
    with set_cuda_backend(name):
        assert cuda_backend() == recorded
        with set_cuda_backend("nvdec"):
            assert cuda_backend() == "nvdec"
        assert cuda_backend() == recorded
        decoder = VideoDecoder(corpus.BY_NAME["vp9.webm"].path, device="cpu")  # decodes as anywhere else
        assert decoder[0].shape == (3, 240, 320)
    assert cuda_backend() == "nvdec"


def test_set_cuda_backend_is_per_thread():
    seen = []
    with set_cuda_backend("ffmpeg"):
        worker = threading.Thread(target=lambda: seen.append(cuda_backend()))
        worker.start()
        worker.join()
    assert seen == ["nvdec"]


@pytest.mark.parametrize("name", ["cuda", "ffmpeg-cuda", ""])
def test_set_cuda_backend_refuses_other_names_with_torchcodecs_phrase(name):
    with pytest.raises(ValueError, match=rf"Invalid CUDA backend \({name.lower()}\)\. Supported values are "
                                         r"'nvdec' and 'ffmpeg'\."):
        with set_cuda_backend(name):
            pass


def test_key_frame_indices_are_the_frames_of_keyframe_packets(corpus_files):
    """torchcodec's private `_get_key_frame_indices` (its tests and some users call it):
    display indices of keyframes, from an independent demux; discarded packets are no frames."""
    import av
    import torch

    for name in ("h264_bframes_long_gop.mp4", "discard_edit_list.mp4", "vp9.webm"):
        path = corpus.BY_NAME[name].path
        with av.open(str(path)) as container:
            packets = [p for p in container.demux(video=0) if p.size and p.pts is not None and not p.is_discard]
        order = sorted(packets, key=lambda p: p.pts)
        expected = [i for i, packet in enumerate(order) if packet.is_keyframe]
        indices = VideoDecoder(path)._get_key_frame_indices()
        assert indices.dtype == torch.int64 and indices.tolist() == expected, name
    with pytest.raises(RuntimeError, match="Must scan all streams"):
        VideoDecoder(corpus.BY_NAME["vp9.webm"].path, seek_mode="approximate")._get_key_frame_indices()
