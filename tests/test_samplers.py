"""The clip samplers against the contract (docs/api-contract.md, "Samplers").

Expected clips are computed here from the contract's formulas, with torch's
RNG reseeded and called as the contract says, never through the sampler code;
expected frames come from PyAV's sequential decode (`corpus.reference_frames`).
"""

from __future__ import annotations

import bisect
import math
import random
import warnings
from fractions import Fraction
from types import SimpleNamespace

import av
import numpy as np
import pytest
import torch

import corpus
from framefeed import FrameBatch, VideoDecoder
from framefeed import samplers as framefeed_samplers
from framefeed.samplers import (
    clips_at_random_indices,
    clips_at_random_timestamps,
    clips_at_regular_indices,
    clips_at_regular_timestamps,
)
from framefeed.samples import VideoSpec, encode_video, x264_options

MODES = ["exact", "approximate"]
# 200 frames at 25 fps, B-frames, keyframes at frames 0 and 100 only.
LONG_GOP = "h264_bframes_long_gop.mp4"
VFR_FILES = ["vfr.mp4", "vfr.mkv"]
INDEX_SAMPLERS = {"random": clips_at_random_indices, "regular": clips_at_regular_indices}


def open_decoder(name: str, mode: str = "exact", **kwargs) -> VideoDecoder:
    with warnings.catch_warnings():
        # approximate mode on a variable-frame-rate file warns that indices are estimates
        warnings.simplefilter("ignore")
        return VideoDecoder(corpus.BY_NAME[name].path, seek_mode=mode, **kwargs)


# -- the contract's formulas, written out independently ------------------------------


def expected_index_starts(kind: str, seed: int, start: int, end: int, num_clips: int) -> list[int]:
    torch.manual_seed(seed)
    if kind == "random":
        return torch.randint(low=start, high=end, size=(num_clips,)).tolist()
    return torch.linspace(start, end - 1, steps=num_clips, dtype=torch.int).tolist()


def resolve_index_range(num_frames: int, span: int, start: int, end: int | None) -> tuple[int, int]:
    start = start + num_frames if start < 0 else start
    if end is None:
        return start, max(num_frames - span + 1, 1)
    end = end + num_frames if end < 0 else end
    return start, min(end, num_frames)


def complete_clip(clip: list, length: int, policy: str) -> list:
    if len(clip) == length:
        return clip
    if policy == "repeat_last":
        return clip + [clip[-1]] * (length - len(clip))
    assert policy == "wrap"
    return [clip[i % len(clip)] for i in range(length)]


def expected_index_clips(
    kind: str, seed: int, num_frames: int, *, num_clips: int, num_frames_per_clip: int,
    num_indices_between_frames: int, start: int, end: int | None, policy: str,
) -> list[list[int]]:
    span = num_indices_between_frames * (num_frames_per_clip - 1) + 1
    low, high = resolve_index_range(num_frames, span, start, end)
    clips = []
    for s in expected_index_starts(kind, seed, low, high, num_clips):
        clip = list(range(s, min(s + span, num_frames), num_indices_between_frames))
        clips.append(complete_clip(clip, num_frames_per_clip, policy))
    return clips


def expected_time_clips(
    kind: str, seed: int, metadata, *, num_clips: int | None = None, seconds_between_clip_starts: float | None = None,
    num_frames_per_clip: int, seconds_between_frames: float | None, start: float | None, end: float | None, policy: str,
) -> list[list[float]]:
    spacing = 1 / metadata.average_fps if seconds_between_frames is None else seconds_between_frames
    end_stream = metadata.end_stream_seconds
    low = metadata.begin_stream_seconds if start is None else start
    high = end_stream - (num_frames_per_clip - 1) * spacing if end is None else end
    high = min(high, end_stream)
    torch.manual_seed(seed)
    if kind == "random":
        starts = torch.rand(num_clips, dtype=torch.float64) * (high - low) + low
    else:
        starts = torch.arange(low, high, seconds_between_clip_starts, dtype=torch.float64)
        starts = starts[starts < high]
    clips = []
    for s in starts.tolist():
        clip = [s + i * spacing for i in range(num_frames_per_clip)]
        clip = [t for t in clip if t < end_stream]
        clips.append(complete_clip(clip, num_frames_per_clip, policy))
    return clips


def frame_displayed_at(reference: list[corpus.ReferenceFrame], seconds: float) -> corpus.ReferenceFrame:
    """The last frame (in display order) whose pts is at or before `seconds`."""
    position = bisect.bisect_right([f.seconds for f in reference], seconds) - 1
    assert position >= 0, f"{seconds} s is before the first frame"
    return reference[position]


def assert_clip_frames(clips: FrameBatch, expected: list[list[corpus.ReferenceFrame]]) -> None:
    """`clips` (NHWC) holds `expected`, clip by clip, frame by frame: same pts, same pixels."""
    assert clips.pts_seconds.tolist() == [[f.seconds for f in clip] for clip in expected]
    for c, clip in enumerate(expected):
        for i, frame in enumerate(clip):
            assert np.array_equal(clips.data[c, i].numpy(), frame.rgb), f"clip {c} frame {i}"


def has_short_clip(clips: list[list], num_frames_per_clip: int) -> bool:
    """Whether the policy had to complete some clip (an element repeats)."""
    return any(len(set(clip)) < num_frames_per_clip for clip in clips)


# -- index-based samplers: seeded outputs equal the formulas ----------------------------

INDEX_CASES = {
    # case name: sampler arguments (the past_end and longer cases exercise the policies)
    "default_range": dict(num_clips=6, num_frames_per_clip=4, num_indices_between_frames=3),
    "explicit_range": dict(num_clips=5, num_frames_per_clip=3, sampling_range_start=10, sampling_range_end=50),
    "negative_bounds": dict(num_clips=5, num_frames_per_clip=2, num_indices_between_frames=5,
                            sampling_range_start=-60, sampling_range_end=-20),
    "negative_start_default_end": dict(num_clips=4, num_frames_per_clip=3, sampling_range_start=-30),
    "past_end_repeat_last": dict(num_clips=8, num_frames_per_clip=4, num_indices_between_frames=3,
                                 sampling_range_start=180, sampling_range_end=10_000, policy="repeat_last"),
    "past_end_wrap": dict(num_clips=8, num_frames_per_clip=4, num_indices_between_frames=3,
                          sampling_range_start=-20, sampling_range_end=10_000, policy="wrap"),
    "clip_longer_than_video": dict(num_clips=2, num_frames_per_clip=90, num_indices_between_frames=3,
                                   policy="wrap"),
    "more_clips_than_starts": dict(num_clips=9, sampling_range_start=195, sampling_range_end=199),
}


@pytest.mark.parametrize("case", list(INDEX_CASES))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["random", "regular"])
def test_index_samplers_follow_the_contract_formulas(kind, mode, case):
    kwargs = INDEX_CASES[case]
    reference = corpus.reference_frames(LONG_GOP)
    decoder = open_decoder(LONG_GOP, mode, dimension_order="NHWC")
    seed = 1234 + len(case)
    expected = expected_index_clips(
        kind, seed, len(decoder),
        num_clips=kwargs["num_clips"], num_frames_per_clip=kwargs.get("num_frames_per_clip", 1),
        num_indices_between_frames=kwargs.get("num_indices_between_frames", 1),
        start=kwargs.get("sampling_range_start", 0), end=kwargs.get("sampling_range_end"),
        policy=kwargs.get("policy", "repeat_last"),
    )
    if "past_end" in case or "longer" in case:
        assert has_short_clip(expected, kwargs["num_frames_per_clip"]), "the case should exercise the policy"

    torch.manual_seed(seed)
    clips = INDEX_SAMPLERS[kind](decoder, **kwargs)

    assert_clip_frames(clips, [[reference[i] for i in clip] for clip in expected])


@pytest.mark.parametrize("policy, expected", [("repeat_last", [195, 197, 199, 199, 199]),
                                              ("wrap", [195, 197, 199, 195, 197])])
def test_index_policies_on_the_documented_example(policy, expected):
    """A clip of 5 frames, every 2nd, starting 5 frames before the end."""
    decoder = open_decoder(LONG_GOP)
    reference = corpus.reference_frames(LONG_GOP)
    clips = clips_at_regular_indices(
        decoder, num_clips=1, num_frames_per_clip=5, num_indices_between_frames=2,
        sampling_range_start=195, sampling_range_end=196, policy=policy,
    )
    assert clips.pts_seconds.tolist() == [[reference[i].seconds for i in expected]]


# -- time-based samplers: seeded outputs equal the formulas ------------------------------

TIME_CASES = {
    "default_range": dict(num_frames_per_clip=4),
    "explicit_range_and_spacing": dict(num_frames_per_clip=5, seconds_between_frames=0.13,
                                       sampling_range_start=1.0, sampling_range_end=3.0),
    "end_past_stream_repeat_last": dict(num_frames_per_clip=6, seconds_between_frames=0.3,
                                        sampling_range_start=6.0, sampling_range_end=100.0, policy="repeat_last"),
    "end_past_stream_wrap": dict(num_frames_per_clip=6, seconds_between_frames=0.3,
                                 sampling_range_start=6.0, sampling_range_end=100.0, policy="wrap"),
    "clip_longer_than_video": dict(num_frames_per_clip=3, seconds_between_frames=5.0,
                                   sampling_range_end=7.5, policy="wrap"),
}


@pytest.mark.parametrize("case", list(TIME_CASES))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["random", "regular"])
def test_time_samplers_follow_the_contract_formulas(kind, mode, case):
    kwargs = TIME_CASES[case]
    reference = corpus.reference_frames(LONG_GOP)
    decoder = open_decoder(LONG_GOP, mode, dimension_order="NHWC")
    seed = 99 + len(case)
    starts_kwargs = dict(num_clips=7) if kind == "random" else dict(seconds_between_clip_starts=0.45)
    expected = expected_time_clips(
        kind, seed, decoder.metadata, **starts_kwargs,
        num_frames_per_clip=kwargs["num_frames_per_clip"], seconds_between_frames=kwargs.get("seconds_between_frames"),
        start=kwargs.get("sampling_range_start"), end=kwargs.get("sampling_range_end"),
        policy=kwargs.get("policy", "repeat_last"),
    )
    if "past" in case or "longer" in case:
        assert has_short_clip(expected, kwargs["num_frames_per_clip"]), "the case should exercise the policy"

    torch.manual_seed(seed)
    if kind == "random":
        clips = clips_at_random_timestamps(decoder, **starts_kwargs, **kwargs)
    else:
        clips = clips_at_regular_timestamps(decoder, **starts_kwargs, **kwargs)

    assert clips.pts_seconds.shape == (len(expected), kwargs["num_frames_per_clip"])
    assert_clip_frames(clips, [[frame_displayed_at(reference, t) for t in clip] for clip in expected])


@pytest.mark.parametrize("policy", ["repeat_last", "wrap"])
def test_time_policies_on_the_documented_example(policy):
    """Sampling times 7.5, 7.7, 7.9, then 8.1 and 8.3 fall past the 8 s stream."""
    decoder = open_decoder(LONG_GOP)
    reference = corpus.reference_frames(LONG_GOP)
    clips = clips_at_regular_timestamps(
        decoder, seconds_between_clip_starts=1.0, num_frames_per_clip=5, seconds_between_frames=0.2,
        sampling_range_start=7.5, sampling_range_end=7.6, policy=policy,
    )
    times = [7.5, 7.5 + 0.2, 7.5 + 2 * 0.2]
    times += [times[-1]] * 2 if policy == "repeat_last" else times[:2]
    assert clips.pts_seconds.tolist() == [[frame_displayed_at(reference, t).seconds for t in times]]


def test_regular_timestamps_with_no_start_in_range_give_an_empty_5d_batch():
    # (end - start) / spacing underflows to 0, so torch.arange yields no start.
    decoder = open_decoder(LONG_GOP, dimension_order="NHWC")
    clips = clips_at_regular_timestamps(
        decoder, seconds_between_clip_starts=1e300, num_frames_per_clip=3,
        sampling_range_start=0.0, sampling_range_end=5e-324,
    )
    assert clips.data.shape == (0, 3, 240, 320, 3)
    assert clips.pts_seconds.shape == clips.duration_seconds.shape == (0, 3)
    assert clips.pts_seconds.dtype == torch.float64


# -- variable frame rate: the frame displayed at each sampling time ---------------------


@pytest.mark.parametrize("seconds_between_frames", [None, 0.037])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", VFR_FILES)
def test_time_samplers_on_variable_frame_rate_return_the_frame_displayed_at_each_time(
    name, mode, seconds_between_frames
):
    reference = corpus.reference_frames(name)
    decoder = open_decoder(name, mode, dimension_order="NHWC")
    common = dict(num_frames_per_clip=6, seconds_between_frames=seconds_between_frames)

    seed = 7
    random_times = expected_time_clips(
        "random", seed, decoder.metadata, num_clips=6, start=None, end=None, policy="repeat_last", **common
    )
    torch.manual_seed(seed)
    random_clips = clips_at_random_timestamps(decoder, num_clips=6, **common)
    assert_clip_frames(random_clips, [[frame_displayed_at(reference, t) for t in c] for c in random_times])

    regular_times = expected_time_clips(
        "regular", seed, decoder.metadata, seconds_between_clip_starts=0.61, start=None, end=None,
        policy="repeat_last", **common,
    )
    regular_clips = clips_at_regular_timestamps(decoder, seconds_between_clip_starts=0.61, **common)
    assert_clip_frames(regular_clips, [[frame_displayed_at(reference, t) for t in c] for c in regular_times])


@pytest.mark.parametrize("name", VFR_FILES)
def test_index_samplers_on_variable_frame_rate_return_the_indexed_frames(name):
    reference = corpus.reference_frames(name)
    decoder = open_decoder(name, dimension_order="NHWC")
    kwargs = dict(num_clips=5, num_frames_per_clip=4, num_indices_between_frames=2)
    for kind, sampler in INDEX_SAMPLERS.items():
        expected = expected_index_clips(kind, 5, len(decoder), start=0, end=None, policy="repeat_last", **kwargs)
        torch.manual_seed(5)
        clips = sampler(decoder, **kwargs)
        assert_clip_frames(clips, [[reference[i] for i in clip] for clip in expected])


# -- a stream that does not start at 0 ------------------------------------------------------


@pytest.fixture(scope="module")
def late_start(tmp_path_factory) -> tuple[str, list[corpus.ReferenceFrame]]:
    """40 frames at 25 fps whose first pts is 1.5 s, and PyAV's decode of them."""
    path = encode_video(
        tmp_path_factory.mktemp("samplers") / "late_start.mp4",
        VideoSpec(num_frames=40, time_base=Fraction(1, 1000), timestamps=[1500 + 40 * i for i in range(40)],
                  codec_options=x264_options(20)),
    )
    with av.open(str(path)) as container:
        reference = [corpus.ReferenceFrame(f.pts, f.time, f.to_ndarray(format="rgb24", interpolation="BICUBIC"), None)
                     for f in container.decode(video=0)]
    assert reference[0].seconds == 1.5
    return str(path), reference


@pytest.mark.parametrize("mode", MODES)
def test_time_samplers_default_to_the_stream_begin_not_zero(late_start, mode):
    path, reference = late_start
    decoder = VideoDecoder(path, seek_mode=mode, dimension_order="NHWC")
    assert decoder.metadata.begin_stream_seconds == 1.5
    random_times = expected_time_clips(
        "random", 3, decoder.metadata, num_clips=5, num_frames_per_clip=3, seconds_between_frames=None,
        start=None, end=None, policy="repeat_last",
    )
    torch.manual_seed(3)
    clips = clips_at_random_timestamps(decoder, num_clips=5, num_frames_per_clip=3)
    assert_clip_frames(clips, [[frame_displayed_at(reference, t) for t in c] for c in random_times])

    regular_times = expected_time_clips(
        "regular", 3, decoder.metadata, seconds_between_clip_starts=0.25, num_frames_per_clip=3,
        seconds_between_frames=None, start=None, end=None, policy="repeat_last",
    )
    assert regular_times[0][0] == 1.5
    clips = clips_at_regular_timestamps(decoder, seconds_between_clip_starts=0.25, num_frames_per_clip=3)
    assert_clip_frames(clips, [[frame_displayed_at(reference, t) for t in c] for c in regular_times])

    with pytest.raises(ValueError, match=r"sampling_range_start \(1\.0\) must be at least 1\.5"):
        clips_at_random_timestamps(decoder, sampling_range_start=1.0)


# -- output form, one decode call, randomness ---------------------------------------------

ALL_SAMPLERS = {
    "random_indices": (clips_at_random_indices, dict(num_clips=3), "get_frames_at"),
    "regular_indices": (clips_at_regular_indices, dict(num_clips=3), "get_frames_at"),
    "random_timestamps": (clips_at_random_timestamps, dict(num_clips=3), "get_frames_played_at"),
    "regular_timestamps": (clips_at_regular_timestamps, dict(seconds_between_clip_starts=2.7), "get_frames_played_at"),
}
DECODE_METHODS = [
    "get_frame_at", "get_frames_at", "get_frames_in_range", "get_frame_played_at",
    "get_frames_played_at", "get_frames_played_in_range", "get_all_frames", "__getitem__",
]


@pytest.mark.parametrize("dimension_order", ["NCHW", "NHWC"])
@pytest.mark.parametrize("sampler_name", list(ALL_SAMPLERS))
def test_output_is_a_view_of_one_batched_decode_call(sampler_name, dimension_order, monkeypatch):
    sampler, kwargs, decode_method = ALL_SAMPLERS[sampler_name]
    decoder = open_decoder(LONG_GOP, dimension_order=dimension_order)
    calls: list[tuple[str, FrameBatch]] = []
    for name in DECODE_METHODS:
        original = getattr(decoder, name)

        def spy(*args, _name=name, _original=original, **kw):
            result = _original(*args, **kw)
            calls.append((_name, result))
            return result

        monkeypatch.setattr(decoder, name, spy)

    clips = sampler(decoder, num_frames_per_clip=4, **kwargs)

    assert [name for name, _ in calls] == [decode_method]
    flat = calls[0][1]
    frame_shape = (3, 240, 320) if dimension_order == "NCHW" else (240, 320, 3)
    assert clips.data.shape == (3, 4, *frame_shape)
    assert clips.data.dtype == torch.uint8 and clips.data.device == flat.data.device
    assert clips.data.data_ptr() == flat.data.data_ptr()  # reshaped, not copied
    for timestamps in (clips.pts_seconds, clips.duration_seconds):
        assert timestamps.shape == (3, 4)
        assert timestamps.dtype == torch.float64 and timestamps.device.type == "cpu"


@pytest.mark.parametrize("sampler_name", list(ALL_SAMPLERS))
def test_only_the_contracted_torch_rng_calls_are_made(sampler_name):
    sampler, kwargs, _ = ALL_SAMPLERS[sampler_name]
    decoder = open_decoder(LONG_GOP)
    torch.manual_seed(21)
    if sampler_name == "random_indices":
        torch.randint(low=0, high=len(decoder), size=(3,))
    elif sampler_name == "random_timestamps":
        torch.rand(3, dtype=torch.float64)
    expected_state = torch.get_rng_state()
    python_state, numpy_state = random.getstate(), np.random.get_state()

    torch.manual_seed(21)
    sampler(decoder, **kwargs)

    assert torch.equal(torch.get_rng_state(), expected_state)
    assert random.getstate() == python_state
    after = np.random.get_state()
    assert after[0] == numpy_state[0] and np.array_equal(after[1], numpy_state[1]) and after[2:] == numpy_state[2:]


def test_same_seed_same_clips_and_different_seeds_differ():
    decoder = open_decoder(LONG_GOP)
    results = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        results.append(clips_at_random_indices(decoder, num_clips=4, num_frames_per_clip=2).pts_seconds)
    assert torch.equal(results[0], results[1])
    assert not torch.equal(results[0], results[2])


# -- overlapping clips decode each frame once -------------------------------------------------


def keyframe_positions(name: str) -> list[int]:
    """Display positions of the keyframes, from PyAV's packets."""
    with av.open(str(corpus.BY_NAME[name].path)) as container:
        stream = container.streams.video[0]
        key_pts = {p.pts for p in container.demux(stream) if p.is_keyframe and p.pts is not None}
    return [i for i, frame in enumerate(corpus.reference_frames(name)) if frame.pts in key_pts]


def frames_needed_per_interval(name: str, needed: set[int]) -> dict[int, int]:
    """For each keyframe interval holding a needed frame: how many frames a
    decoder produces from that keyframe up to the last needed frame."""
    keys = keyframe_positions(name)
    last_needed: dict[int, int] = {}
    for index in needed:
        key = keys[bisect.bisect_right(keys, index) - 1]
        last_needed[key] = max(last_needed.get(key, index), index)
    return {key: last - key + 1 for key, last in last_needed.items()}


def positions_of(clips: FrameBatch) -> list[int]:
    """Display positions (in LONG_GOP's reference decode) of every frame in `clips`."""
    position = {frame.seconds: i for i, frame in enumerate(corpus.reference_frames(LONG_GOP))}
    return [position[seconds] for seconds in clips.pts_seconds.reshape(-1).tolist()]


def produced(decoder: VideoDecoder) -> int:
    """Frames the backend decoded. (Packets the plan leaves undecoded, pictures
    nothing references, cost no decoding; in approximate mode the look-ahead
    that confirms a time's frame may demux a few of them past the range.)"""
    return decoder._backend.frames_decoded


# In approximate mode targets are times: the session confirms the frame shown
# at a time by seeing the next frame's pts, one frame past each forward pass.
LOOKAHEAD = {"exact": 0, "approximate": 1}


@pytest.mark.parametrize("mode", MODES)
def test_overlapping_index_clips_decode_each_frame_once(mode):
    decoder = open_decoder(LONG_GOP, mode)
    # Clips of 10 frames spanning 19 indices, starting every ~11 frames:
    # consecutive clips share frames. Two groups, one per keyframe interval.
    kwargs = dict(num_frames_per_clip=10, num_indices_between_frames=2)
    first = clips_at_regular_indices(decoder, num_clips=6, sampling_range_start=5, sampling_range_end=60, **kwargs)
    needed = set(positions_of(first))
    assert first.pts_seconds.numel() == 60 > len(needed), "clips should overlap"
    intervals = frames_needed_per_interval(LONG_GOP, needed)
    assert decoder._session.stats.seeks == len(intervals) == 1
    assert produced(decoder) <= sum(intervals.values()) + LOOKAHEAD[mode]

    decoder = open_decoder(LONG_GOP, mode)
    both = clips_at_regular_indices(decoder, num_clips=4, sampling_range_start=20, sampling_range_end=150, **kwargs)
    needed = set(positions_of(both))
    intervals = frames_needed_per_interval(LONG_GOP, needed)
    assert decoder._session.stats.seeks == len(intervals) == 2
    assert produced(decoder) <= sum(intervals.values()) + LOOKAHEAD[mode] * len(intervals)


@pytest.mark.parametrize("mode", MODES)
def test_overlapping_time_clips_decode_each_frame_once(mode):
    decoder = open_decoder(LONG_GOP, mode)
    # 12-frame clips (0.48 s) starting every 0.3 s overlap.
    clips = clips_at_regular_timestamps(
        decoder, seconds_between_clip_starts=0.3, num_frames_per_clip=12,
        sampling_range_start=0.5, sampling_range_end=2.0,
    )
    needed = set(positions_of(clips))
    assert clips.pts_seconds.numel() > len(needed), "clips should overlap"
    intervals = frames_needed_per_interval(LONG_GOP, needed)
    assert decoder._session.stats.seeks == len(intervals) == 1
    assert produced(decoder) <= sum(intervals.values()) + LOOKAHEAD[mode]


@pytest.mark.parametrize("mode", MODES)
def test_many_random_clips_decode_no_frame_twice(mode):
    decoder = open_decoder(LONG_GOP, mode)
    torch.manual_seed(0)
    # Clips end well before the end of the stream, where the decoder's final
    # flush hands out every remaining frame at once.
    clips = clips_at_random_indices(decoder, num_clips=40, num_frames_per_clip=8, sampling_range_end=150)
    needed = set(positions_of(clips))
    # Every frame from the first keyframe used to the last needed frame, at most once.
    first_key = min(frames_needed_per_interval(LONG_GOP, needed))
    passes = decoder._session.stats.seeks
    assert passes <= len(frames_needed_per_interval(LONG_GOP, needed))
    assert produced(decoder) <= max(needed) - first_key + 1 + LOOKAHEAD[mode] * passes


# -- validation ------------------------------------------------------------------------------

# (sampler, kwargs, exception, substrings the message must contain)
INDEX_ERRORS = [
    (dict(num_clips=0), ValueError, ["num_clips", "(0)", "must be > 0"]),
    (dict(num_clips=-2), ValueError, ["num_clips", "(-2)"]),
    (dict(num_frames_per_clip=0), ValueError, ["num_frames_per_clip", "(0)", "strictly positive"]),
    (dict(num_indices_between_frames=-1), ValueError, ["num_indices_between_frames", "(-1)", "strictly positive"]),
    (dict(policy="bogus"), ValueError, ["Invalid policy", "bogus", "repeat_last"]),
    (dict(sampling_range_start=200), ValueError, ["sampling_range_start", "(200)", "number of frames (200)"]),
    (dict(sampling_range_start=-201), ValueError, ["sampling_range_start", "(-201)", "200"]),
    (dict(sampling_range_start=60, sampling_range_end=40), ValueError,
     ["sampling_range_start (60)", "must be smaller than", "sampling_range_end (40)"]),
    (dict(sampling_range_start=10, sampling_range_end=-200), ValueError,
     ["sampling_range_start (10) must be smaller than sampling_range_end (0).", "given as -200"]),
    # torchcodec's phrase names the bounds counted from the end (its own test matches "(290)" for -100 of 390).
    (dict(sampling_range_start=-100, sampling_range_end=-100), ValueError,
     ["sampling_range_start (100) must be smaller than sampling_range_end (100).", "given as -100"]),
    (dict(sampling_range_start=1000), ValueError, ["sampling_range_start (1000) must be smaller than"]),
    (dict(sampling_range_start=-10, num_frames_per_clip=20), ValueError,
     ["sampling_range_end should be 181", "sampling_range_start (190)"]),
    (dict(sampling_range_start=195, sampling_range_end=196, num_frames_per_clip=8, policy="error"), ValueError,
     ["'error' policy", "sampling_range_end", "default", "index 195"]),
    (dict(num_clips=2.0), TypeError, ["num_clips", "2.0"]),
    (dict(num_clips=True), TypeError, ["num_clips", "True"]),
    (dict(num_frames_per_clip="3"), TypeError, ["num_frames_per_clip", "'3'"]),
    (dict(num_indices_between_frames=1.5), TypeError, ["num_indices_between_frames", "1.5"]),
    (dict(sampling_range_start=0.0), TypeError, ["sampling_range_start", "0.0"]),
    (dict(sampling_range_end="10"), TypeError, ["sampling_range_end", "'10'"]),
    (dict(policy=None), TypeError, ["policy", "None"]),
]

TIME_ERRORS = [
    (dict(num_frames_per_clip=0), ValueError, ["num_frames_per_clip", "(0)", "strictly positive"]),
    (dict(policy="loop"), ValueError, ["Invalid policy", "loop"]),
    (dict(seconds_between_frames=0), ValueError, ["seconds_between_frames", "(0)", "must be > 0"]),
    (dict(seconds_between_frames=-0.5), ValueError, ["seconds_between_frames", "(-0.5)"]),
    (dict(seconds_between_frames=math.inf), ValueError, ["seconds_between_frames", "inf"]),
    (dict(seconds_between_frames=math.nan), ValueError, ["seconds_between_frames", "nan"]),
    (dict(sampling_range_start=-1.0), ValueError, ["sampling_range_start (-1.0)", "must be at least 0.0"]),
    (dict(sampling_range_start=8.0), ValueError, ["sampling_range_start (8.0)", "must be smaller than 8.0"]),
    (dict(sampling_range_start=5.0, sampling_range_end=3.0), ValueError,
     ["sampling_range_start (5.0)", "must be smaller than", "sampling_range_end (3.0)"]),
    (dict(sampling_range_end=-1.0), ValueError, ["sampling_range_end (-1.0)", "must be at least 0.0"]),
    # Values as the user gave them, inside torchcodec's phrases: 1000, not 1000.0.
    (dict(sampling_range_start=1000), ValueError, ["sampling_range_start (1000) must be smaller than"]),
    (dict(sampling_range_start=-1), ValueError, ["sampling_range_start (-1) must be at least 0"]),
    (dict(sampling_range_end=-1), ValueError, ["sampling_range_end (-1) must be at least 0"]),
    (dict(sampling_range_start=4, sampling_range_end=4), ValueError,
     ["sampling_range_start (4) must be smaller than sampling_range_end (4)"]),
    (dict(num_frames_per_clip=1000, seconds_between_frames=0.04), ValueError,
     ["sampling_range_start (0.0)", "sampling_range_end (-31.9", "default"]),
    (dict(sampling_range_start=7.9, sampling_range_end=8.0, num_frames_per_clip=4, policy="error"), ValueError,
     ["'error' policy", "sampling_range_end", "default", "7.9"]),
    (dict(num_frames_per_clip=2.0), TypeError, ["num_frames_per_clip", "2.0"]),
    (dict(seconds_between_frames="0.1"), TypeError, ["seconds_between_frames", "'0.1'"]),
    (dict(sampling_range_start="1"), TypeError, ["sampling_range_start", "'1'"]),
    (dict(sampling_range_end=True), TypeError, ["sampling_range_end", "True"]),
    (dict(policy=1), TypeError, ["policy", "1"]),
]

ERROR_CASES = (
    [pytest.param(sampler, kwargs, error, words, id=f"{name}-{i}")
     for name, sampler in INDEX_SAMPLERS.items() for i, (kwargs, error, words) in enumerate(INDEX_ERRORS)]
    + [pytest.param(clips_at_random_timestamps, kwargs, error, words, id=f"random_timestamps-{i}")
       for i, (kwargs, error, words) in enumerate(TIME_ERRORS)]
    + [pytest.param(clips_at_regular_timestamps, {"seconds_between_clip_starts": 0.5, **kwargs}, error, words,
                    id=f"regular_timestamps-{i}")
       for i, (kwargs, error, words) in enumerate(TIME_ERRORS)]
    + [
        pytest.param(clips_at_random_timestamps, dict(num_clips=0), ValueError, ["num_clips", "(0)", "must be > 0"],
                     id="random_timestamps-num_clips"),
        pytest.param(clips_at_random_timestamps, dict(num_clips=1.0), TypeError, ["num_clips", "1.0"],
                     id="random_timestamps-num_clips_type"),
        pytest.param(clips_at_regular_timestamps, dict(seconds_between_clip_starts=0), ValueError,
                     ["seconds_between_clip_starts", "(0)", "must be > 0"], id="regular_timestamps-spacing"),
        pytest.param(clips_at_regular_timestamps, dict(seconds_between_clip_starts=-2.5), ValueError,
                     ["seconds_between_clip_starts", "(-2.5)"], id="regular_timestamps-negative_spacing"),
        pytest.param(clips_at_regular_timestamps, dict(seconds_between_clip_starts=None), TypeError,
                     ["seconds_between_clip_starts", "None"], id="regular_timestamps-spacing_type"),
    ]
)


@pytest.mark.parametrize("sampler, kwargs, error, words", ERROR_CASES)
def test_invalid_arguments_raise_naming_the_value(sampler, kwargs, error, words):
    decoder = open_decoder(LONG_GOP)  # 200 frames, [0.0, 8.0) s
    with pytest.raises(error) as raised:
        sampler(decoder, **kwargs)
    assert type(raised.value) is error  # not a subclass standing in for it
    message = str(raised.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_error_policy_is_silent_when_every_clip_fits():
    decoder = open_decoder(LONG_GOP)
    clips = clips_at_random_indices(decoder, num_clips=5, num_frames_per_clip=30, policy="error")
    assert clips.data.shape[:2] == (5, 30)
    clips = clips_at_random_timestamps(decoder, num_clips=5, num_frames_per_clip=30, policy="error")
    assert clips.data.shape[:2] == (5, 30)


@pytest.mark.parametrize("sampler", [*INDEX_SAMPLERS.values(), clips_at_random_timestamps])
def test_arguments_after_the_decoder_are_keyword_only(sampler):
    with pytest.raises(TypeError):
        sampler(open_decoder(LONG_GOP), 2)


@pytest.mark.parametrize("sampler", [*INDEX_SAMPLERS.values(), clips_at_random_timestamps])
def test_a_decoder_with_no_frames_is_refused(sampler):
    class EmptyDecoder:
        metadata = SimpleNamespace(begin_stream_seconds=0.0, end_stream_seconds=0.0, average_fps=None)

        def __len__(self):
            return 0

        def get_frames_at(self, indices):
            pytest.fail("must not decode")

        def get_frames_played_at(self, seconds):
            pytest.fail("must not decode")

    with pytest.raises(ValueError, match=r"at least one frame, found 0 frames"):
        sampler(EmptyDecoder())


@pytest.mark.parametrize("sampler", list(INDEX_SAMPLERS.values()) + [clips_at_random_timestamps])
def test_something_other_than_a_decoder_is_a_type_error(sampler):
    with pytest.raises(TypeError, match="VideoDecoder"):
        sampler("video.mp4")


def test_default_spacing_needs_an_average_frame_rate():
    class NoFrameRateDecoder:
        metadata = SimpleNamespace(begin_stream_seconds=0.0, end_stream_seconds=4.0, average_fps=None)

        def __len__(self):
            return 10

        def get_frames_played_at(self, seconds):
            pytest.fail("must not decode")

    with pytest.raises(ValueError, match="Could not infer average fps"):
        clips_at_random_timestamps(NoFrameRateDecoder())


# -- torchcodec parity (only where torchcodec is installed) ---------------------------------


def _torchcodec():
    try:
        import torchcodec.decoders
        import torchcodec.samplers
    except (ImportError, OSError, RuntimeError) as error:  # missing, or its FFmpeg libraries are
        pytest.skip(f"torchcodec not usable: {error}")
    return torchcodec


PARITY_CALLS = [
    ("clips_at_random_indices", dict(num_clips=6, num_frames_per_clip=4, num_indices_between_frames=3)),
    ("clips_at_random_indices", dict(num_clips=6, num_frames_per_clip=5, sampling_range_start=-12,
                                     sampling_range_end=10_000, policy="wrap")),
    ("clips_at_regular_indices", dict(num_clips=7, num_frames_per_clip=3, sampling_range_start=-40)),
    ("clips_at_random_timestamps", dict(num_clips=5, num_frames_per_clip=4)),
    ("clips_at_random_timestamps", dict(num_clips=5, num_frames_per_clip=3, seconds_between_frames=0.3,
                                        sampling_range_start=0.5, sampling_range_end=100.0)),
    ("clips_at_regular_timestamps", dict(seconds_between_clip_starts=0.7, num_frames_per_clip=3)),
]


# Constant-frame-rate files whose metadata torchcodec and framefeed agree on
# (on the variable-frame-rate ones they differ, so the formulas' inputs do).
@pytest.mark.parametrize("name", [LONG_GOP, "vp9.webm", "h264_bframes.mkv"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("function, kwargs", PARITY_CALLS)
def test_seeded_clips_equal_torchcodecs(name, mode, function, kwargs):
    torchcodec = _torchcodec()
    ours = open_decoder(name, mode)
    theirs = torchcodec.decoders.VideoDecoder(str(corpus.BY_NAME[name].path), seek_mode=mode)
    torch.manual_seed(11)
    expected = getattr(torchcodec.samplers, function)(theirs, **kwargs)
    torch.manual_seed(11)
    clips = getattr(framefeed_samplers, function)(ours, **kwargs)
    assert torch.equal(clips.pts_seconds, expected.pts_seconds)
    assert torch.equal(clips.data, expected.data)
