"""The decode plan's promises: one forward pass, each frame decoded at most
once, sequential access without seeks, and no neighbour returned after a seek
that lands past the target (open GOP, approximate mode)."""

from __future__ import annotations

import random
import warnings

import pytest

import corpus
from framefeed import VideoDecoder
from framefeed.engine.demux.frame_index import build_frame_index
from framefeed.engine.plan import Target, plan_runs

H264 = corpus.BY_NAME["h264_bframes_long_gop.mp4"]


def decoded(decoder: VideoDecoder) -> int:
    return decoder._backend.frames_decoded + decoder._session.stats.packets_skipped


@pytest.mark.parametrize("mode", ["exact", "approximate"])
def test_sequential_iteration_decodes_each_frame_once_without_seeking(mode):
    decoder = VideoDecoder(H264.path, seek_mode=mode)
    count = sum(1 for _ in decoder)
    assert count == len(decoder)
    assert decoder._session.stats.seeks == 1
    assert decoder._backend.frames_decoded == len(decoder)


@pytest.mark.parametrize("mode", ["exact", "approximate"])
def test_one_call_for_every_frame_in_random_order_is_one_forward_pass(mode):
    decoder = VideoDecoder(H264.path, seek_mode=mode)
    indices = list(range(len(decoder))) * 2
    random.Random(1).shuffle(indices)
    decoder.get_frames_at(indices)
    assert decoder._session.stats.seeks == 1
    assert decoder._backend.frames_decoded == len(decoder)


def test_batch_seeks_once_per_keyframe_interval_and_skips_unneeded_disposable_frames():
    decoder = VideoDecoder(H264.path)
    # Two frames in the first GOP (100 frames), one in the second.
    decoder.get_frames_at([150, 10, 60])
    stats = decoder._session.stats
    assert stats.seeks == 2
    assert stats.packets_skipped > 0
    # Frames actually decoded: at most those up to each target in its GOP
    # (plus the reorder delay), fewer than the 111 a naive forward decode needs.
    assert decoder._backend.frames_decoded < 61 + 51 + 8


def test_disposable_frames_are_still_decoded_when_a_later_call_may_want_them():
    decoder = VideoDecoder(H264.path)
    reference = corpus.reference_frames(H264.name)
    for i in range(0, 30):
        assert decoder.get_frame_at(i).pts_seconds == reference[i].seconds
    assert decoder._session.stats.seeks == 1


@pytest.mark.parametrize(
    "name, must_retry",
    [("h264_open_gop.mp4", True), ("hevc_cra.mp4", True), ("discard_edit_list.mp4", False)],
)
def test_approximate_mode_returns_leading_frames_of_open_gops(name, must_retry):
    """Times inside the frames displayed just before each open-GOP keyframe:
    a seek lands on that keyframe, whose leading pictures the decoder drops.
    framefeed must seek again earlier instead of returning the keyframe."""
    entry = corpus.BY_NAME[name]
    reference = corpus.reference_frames(name)
    index = build_frame_index(VideoDecoder(entry.path)._demuxer)
    keyframes = [i for i in range(1, len(index)) if index.is_keyframe[i]]
    assert keyframes, "the corpus file should have keyframes after the first"
    retried = 0
    for key in keyframes:
        for i in (key - 1, key - 2):
            decoder = VideoDecoder(entry.path, seek_mode="approximate")
            frame = decoder.get_frame_played_at(reference[i].seconds)
            assert frame.pts_seconds == reference[i].seconds, f"frame {i} before keyframe {key}"
            retried += decoder._session.stats.seeks > 1
    if must_retry:
        assert retried > 0, "expected at least one seek that landed after its target"


def test_plan_continues_within_a_keyframe_interval_and_seeks_across():
    decoder = VideoDecoder(H264.path)
    timeline = decoder._timeline
    targets = timeline.targets_for_indices([5, 20, 120, 121, 30])
    runs = plan_runs(targets, timeline, cursor_seconds=None)
    assert [[t.frame_index for t in run.targets] for run in runs] == [[5, 20, 30], [120, 121]]
    assert all(run.seek_pts is not None for run in runs)
    # From a decoder positioned at frame 4, frame 5 continues without a seek.
    continued = plan_runs(timeline.targets_for_indices([5]), timeline, cursor_seconds=timeline.frame_times(4)[0])
    assert continued[0].seek_pts is None
    # Going backwards always seeks.
    back = plan_runs(timeline.targets_for_indices([3]), timeline, cursor_seconds=timeline.frame_times(4)[0])
    assert back[0].seek_pts is not None


def test_duplicate_requests_share_one_target():
    decoder = VideoDecoder(H264.path)
    targets = decoder._timeline.targets_for_indices([7, 3, 7, 7])
    assert [(t.frame_index, t.slots) for t in targets] == [(3, [1]), (7, [0, 2, 3])]
    assert isinstance(targets[0], Target)


@pytest.mark.parametrize("name", ["vfr.mp4", "vfr.mkv"])  # mkv: rate = time base tick, "1000 fps"
def test_variable_rate_header_warns_once_that_indices_are_estimates(name):
    entry = corpus.BY_NAME[name]
    decoder = VideoDecoder(entry.path, seek_mode="approximate")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decoder[0]
        decoder[len(decoder) - 1]  # never an error below len()
        decoder.get_frames_at(list(range(len(decoder))))
    messages = [str(w.message) for w in caught if "estimates" in str(w.message)]
    assert len(messages) == 1
