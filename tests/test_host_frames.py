"""Reused frame memory (`framefeed.engine.host_frames`): a frame the caller holds,
or any view of it, is never written again; dropped frames' memory is reused;
sequential decoding stops paying page faults for every frame."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import corpus
from framefeed import VideoDecoder
from framefeed.engine import host_frames

SHAPE = (48, 64, 3)


def test_dropped_frame_memory_is_reused():
    first = host_frames.take_frame_tensor(SHAPE)
    address = first.data_ptr()
    del first
    again = host_frames.take_frame_tensor(SHAPE)
    assert again.data_ptr() == address
    assert again.shape == SHAPE and again.dtype == torch.uint8 and again.is_contiguous()


def test_a_view_keeps_the_memory_leased():
    frame = host_frames.take_frame_tensor(SHAPE)
    address = frame.data_ptr()
    red = frame[..., 0]
    as_numpy = frame.permute(2, 0, 1).numpy()
    del frame
    other = host_frames.take_frame_tensor(SHAPE)
    assert other.data_ptr() != address
    del red
    assert host_frames.take_frame_tensor(SHAPE).data_ptr() != address  # the numpy view still holds it
    del as_numpy
    assert host_frames.take_frame_tensor(SHAPE).data_ptr() == address


def test_moving_a_frame_to_shared_memory_keeps_its_pixels_and_frees_the_lease():
    frame = host_frames.take_frame_tensor(SHAPE)
    frame.copy_(torch.arange(frame.numel(), dtype=torch.uint8).view(SHAPE))
    expected = frame.clone()
    leased = host_frames.pool_leased()
    frame.share_memory_()
    assert frame.is_shared()
    assert host_frames.pool_leased() == leased - 1
    # The released memory is handed out (and overwritten) again...
    host_frames.take_frame_tensor(SHAPE).fill_(7)
    # ...while the shared frame keeps its pixels.
    assert torch.equal(frame, expected)


def test_retained_free_memory_is_capped():
    big = (1024, 1024, 3)
    frames = [host_frames.take_frame_tensor(big) for _ in range(60)]
    del frames
    assert host_frames.pool_free_bytes() <= host_frames.RETAINED_BYTES_LIMIT


def _write_in_child(frame: torch.Tensor, queue) -> None:
    frame.fill_(255)
    reused = host_frames.take_frame_tensor(SHAPE)
    reused.fill_(9)
    queue.put(int(frame[0, 0, 0]))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_a_forked_child_writes_its_own_copy():
    frame = host_frames.take_frame_tensor(SHAPE)
    frame.fill_(1)
    spare = host_frames.take_frame_tensor(SHAPE)
    del spare  # a free buffer the child could reuse if the pool were shared
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_write_in_child, args=(frame, queue))
    child.start()
    assert queue.get(timeout=60) == 255
    child.join(timeout=60)
    assert child.exitcode == 0
    assert int(frame.min()) == 1 and int(frame.max()) == 1


def test_frames_held_while_iterating_keep_their_pixels():
    """Keep every third frame, a view of others, drop the rest: what is kept
    must still equal PyAV's decode after the whole pass reused memory."""
    name = "h264_bframes_long_gop.mp4"
    reference = corpus.reference_frames(name)
    kept: dict[int, torch.Tensor] = {}
    for index, frame in enumerate(VideoDecoder(corpus.BY_NAME[name].path)):
        if index % 3 == 0:
            kept[index] = frame
        elif index % 3 == 1:
            kept[index] = frame[1]  # green plane view; the full frame is dropped
    assert len(kept) > 100
    for index, data in kept.items():
        rgb = torch.from_numpy(reference[index].rgb).permute(2, 0, 1)
        expected = rgb if index % 3 == 0 else rgb[1]
        assert torch.equal(data, expected), f"frame {index} changed after it was returned"


def test_single_frame_calls_return_independent_tensors():
    path = corpus.BY_NAME["h264_open_gop.mp4"].path
    reference = corpus.reference_frames("h264_open_gop.mp4")
    decoder = VideoDecoder(path)
    first = decoder.get_frame_at(5).data
    second = decoder[6]
    third = decoder.get_frame_played_at(reference[7].seconds).data
    del second
    fourth = decoder.get_frame_at(8).data
    for index, data in ((5, first), (7, third), (8, fourth)):
        assert torch.equal(data, torch.from_numpy(reference[index].rgb).permute(2, 0, 1))


_FAULTS_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    from framefeed import VideoDecoder
    decoder = VideoDecoder(sys.argv[1])
    frames = iter(decoder)
    for _ in range(10):
        next(frames)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    count = sum(1 for _ in frames)
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / count)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tunables")
def test_sequential_decoding_does_not_fault_on_every_frame():
    """With glibc made to return every frame-sized block to the kernel (what
    its trim heuristics do in some processes), a fresh tensor per frame pays
    one fault per 4 KiB page; reused memory pays none of that."""
    path = corpus.BY_NAME["h264_bframes_long_gop.mp4"].path
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    result = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT, str(path)], env=env,
                            capture_output=True, text=True, timeout=300, check=True)
    faults_per_frame = float(result.stdout.split()[-1])
    pages_per_frame = np.prod(VideoDecoder(path)[0].shape) / 4096
    assert faults_per_frame < pages_per_frame / 4, (faults_per_frame, pages_per_frame)


def test_storage_cannot_grow_but_may_shrink():
    """Documented difference from torch.empty: the storage is borrowed memory."""
    frame = host_frames.take_frame_tensor(SHAPE)
    frame.resize_(4, 4)
    with pytest.raises(RuntimeError, match="not resizable"):
        frame.resize_(100, 100, 3)


def test_empty_shapes_get_plain_tensors():
    empty = host_frames.take_frame_tensor((0, 64, 3))
    assert empty.shape == (0, 64, 3) and empty.dtype == torch.uint8
