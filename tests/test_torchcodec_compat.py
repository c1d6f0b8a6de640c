"""framefeed as a drop-in for torchcodec 0.13: the same calls on both libraries.

Every call here runs on framefeed against an independent expectation (PyAV's
sequential decode for frames and timestamps, the documented exception type and
torchcodec's phrase for errors). When torchcodec imports (it needs FFmpeg's
shared libraries), the same call also runs on torchcodec and must agree:
return type, shape, pts, durations, pixels; exception type and phrase.
Cases where torchcodec is wrong per docs/api-contract.md are listed apart, and
only framefeed's (right) behaviour is checked there.

Transforms have their own file, `test_transforms.py`.
"""

from __future__ import annotations

import io
import json
import warnings
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

import corpus
import framefeed
from framefeed import FrameBatch, VideoDecoder
from framefeed import samplers as ff_samplers
from framefeed.decoders import CpuFallbackStatus
from framefeed.samples import VideoSpec, encode_video, x264_options

try:  # torchcodec needs FFmpeg's shared libraries; without them it fails to import.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torchcodec
        import torchcodec.decoders
        import torchcodec.samplers
    TORCHCODEC = torchcodec
except Exception:  # noqa: BLE001 - any import failure means "not available"
    TORCHCODEC = None

needs_torchcodec = pytest.mark.skipif(TORCHCODEC is None, reason="torchcodec is not importable")

NUM_FRAMES = 30


@pytest.fixture(scope="module")
def ntsc(tmp_path_factory) -> str:
    """30 frames at 29.97 fps (time base 1001/30000), B-frames, keyframes every 10 frames."""
    path = tmp_path_factory.mktemp("compat") / "ntsc.mp4"
    encode_video(path, VideoSpec(num_frames=NUM_FRAMES, fps=Fraction(30000, 1001), codec_options=x264_options(10)))
    return str(path)


@pytest.fixture(scope="module")
def truth(ntsc) -> list[tuple[float, float, np.ndarray]]:
    """(pts seconds, duration seconds, RGB) of every frame, by PyAV's sequential decode."""
    frames = []
    with av.open(ntsc) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            rgb = frame.to_ndarray(format="rgb24", interpolation="BICUBIC")
            frames.append((float(frame.time), float(frame.duration * stream.time_base), rgb))
    assert len(frames) == NUM_FRAMES
    return frames


def libraries() -> list[tuple[str, object, object]]:
    """(name, decoders module, top-level module) for framefeed and, if importable, torchcodec."""
    libs = [("framefeed", framefeed.decoders, framefeed)]
    if TORCHCODEC is not None:
        libs.append(("torchcodec", TORCHCODEC.decoders, TORCHCODEC))
    return libs


def check_batch(batch, indices, truth, *, nhwc: bool = False) -> None:
    """`batch` holds frames `indices` of the ntsc clip: pixels, pts, durations."""
    assert type(batch).__name__ == "FrameBatch"
    assert batch.pts_seconds.dtype == torch.float64 and batch.duration_seconds.dtype == torch.float64
    assert batch.pts_seconds.tolist() == pytest.approx([truth[i][0] for i in indices], abs=1e-9)
    assert batch.duration_seconds.tolist() == pytest.approx([truth[i][1] for i in indices], abs=1e-9)
    assert tuple(batch.data.shape) == ((len(indices), 240, 320, 3) if nhwc else (len(indices), 3, 240, 320))
    for data, i in zip(batch.data, indices, strict=True):
        rgb = data if nhwc else data.permute(1, 2, 0)
        assert torch.equal(rgb, torch.from_numpy(truth[i][2])), f"frame {i}"


def check_frame(frame, index, truth) -> None:
    assert type(frame).__name__ == "Frame"
    assert isinstance(frame.pts_seconds, float) and isinstance(frame.duration_seconds, float)
    assert frame.pts_seconds == pytest.approx(truth[index][0], abs=1e-9)
    assert frame.duration_seconds == pytest.approx(truth[index][1], abs=1e-9)
    assert torch.equal(frame.data.permute(1, 2, 0), torch.from_numpy(truth[index][2]))


# -- argument forms both libraries accept -------------------------------------------------------

BATCH_CALLS = {
    "range stop=None": (lambda d: d.get_frames_in_range(start=-3, stop=None), [27, 28, 29]),
    "range start=None": (lambda d: d.get_frames_in_range(start=None, stop=3), [0, 1, 2]),
    "range step=None": (lambda d: d.get_frames_in_range(0, 3, None), [0, 1, 2]),
    "range step 2": (lambda d: d.get_frames_in_range(0, 9, 2), [0, 2, 4, 6, 8]),
    "range clamped": (lambda d: d.get_frames_in_range(-100, 1000, 10), [0, 10, 20]),
    "range 0-d tensors": (lambda d: d.get_frames_in_range(torch.tensor(1), torch.tensor(4)), [1, 2, 3]),
    "range numpy ints": (lambda d: d.get_frames_in_range(np.int64(2), np.int32(4)), [2, 3]),
    "at float tensor": (lambda d: d.get_frames_at(torch.tensor([0, 10], dtype=torch.float)), [0, 10]),
    "at float64 tensor": (lambda d: d.get_frames_at(torch.tensor([12.0, 3.0], dtype=torch.float64)), [12, 3]),
    "at float16 tensor": (lambda d: d.get_frames_at(torch.tensor([5, 1], dtype=torch.float16)), [5, 1]),
    "at int32 tensor": (lambda d: d.get_frames_at(torch.tensor([0, 10], dtype=torch.int32)), [0, 10]),
    "at uint8 tensor": (lambda d: d.get_frames_at(torch.tensor([7, 7], dtype=torch.uint8)), [7, 7]),
    "at int8 negative": (lambda d: d.get_frames_at(torch.tensor([-1, -30], dtype=torch.int8)), [29, 0]),
    "at 0-d tensor": (lambda d: d.get_frames_at(torch.tensor(3)), [3]),
    "at int": (lambda d: d.get_frames_at(3), [3]),
    "at tuple": (lambda d: d.get_frames_at((1, 2)), [1, 2]),
    "at range": (lambda d: d.get_frames_at(range(3)), [0, 1, 2]),
    "at numpy": (lambda d: d.get_frames_at(np.array([4, 1])), [4, 1]),
    "at list of 0-d tensors": (lambda d: d.get_frames_at([torch.tensor(1), torch.tensor(2)]), [1, 2]),
    "at unsorted duplicates": (lambda d: d.get_frames_at([20, 3, 20, 0]), [20, 3, 20, 0]),
    "played at list": (lambda d: d.get_frames_played_at([0.5, 0.1]), [14, 2]),
    "played at ints": (lambda d: d.get_frames_played_at([0, 0]), [0, 0]),
    "played at int tensor": (lambda d: d.get_frames_played_at(torch.tensor([0])), [0]),
    "played at float32 tensor": (lambda d: d.get_frames_played_at(torch.tensor([0.5, 0.1])), [14, 2]),
    "played at float16 tensor": (lambda d: d.get_frames_played_at(torch.tensor([0.5], dtype=torch.float16)), [14]),
    "played at 0-d tensor": (lambda d: d.get_frames_played_at(torch.tensor(0.5)), [14]),
    "played at float": (lambda d: d.get_frames_played_at(0.5), [14]),
    "played at numpy": (lambda d: d.get_frames_played_at(np.array([0.5])), [14]),
    "played in range": (lambda d: d.get_frames_played_in_range(0.1, 0.3), [2, 3, 4, 5, 6, 7, 8]),
    "played in range tensors": (lambda d: d.get_frames_played_in_range(torch.tensor(0.1), torch.tensor(0.2)),
                                [2, 3, 4, 5]),
    "played in empty range": (lambda d: d.get_frames_played_in_range(0.1, 0.1), []),
    "all frames": (lambda d: d.get_all_frames(), list(range(NUM_FRAMES))),
    "slice": (lambda d: FrameBatch(d[2:8:3], torch.zeros(2), torch.zeros(2)), [2, 5]),
}


@pytest.mark.parametrize("name", list(BATCH_CALLS))
def test_batch_argument_forms(name, ntsc, truth):
    call, indices = BATCH_CALLS[name]
    for lib, decoders, _ in libraries():
        batch = call(decoders.VideoDecoder(ntsc))
        if name == "slice":  # no timestamps from __getitem__
            assert batch.data.shape == (len(indices), 3, 240, 320), lib
            for data, i in zip(batch.data, indices, strict=True):
                assert torch.equal(data.permute(1, 2, 0), torch.from_numpy(truth[i][2])), lib
            continue
        check_batch(batch, indices, truth)


FRAME_CALLS = {
    "at int": (lambda d: d.get_frame_at(3), 3),
    "at negative": (lambda d: d.get_frame_at(-1), 29),
    "at numpy int": (lambda d: d.get_frame_at(np.int64(2)), 2),
    "at int tensor": (lambda d: d.get_frame_at(torch.tensor(2)), 2),
    "at whole float tensor": (lambda d: d.get_frame_at(torch.tensor(2.0)), 2),
    "at bool": (lambda d: d.get_frame_at(True), 1),
    "played at int": (lambda d: d.get_frame_played_at(0), 0),
    "played at tensor": (lambda d: d.get_frame_played_at(torch.tensor(0.5)), 14),
    "played at numpy": (lambda d: d.get_frame_played_at(np.float32(0.5)), 14),
}


@pytest.mark.parametrize("name", list(FRAME_CALLS))
def test_frame_argument_forms(name, ntsc, truth):
    call, index = FRAME_CALLS[name]
    for _, decoders, _ in libraries():
        check_frame(call(decoders.VideoDecoder(ntsc)), index, truth)


@pytest.mark.parametrize("key, index", [(3, 3), (-1, 29), (np.int32(2), 2), (True, 1)])
def test_getitem_keys(key, index, ntsc, truth):
    for _, decoders, _ in libraries():
        data = decoders.VideoDecoder(ntsc)[key]
        assert torch.equal(data.permute(1, 2, 0), torch.from_numpy(truth[index][2]))


def test_nhwc_and_file_like_sources(ntsc, truth):
    with open(ntsc, "rb") as f:
        raw = f.read()
    for _, decoders, _ in libraries():
        for source in (raw, io.BytesIO(raw), torch.frombuffer(bytearray(raw), dtype=torch.uint8)):
            decoder = decoders.VideoDecoder(source, dimension_order="NHWC")
            check_batch(decoder.get_frames_at([1, 28]), [1, 28], truth, nhwc=True)


def test_approximate_mode_reports_each_frames_own_duration(ntsc, truth):
    """Skipping undecoded B-frames between requested frames must not stretch durations (0.0334 s, not 0.0667)."""
    for _, decoders, _ in libraries():
        decoder = decoders.VideoDecoder(ntsc, seek_mode="approximate")
        check_batch(decoder.get_frames_in_range(0, 9, 2), [0, 2, 4, 6, 8], truth)
        check_batch(decoder.get_frames_at([0, 5, 2]), [0, 5, 2], truth)
        check_batch(decoder.get_frames_played_at([0, 0.5, 0.2]), [0, 14, 5], truth)
        check_batch(decoder.get_all_frames(), list(range(NUM_FRAMES)), truth)


@pytest.mark.parametrize("mode", ["exact", "approximate"])
def test_fps_resampling_matches_torchcodec(mode, ntsc, truth):
    """`fps=`: round((stop - start) * fps) samples at start + k / fps, reported
    with those times and 1 / fps durations, pixels of the frame shown then."""
    for _, decoders, _ in libraries():
        decoder = decoders.VideoDecoder(ntsc, seek_mode=mode)
        for batch, start, count, fps in [(decoder.get_frames_played_in_range(0, 0.5, fps=10), 0.0, 5, 10),
                                         (decoder.get_all_frames(fps=5), 0.0, 5, 5),
                                         (decoder.get_frames_played_in_range(0.2, 0.9, fps=7.5), 0.2, 5, 7.5)]:
            times = [start + k * (1 / fps) for k in range(count)]
            assert batch.pts_seconds.tolist() == pytest.approx(times)
            assert batch.duration_seconds.tolist() == pytest.approx([1 / fps] * count)
            for data, t in zip(batch.data, times, strict=True):
                shown = max(i for i, (pts, _, _) in enumerate(truth) if pts <= t)
                assert torch.equal(data.permute(1, 2, 0), torch.from_numpy(truth[shown][2]))


# -- errors: same type (framefeed's may add a second base), torchcodec's phrase ---------------

def _decoder_call(method, *a, **kw):
    return lambda d: getattr(d.VideoDecoder(PATH[0]), method)(*a, **kw)


PATH: list[str] = []  # set by the `errors_path` fixture: the lambdas below read it at call time

ERROR_CASES = {
    # name: (call on the decoders module, exception types, phrase)
    "range float bound": (_decoder_call("get_frames_in_range", 0.0, 3), (TypeError,),
                          "slice indices must be integers or None or have an __index__ method"),
    "range step 0": (_decoder_call("get_frames_in_range", 0, 3, 0), (ValueError,), "slice step cannot be zero"),
    "at index past end": (_decoder_call("get_frames_at", [0, 30]), (IndexError,),
                          "Invalid frame index=30"),
    "frame_at index past end": (_decoder_call("get_frame_at", 30), (IndexError,), "Invalid frame index=30"),
    "frame_at negative past start": (_decoder_call("get_frame_at", -31), (IndexError,),
                                     "negative indices must have an absolute value less than the number of frames"),
    "frame_at float": (_decoder_call("get_frame_at", 2.0), (RuntimeError,),
                       "Expected a value of type 'int' for argument 'frame_index' but instead found type 'float'"),
    "frame_at str": (_decoder_call("get_frame_at", "2"), (RuntimeError,),
                     "Expected a value of type 'int' for argument 'frame_index' but instead found type 'str'"),
    "frame_at None": (_decoder_call("get_frame_at", None), (RuntimeError,),
                      "Expected a value of type 'int' for argument 'frame_index'"),
    "at list of floats": (_decoder_call("get_frames_at", [0.0, 2.0]), (RuntimeError,),
                          ("expected scalar type Long but found Float",  # 0.13; 0.17 spells the types longer
                           "expected scalar type torch::headeronly::ScalarType::Long but found Float")),
    "at str": (_decoder_call("get_frames_at", "12"), (TypeError,), ""),
    "getitem float": (lambda d: d.VideoDecoder(PATH[0])[2.0], (TypeError,),
                      "Unsupported key type: <class 'float'>. Supported types are int and slice."),
    "getitem tensor": (lambda d: d.VideoDecoder(PATH[0])[torch.tensor(2)], (TypeError,),
                       "Unsupported key type: <class 'torch.Tensor'>"),
    "getitem list": (lambda d: d.VideoDecoder(PATH[0])[[1, 2]], (TypeError,), "Unsupported key type: <class 'list'>"),
    "getitem past end": (lambda d: d.VideoDecoder(PATH[0])[30], (IndexError,), "Invalid frame index=30"),
    "played_at negative": (_decoder_call("get_frame_played_at", -0.1), (IndexError,),
                           "Invalid pts in seconds: -0.1. It must be greater than or equal to 0"),
    "played_at NaN": (_decoder_call("get_frame_played_at", float("nan")), (IndexError,), "Invalid pts in seconds: nan"),
    "played_at str": (_decoder_call("get_frame_played_at", "0.1"), (TypeError,), ""),
    "played_at None": (_decoder_call("get_frame_played_at", None), (TypeError,), ""),
    "playeds past end": (_decoder_call("get_frames_played_at", [0.5, 5]), (RuntimeError,),
                         "frame pts is 5.000000; must be less than 1.001000"),
    "playeds negative": (_decoder_call("get_frames_played_at", [-0.5]), (RuntimeError,),
                         "frame pts is -0.500000; must be greater than or equal to 0.000000"),
    "playeds NaN": (_decoder_call("get_frames_played_at", [float("nan")]), (RuntimeError,), "frame pts is nan"),
    "playeds str": (_decoder_call("get_frames_played_at", "0.5"), (ValueError,),
                    "Couldn't convert timestamps input to a tensor"),
    "playeds list of str": (_decoder_call("get_frames_played_at", ["0.5"]), (ValueError,),
                            "Couldn't convert timestamps input to a tensor"),
    "played range reversed": (_decoder_call("get_frames_played_in_range", 0.3, 0.1), (ValueError,),
                              "Invalid start seconds: 0.3. It must be less than or equal to stop seconds (0.1)."),
    "played range start before": (_decoder_call("get_frames_played_in_range", -1, 0.1), (ValueError,),
                                  "Invalid start seconds: -1. It must be greater than or equal to 0"),
    "played range stop after": (_decoder_call("get_frames_played_in_range", 0, 5), (ValueError,),
                                "Invalid stop seconds: 5. It must be less than or equal to 1.001"),
    "played range fps 0": (_decoder_call("get_frames_played_in_range", 0, 0.5, fps=0), (RuntimeError, ValueError),
                           "fps must be positive, got 0"),
    "played range None": (_decoder_call("get_frames_played_in_range", 0.1, None), (TypeError,), ""),
    "seek mode": (lambda d: d.VideoDecoder(PATH[0], seek_mode="fast"), (ValueError,),
                  "Invalid seek mode (fast). Supported values are exact, approximate."),
    "seek mode custom without mappings": (lambda d: d.VideoDecoder(PATH[0], seek_mode="custom_frame_mappings"),
                                          (ValueError,), "Invalid seek mode (custom_frame_mappings)."),
    "dimension order": (lambda d: d.VideoDecoder(PATH[0], dimension_order="CHW"), (ValueError,),
                        "Invalid dimension order (CHW). Supported values are NCHW, NHWC."),
    "threads None": (lambda d: d.VideoDecoder(PATH[0], num_ffmpeg_threads=None), (ValueError,),
                     "num_ffmpeg_threads = None should be an int."),
    "threads float": (lambda d: d.VideoDecoder(PATH[0], num_ffmpeg_threads=2.0), (RuntimeError,),
                      "Expected a value of type 'Optional[int]' for argument 'num_threads'"),
    "stream index": (lambda d: d.VideoDecoder(PATH[0], stream_index=5), (ValueError,),
                     "The stream index 5 is not a valid stream."),
    "stream index str": (lambda d: d.VideoDecoder(PATH[0], stream_index="0"), (TypeError,), ""),
    "device type": (lambda d: d.VideoDecoder(PATH[0], device="mps"), (RuntimeError,), "Unknown device type: mps"),
    "device int": (lambda d: d.VideoDecoder(PATH[0], device=0), (RuntimeError,),
                   ("Expected a value of type 'str' for argument 'device'", "Unknown device type: 0")),  # 0.13, 0.17
    "source int": (lambda d: d.VideoDecoder(3), (TypeError,),
                   "Unknown source type: <class 'int'>. Supported types are"),
    "source text file": (lambda d: d.VideoDecoder(io.StringIO("x")), (TypeError,),
                         "source is for reading text, likely from open(..., 'r'). Try with 'rb' for binary reading?"),
    "source missing": (lambda d: d.VideoDecoder("/nonexistent/video.mp4"), (RuntimeError,),
                       "Could not open input file"),
    "source garbage bytes": (lambda d: d.VideoDecoder(b"garbage" * 100), (RuntimeError,),
                             "Failed to open input buffer: Invalid data found when processing input"),
    "source empty bytes": (lambda d: d.VideoDecoder(b""), (ValueError,), ""),
    "source float tensor": (lambda d: d.VideoDecoder(torch.zeros(10)), (RuntimeError,), "video_tensor must be kUInt8"),
    "mappings with approximate": (lambda d: d.VideoDecoder(PATH[0], seek_mode="approximate",
                                                           custom_frame_mappings='{"frames": []}'), (ValueError,),
                                  "custom_frame_mappings is incompatible with seek_mode='approximate'. Use "
                                  "seek_mode='custom_frame_mappings' or leave it unspecified"),
    "mappings bad JSON": (lambda d: d.VideoDecoder(PATH[0], custom_frame_mappings="{frames"), (ValueError,),
                          "Invalid custom frame mappings: Expecting property name enclosed in double quotes"),
    "mappings without frames": (lambda d: d.VideoDecoder(PATH[0], custom_frame_mappings='{"foo": 1}'), (ValueError,),
                                "Invalid custom frame mappings. The input is empty or missing the required "
                                "'frames' key."),
    "mappings list": (lambda d: d.VideoDecoder(PATH[0], custom_frame_mappings="[1, 2]"), (ValueError,),
                      "The input is empty or missing the required 'frames' key."),
    "mappings missing keys": (lambda d: d.VideoDecoder(PATH[0], custom_frame_mappings='{"frames": [{"pts": 0}]}'),
                              (ValueError,), "The 'pts'/'pkt_pts', 'duration'/'pkt_duration', and 'key_frame' "
                              "keys are required in the frame metadata"),
    "mappings int": (lambda d: d.VideoDecoder(PATH[0], custom_frame_mappings=5), (TypeError,),
                     "the JSON object must be str, bytes or bytearray, not int"),
    "Frame 2-D": (lambda d: FRAME_CLASS[d].Frame(torch.zeros(2, 3), 0, 0), (ValueError,),
                  "data must be 3-dimensional, got self.data.shape = torch.Size([2, 3])"),
    "Frame 4-D": (lambda d: FRAME_CLASS[d].Frame(torch.zeros(1, 2, 3, 4), 0, 0), (ValueError,),
                  "data must be 3-dimensional"),
    "Frame list": (lambda d: FRAME_CLASS[d].Frame([[[1]]], 0, 0), (AttributeError,), "has no attribute"),
    "Frame pts None": (lambda d: FRAME_CLASS[d].Frame(torch.zeros(3, 2, 2), None, 1), (TypeError,),
                       "float() argument must be a string or a real number"),
    "FrameBatch 2-D": (lambda d: FRAME_CLASS[d].FrameBatch(torch.zeros(2, 3), torch.zeros(()), torch.zeros(())),
                       (ValueError,), "data must be at least 3-dimensional, got self.data.shape = torch.Size([2, 3])"),
    "FrameBatch leading dims": (lambda d: FRAME_CLASS[d].FrameBatch(torch.zeros(2, 3, 4, 4), torch.zeros(3),
                                                                    torch.zeros(2)), (ValueError,),
                                "Tried to create a FrameBatch but the leading dimensions of the inputs do not match. "
                                "Got self.data.shape = torch.Size([2, 3, 4, 4]) so we expected the shape of "
                                "pts_seconds and duration_seconds to be leading_dims = torch.Size([2]), but got "
                                "self.pts_seconds.shape = torch.Size([3]) and self.duration_seconds.shape = "
                                "torch.Size([2])."),
    "FrameBatch list timestamps": (lambda d: FRAME_CLASS[d].FrameBatch(torch.zeros(2, 3, 4, 4), [0, 1], [0, 1]),
                                   (AttributeError,), "has no attribute 'shape'"),
    "FrameBatch iterate single frame": (lambda d: list(FRAME_CLASS[d].FrameBatch(torch.zeros(3, 4, 4),
                                                                                 torch.tensor(1.), torch.tensor(1.))),
                                        (TypeError,), "iteration over a 0-d tensor"),
}

FRAME_CLASS: dict = {}


@pytest.fixture
def errors_path(ntsc):
    PATH[:] = [ntsc]
    FRAME_CLASS.clear()
    for _, decoders, top in libraries():
        FRAME_CLASS[decoders] = top


@pytest.mark.parametrize("name", list(ERROR_CASES))
def test_errors_keep_torchcodec_types_and_phrases(name, errors_path):
    """A phrase that changed between torchcodec releases is a tuple, one per
    wording: framefeed's message holds every one, torchcodec's its release's."""
    call, types, phrases = ERROR_CASES[name]
    phrases = (phrases,) if isinstance(phrases, str) else phrases
    for lib, decoders, _ in libraries():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(types) as raised:
                call(decoders)
        found = [phrase in str(raised.value) for phrase in phrases]
        assert all(found) if lib == "framefeed" else any(found), f"{lib}: {raised.value}"


# Where torchcodec 0.13 is wrong or refuses what framefeed's contract allows.
DEVIATIONS = {
    # torchcodec: garbage index read from a 2-D tensor; framefeed reads indices flattened.
    "2-D index tensor": lambda d: d.get_frames_at(torch.tensor([[0, 1], [2, 3]])).pts_seconds.tolist(),
    # torchcodec: RuntimeError (it builds a float tensor); an empty request is an empty batch.
    "empty index list": lambda d: tuple(d.get_frames_at([]).data.shape),
    # torchcodec: RuntimeError allocating an empty output; Python slices may be empty.
    "empty slice": lambda d: tuple(d[5:2].shape),
    # torchcodec: "Step must be greater than 0"; the contract gives Python slice semantics.
    "negative step": lambda d: d.get_frames_in_range(5, 0, -2).pts_seconds.tolist(),
    # torchcodec rejects the seek mode its own error message recommends.
    "seek_mode=custom_frame_mappings": lambda d: len(VideoDecoder(
        PATH[0], seek_mode="custom_frame_mappings", custom_frame_mappings=_mappings_json(PATH[0]))),
}


@pytest.mark.parametrize("name", list(DEVIATIONS))
def test_framefeed_stays_right_where_torchcodec_is_wrong(name, errors_path, truth):
    result = DEVIATIONS[name](VideoDecoder(PATH[0]))
    expected = {
        "2-D index tensor": pytest.approx([truth[i][0] for i in range(4)]),
        "empty index list": (0, 3, 240, 320),
        "empty slice": (0, 3, 240, 320),
        "negative step": pytest.approx([truth[i][0] for i in (5, 3, 1)]),
        "seek_mode=custom_frame_mappings": NUM_FRAMES,
    }[name]
    assert result == expected


def test_fractional_and_boolean_indices_are_refused(ntsc):
    """torchcodec truncates 0.5 to frame 0 and reads a bool mask as indices 1/0;
    the contract asks for whole-valued index tensors."""
    decoder = VideoDecoder(ntsc)
    with pytest.raises(TypeError, match="whole numbers, got 0.5"):
        decoder.get_frames_at(torch.tensor([0.5, 10]))
    with pytest.raises(TypeError, match="mask"):
        decoder.get_frames_at(torch.tensor([True, False]))


# -- Frame, FrameBatch, metadata, CpuFallbackStatus -------------------------------------------

def test_frame_and_batch_behave_alike():
    for _, _, top in libraries():
        frame = top.Frame(torch.zeros(3, 2, 2), torch.tensor(0.5), torch.tensor(1))
        assert (frame.pts_seconds, frame.duration_seconds) == (0.5, 1.0)
        assert repr(frame) == "Frame:\n  data (shape): torch.Size([3, 2, 2])\n  pts_seconds: 0.5\n  duration_seconds: 1.0\n"
        assert top.Frame(np.zeros((2, 3, 4)), 0, 0).data.shape == (2, 3, 4)  # any 3-D data
        batch = top.FrameBatch(torch.zeros(3, 3, 4, 4), torch.arange(3.0), torch.zeros(3))
        assert repr(batch).startswith("FrameBatch:\n  data (shape): torch.Size([3, 3, 4, 4])\n  pts_seconds: tensor(")
        data, pts, duration = batch
        assert type(data).__name__ == "FrameBatch" and data.pts_seconds.item() == 0.0
        assert [b.pts_seconds.item() for b in batch[torch.tensor([True, False, True])]] == [0.0, 2.0]
        assert len(top.FrameBatch(torch.zeros(3, 4, 4), torch.tensor(1.0), torch.tensor(1.0))) == 3


def test_metadata_fields_and_values(ntsc):
    import dataclasses

    decoders = {lib: mod.VideoDecoder(ntsc) for lib, mod, _ in libraries()}
    ours = decoders["framefeed"].metadata
    assert ours.num_frames == NUM_FRAMES and ours.average_fps_from_header == pytest.approx(30000 / 1001)
    if "torchcodec" in decoders:
        theirs = decoders["torchcodec"].metadata
        names = {f.name for f in dataclasses.fields(theirs)}
        assert names <= {f.name for f in dataclasses.fields(ours)}
        # torchcodec reports an unknown pixel aspect ratio as Fraction(0, 1); the contract says None.
        for name in names - {"pixel_aspect_ratio"}:
            a, b = getattr(ours, name), getattr(theirs, name)
            assert a == pytest.approx(b) if isinstance(b, float) else a == b, name
        for name in ("num_frames", "duration_seconds", "begin_stream_seconds", "end_stream_seconds", "average_fps"):
            assert getattr(ours, name) == pytest.approx(getattr(theirs, name)), name


def test_cpu_fallback_status_signature_and_words(ntsc):
    for _, decoders, _ in libraries():
        status = decoders.VideoDecoder(ntsc).cpu_fallback
        assert not status and "Fallback status: No fallback required" in str(status)
        assert str(status).startswith("[CPU] ")
        assert not decoders.CpuFallbackStatus() and not decoders.CpuFallbackStatus(status_known=True)
    assert str(CpuFallbackStatus(status_known=False)) == "[CPU] Fallback status: Unknown"
    fell_back = CpuFallbackStatus("cuda:0", True, "odd frame size 321x241")
    assert fell_back and str(fell_back).startswith("[CUDA] Fallback status: Falling back due to: odd frame size")


# -- samplers: same clips for the same seed, same errors ---------------------------------------

SAMPLER_CASES = [
    ("clips_at_random_indices", dict(num_clips=3, num_frames_per_clip=4, num_indices_between_frames=3)),
    ("clips_at_random_indices", dict(num_clips=torch.tensor(2))),
    ("clips_at_regular_indices", dict(num_clips=4, num_frames_per_clip=2, sampling_range_end=-5)),
    ("clips_at_random_timestamps", dict(num_clips=3, num_frames_per_clip=3, seconds_between_frames=0.1)),
    ("clips_at_random_timestamps", dict(seconds_between_frames=torch.tensor(0.1), num_frames_per_clip=2)),
    ("clips_at_regular_timestamps", dict(seconds_between_clip_starts=0.25, num_frames_per_clip=3,
                                         seconds_between_frames=0.2)),
    ("clips_at_regular_timestamps", dict(seconds_between_clip_starts=0.3, sampling_range_start=torch.tensor(0.1))),
]


@pytest.mark.parametrize("sampler, kwargs", SAMPLER_CASES)
@pytest.mark.parametrize("mode", ["exact", "approximate"])
def test_samplers_match_torchcodec_for_the_same_seed(sampler, kwargs, mode, ntsc, truth):
    results = []
    for lib, decoders, _ in libraries():
        module = ff_samplers if lib == "framefeed" else TORCHCODEC.samplers
        torch.manual_seed(1234)
        clips = getattr(module, sampler)(decoders.VideoDecoder(ntsc, seek_mode=mode), **kwargs)
        assert clips.data.ndim == 5 and clips.pts_seconds.shape == clips.data.shape[:2]
        for data, pts in zip(clips.data.flatten(0, 1), clips.pts_seconds.flatten().tolist(), strict=True):
            index = min(range(NUM_FRAMES), key=lambda i: abs(truth[i][0] - pts))
            assert torch.equal(data.permute(1, 2, 0), torch.from_numpy(truth[index][2]))
        results.append((clips.pts_seconds, clips.duration_seconds))
    if len(results) == 2:
        assert torch.allclose(results[0][0], results[1][0]) and torch.allclose(results[0][1], results[1][1])


SAMPLER_ERRORS = [
    ("clips_at_random_indices", dict(num_clips=0), ValueError, "num_clips (0) must be > 0"),
    ("clips_at_regular_indices", dict(num_frames_per_clip=0), ValueError,
     "num_frames_per_clip (0) must be strictly positive"),
    ("clips_at_random_indices", dict(num_indices_between_frames=0), ValueError,
     "num_indices_between_frames (0) must be strictly positive"),
    ("clips_at_random_indices", dict(policy="foo"), ValueError, "Invalid policy (foo). Supported values are"),
    ("clips_at_random_indices", dict(sampling_range_start=30), ValueError,
     "sampling_range_start (30) must be smaller than the number of frames (30)"),
    ("clips_at_regular_indices", dict(sampling_range_start=29, num_frames_per_clip=5), ValueError,
     "We determined that sampling_range_end should be 26, but it is smaller than or equal to sampling_range_start (29)"),
    ("clips_at_random_indices", dict(sampling_range_start=5, sampling_range_end=5), ValueError,
     "sampling_range_start (5) must be smaller than sampling_range_end (5)"),
    ("clips_at_random_indices", dict(num_frames_per_clip=3, policy="error", sampling_range_start=28,
                                     sampling_range_end=30), ValueError,
     "You set the 'error' policy, and the sampler tried to decode a frame that is beyond the number of frames"),
    ("clips_at_random_indices", dict(num_clips="2"), TypeError, ""),
    ("clips_at_random_indices", dict(num_clips=2.0), TypeError, ""),
    ("clips_at_random_timestamps", dict(num_clips=0), ValueError, "num_clips (0) must be > 0"),
    ("clips_at_random_timestamps", dict(seconds_between_frames=-1), ValueError, "must be > 0"),
    ("clips_at_random_timestamps", dict(sampling_range_start=-1), ValueError,
     "sampling_range_start (-1"),
    ("clips_at_random_timestamps", dict(sampling_range_start=2), ValueError, "sampling_range_start (2"),
    ("clips_at_random_timestamps", dict(sampling_range_end=0), ValueError, "sampling_range_end (0"),
    ("clips_at_random_timestamps", dict(sampling_range_start=0.5, sampling_range_end=0.5), ValueError,
     "sampling_range_start (0.5) must be smaller than sampling_range_end (0.5)"),
    ("clips_at_regular_timestamps", dict(seconds_between_clip_starts=0), ValueError,
     "seconds_between_clip_starts (0) must be > 0"),
    ("clips_at_regular_timestamps", dict(seconds_between_clip_starts=0.3, policy="bar"), ValueError,
     "Invalid policy (bar)"),
    ("clips_at_regular_timestamps", dict(seconds_between_clip_starts="1"), TypeError, ""),
]


@pytest.mark.parametrize("sampler, kwargs, error, phrase", SAMPLER_ERRORS)
def test_sampler_errors(sampler, kwargs, error, phrase, ntsc):
    for lib, decoders, _ in libraries():
        module = ff_samplers if lib == "framefeed" else TORCHCODEC.samplers
        with pytest.raises(error) as raised:
            getattr(module, sampler)(decoders.VideoDecoder(ntsc), **kwargs)
        assert phrase in str(raised.value), f"{lib}: {raised.value}"


# -- custom_frame_mappings ---------------------------------------------------------------------

def _mappings(path: str, *, old_names: bool = False) -> dict:
    """The frame table as `ffprobe -show_frames -of json` writes it, from PyAV's decode."""
    pts_key, duration_key = ("pkt_pts", "pkt_duration") if old_names else ("pts", "duration")
    with av.open(path) as container:
        frames = [{pts_key: f.pts, duration_key: f.duration, "key_frame": int(f.key_frame), "pict_type": "x"}
                  for f in container.decode(video=0)]
    return {"frames": frames}


def _mappings_json(path: str, **kw) -> str:
    return json.dumps(_mappings(path, **kw))


@pytest.mark.parametrize("form", ["str", "bytes", "text file", "binary file", "pkt names", "reversed order"])
def test_custom_frame_mappings_replace_the_scan(form, ntsc, truth):
    table = _mappings(ntsc, old_names=form == "pkt names")
    if form == "reversed order":
        table["frames"].reverse()
    text = json.dumps(table)
    source = {"bytes": text.encode(), "text file": io.StringIO(text), "binary file": io.BytesIO(text.encode())}
    for lib, decoders, _ in libraries():
        if lib == "torchcodec" and form == "reversed order":
            continue  # torchcodec takes the first entry's pts as the stream's start, not the smallest
        if hasattr(source.get(form), "seek"):
            source[form].seek(0)
        decoder = decoders.VideoDecoder(ntsc, custom_frame_mappings=source.get(form, text))
        assert len(decoder) == NUM_FRAMES
        if lib == "framefeed":  # torchcodec's metadata object predates the table: its content fields stay None
            assert decoder.metadata.num_frames_from_content == NUM_FRAMES
            assert decoder.metadata.end_stream_seconds == pytest.approx(1.001)
        check_batch(decoder.get_frames_at([29, 0, 13]), [29, 0, 13], truth)
        check_batch(decoder.get_frames_played_at([0.5]), [14], truth)
        check_frame(decoder.get_frame_at(7), 7, truth)
        if lib == "framefeed":
            assert decoder._timeline.index.built_from == "custom-frame-mappings"
            assert "custom_frame_mappings" in repr(decoder)


def test_mappings_in_the_exact_seek_mode_are_used(ntsc, truth):
    decoder = VideoDecoder(ntsc, seek_mode="exact", custom_frame_mappings=_mappings_json(ntsc))
    assert decoder._timeline.index.built_from == "custom-frame-mappings"
    check_batch(decoder.get_frames_in_range(0, 30, 7), [0, 7, 14, 21, 28], truth)


@pytest.mark.parametrize("name", ["B-frames, long GOP", "Matroska", "edit list with discarded packets"])
def test_mappings_on_corpus_files_equal_the_scan(name):
    entry = corpus.BY_NAME[{"B-frames, long GOP": "h264_bframes_long_gop.mp4", "Matroska": "h264_bframes.mkv",
                            "edit list with discarded packets": "discard_edit_list.mp4"}[name]]
    scanned = VideoDecoder(entry.path)
    mapped = VideoDecoder(entry.path, custom_frame_mappings=_mappings_json(str(entry.path)))
    assert len(mapped) == len(scanned)
    indices = [0, len(scanned) - 1, len(scanned) // 2, 1]
    a, b = scanned.get_frames_at(indices), mapped.get_frames_at(indices)
    assert torch.equal(a.data, b.data) and torch.equal(a.pts_seconds, b.pts_seconds)
    assert torch.equal(a.duration_seconds, b.duration_seconds)


@pytest.mark.parametrize("change, phrase", [
    ("drop the last 3 frames", "lists 27 frames but the video stream"),
    ("drop 2 frames in the middle", "lists 28 frames but the video stream"),
    ("shift every pts by 7", "the stream has a frame with pts 0"),
    ("milliseconds instead of the time base", "that the table lacks"),
    ("duplicate a pts", "appears more than once"),
    ("no key frame", "no frame has key_frame=1"),
    ("empty frame list", "'frames' must be a non-empty list"),
    ("pts not a number", "needs integer 'pts'"),
])
def test_mappings_that_contradict_the_file_are_clear_errors(change, phrase, ntsc):
    frames = _mappings(ntsc)["frames"]
    frames = {
        "drop the last 3 frames": lambda: frames[:-3],
        "drop 2 frames in the middle": lambda: frames[:10] + frames[12:],
        "shift every pts by 7": lambda: [dict(f, pts=f["pts"] + 7) for f in frames],
        "milliseconds instead of the time base": lambda: [dict(f, pts=round(f["pts"] * 1001 / 30)) for f in frames],
        "duplicate a pts": lambda: frames[:5] + [frames[4]] + frames[6:],
        "no key frame": lambda: [dict(f, key_frame=0) for f in frames],
        "empty frame list": lambda: [],
        "pts not a number": lambda: frames[:3] + [dict(frames[3], pts="N/A")] + frames[4:],
    }[change]()
    with pytest.raises(ValueError, match="custom.frame.mappings|custom frame mappings") as raised:
        VideoDecoder(ntsc, custom_frame_mappings=json.dumps({"frames": frames}))
    assert phrase in str(raised.value)


# -- torch.compile(fullgraph=True) -------------------------------------------------------------

@pytest.mark.parametrize("dimension_order", ["NCHW", "NHWC"])
def test_compiled_functions_decode_without_graph_breaks(dimension_order, ntsc):
    torch._dynamo.reset()
    decoder = VideoDecoder(ntsc, dimension_order=dimension_order)

    def frame_at(i):
        frame = decoder.get_frame_at(i)
        return frame.data.float().mean() + frame.pts_seconds, frame.data

    def batches(indices):
        batch = decoder.get_frames_at(indices)
        shown = decoder.get_frames_played_at([0.1, 0.5])
        ranged = decoder.get_frames_in_range(0, 6, 2)
        return batch.data, batch.pts_seconds, shown.data, ranged.duration_seconds, decoder[3], decoder[1:3]

    def played(t):
        return decoder.get_frame_played_at(t).data.float() / 255

    eager_scalar, eager_frame = frame_at(3)
    scalar, frame = torch.compile(frame_at, fullgraph=True)(3)
    assert torch.equal(frame, eager_frame) and torch.allclose(scalar.double(), torch.as_tensor(eager_scalar).double())
    indices = torch.tensor([5, 1, 5])
    for compiled, eager in zip(torch.compile(batches, fullgraph=True)(indices), batches(indices), strict=True):
        assert compiled.shape == eager.shape and torch.equal(compiled, eager)
    assert torch.equal(torch.compile(played, fullgraph=True)(0.5), played(0.5))


def test_compiled_decoding_with_transforms_has_the_transformed_shape(ntsc):
    from framefeed.transforms import CenterCrop, Resize

    torch._dynamo.reset()
    decoder = VideoDecoder(ntsc, transforms=[Resize((120, 160)), CenterCrop((100, 100))])
    compiled = torch.compile(lambda i: decoder.get_frames_at(i).data, fullgraph=True)
    out = compiled(torch.tensor([0, 4]))
    assert out.shape == (2, 3, 100, 100) and torch.equal(out, decoder.get_frames_at([0, 4]).data)


def test_eager_calls_do_not_go_through_the_custom_ops(ntsc, monkeypatch):
    from framefeed import _ops

    def refuse(*args, **kwargs):
        raise AssertionError("eager call went through a custom op")

    for name in ("frame_at", "frames_at", "frames_in_range", "frame_played_at", "frames_played_at",
                 "frames_played_in_range", "all_frames", "getitem"):
        monkeypatch.setattr(_ops, name, refuse)
    decoder = VideoDecoder(ntsc)
    decoder.get_frame_at(1), decoder.get_frames_at([1]), decoder.get_frames_in_range(0, 2), decoder[0]
    decoder.get_frame_played_at(0.1), decoder.get_frames_played_at([0.1])
    decoder.get_frames_played_in_range(0, 0.1), decoder.get_all_frames()
