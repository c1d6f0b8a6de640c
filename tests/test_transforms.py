"""Decoder transforms (`VideoDecoder(transforms=[...])`) against independent references.

- Reference pixels: the decoder's own untransformed frames (pinned to PyAV and
  the ffmpeg CLI by the corpus tests), cropped by slicing and resized by
  Pillow's bilinear `Image.resize` (`reducing_gap=None`: its exact two-pass
  convolution, antialiased when shrinking), an implementation of its own:
  framefeed's torch interpolation must stay within 1 of it everywhere, with
  a mean |difference| of at most 0.25 (the two round their intermediate pass
  differently: on the corpus up to 17% of the values differ, by 1, for some
  scale factors, and none for others). A wrong filter, offset or missing
  antialiasing misses by far more on these textured frames. Where torchvision
  imports, its v2 `Resize` (bilinear, antialiased) must also be met exactly.
- torchcodec 0.13, when it imports: the same transforms must give the same
  crops and a Resize within a mean |difference| of 1 (it scales with FFmpeg's
  bilinear filter), and RandomCrop the same window after the same seed.
"""

from __future__ import annotations

import types
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import corpus
from framefeed import VideoDecoder
from framefeed import samplers as ff_samplers
from framefeed.transforms import CenterCrop, RandomCrop, Resize

try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torchcodec.decoders as tc_decoders
        import torchcodec.transforms as tc_transforms
except Exception:  # noqa: BLE001 - needs FFmpeg's shared libraries
    tc_decoders = tc_transforms = None

try:
    from torchvision.transforms import v2 as tv2
except Exception:  # noqa: BLE001 - absent, or a build that does not load with this torch
    tv2 = None

needs_torchcodec = pytest.mark.skipif(tc_decoders is None, reason="torchcodec is not importable")
needs_torchvision = pytest.mark.skipif(tv2 is None, reason="torchvision is not importable")

FILES = ["h264_bframes_long_gop.mp4", "rotated_90.mp4", "odd_321x241.webm", "h264_10bit.mp4", "vp9.webm"]
INDICES = [0, 7, 19]


def full_frames(name: str) -> torch.Tensor:
    return VideoDecoder(corpus.BY_NAME[name].path).get_frames_at(INDICES).data


def pillow_resize(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, 3, H, W) uint8 frames resized to `size` = (height, width) by Pillow, frame by frame."""
    resized = []
    for frame in frames:
        image = Image.fromarray(frame.permute(1, 2, 0).contiguous().numpy())
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR, reducing_gap=None)
        resized.append(torch.from_numpy(np.array(image)).permute(2, 0, 1))
    return torch.stack(resized)


def torchvision_resize(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return tv2.Resize(size, antialias=True)(frames)


def reference(frames: torch.Tensor, steps: list[tuple], resize=pillow_resize) -> torch.Tensor:
    for kind, value in steps:
        if kind == "resize":
            frames = resize(frames, value)
        else:
            top, left, height, width = value
            frames = frames[..., top : top + height, left : left + width]
    return frames


def assert_transformed(got: torch.Tensor, full: torch.Tensor, steps: list[tuple]) -> None:
    """`got` (NCHW) is `full` put through `steps`: crops exactly; with a
    resize, within 1 of Pillow (mean at most 0.25), and equal to torchvision
    where it imports."""
    expected = reference(full, steps)
    assert got.shape == expected.shape
    if not any(kind == "resize" for kind, _ in steps):
        assert torch.equal(got, expected)
        return
    difference = (got.int() - expected.int()).abs()
    assert difference.max() <= 1, difference.max()
    assert difference.float().mean() <= 0.25, difference.float().mean()
    if tv2 is not None:
        assert torch.equal(got, reference(full, steps, torchvision_resize))


def centre(size: tuple[int, int], crop: tuple[int, int]) -> tuple[int, int, int, int]:
    # torchvision: int(round((in - out) / 2.0)); FFmpeg's crop filter rounds halves to even too.
    return round((size[0] - crop[0]) / 2.0), round((size[1] - crop[1]) / 2.0), *crop


PIPELINES = {
    "shrink": lambda h, w: ([Resize((h // 2, w // 3))], [("resize", (h // 2, w // 3))]),
    "grow": lambda h, w: ([Resize((h + 37, w * 2))], [("resize", (h + 37, w * 2))]),
    "odd centre crop": lambda h, w: ([CenterCrop((h - 39, w - 51))], [("crop", centre((h, w), (h - 39, w - 51)))]),
    "crop resize crop": lambda h, w: (
        [CenterCrop((h - 40, w - 40)), Resize((64, 96)), CenterCrop((50, 51))],
        [("crop", centre((h, w), (h - 40, w - 40))), ("resize", (64, 96)), ("crop", centre((64, 96), (50, 51)))],
    ),
    "resize then crop": lambda h, w: ([Resize((100, 120)), CenterCrop((90, 90))],
                                      [("resize", (100, 120)), ("crop", centre((100, 120), (90, 90)))]),
    "resize twice": lambda h, w: ([Resize((90, 100)), Resize((45, 50))], [("resize", (90, 100)), ("resize", (45, 50))]),
}


@pytest.mark.parametrize("pipeline", list(PIPELINES))
@pytest.mark.parametrize("name", FILES)
def test_transforms_equal_the_reference_on_full_frames(name, pipeline):
    full = full_frames(name)
    height, width = full.shape[-2:]
    transforms, steps = PIPELINES[pipeline](height, width)
    decoder = VideoDecoder(corpus.BY_NAME[name].path, transforms=transforms)
    assert_transformed(decoder.get_frames_at(INDICES).data, full, steps)
    assert (decoder.metadata.height, decoder.metadata.width) == (height, width)  # the stream's own size


@needs_torchcodec
@pytest.mark.parametrize("pipeline", list(PIPELINES))
@pytest.mark.parametrize("name", FILES)
def test_transforms_match_torchcodec(name, pipeline):
    path = corpus.BY_NAME[name].path
    height, width = full_frames(name).shape[-2:]
    ours, _ = PIPELINES[pipeline](height, width)
    theirs = [getattr(tc_transforms, type(t).__name__)(t.size) for t in ours]
    got = VideoDecoder(path, transforms=ours).get_frames_at(INDICES).data
    expected = tc_decoders.VideoDecoder(path, transforms=theirs).get_frames_at(INDICES).data
    assert got.shape == expected.shape
    difference = (got.int() - expected.int()).abs().float().mean().item()
    if any(isinstance(t, Resize) for t in ours):
        assert difference <= 1.0
    else:
        assert difference == 0.0


@pytest.mark.parametrize("seed", [0, 7, 12345])
def test_random_crop_draws_like_torchvision(seed):
    name = "h264_bframes_long_gop.mp4"
    full = full_frames(name)
    torch.manual_seed(seed)
    top = int(torch.randint(0, 240 - 100 + 1, size=()).item())
    left = int(torch.randint(0, 320 - 150 + 1, size=()).item())
    after = torch.rand(3)
    torch.manual_seed(seed)
    decoder = VideoDecoder(corpus.BY_NAME[name].path, transforms=[RandomCrop((100, 150))])
    assert torch.equal(torch.rand(3), after)  # exactly two draws, at creation
    for _ in range(2):  # the same window for every frame, every call
        assert torch.equal(decoder.get_frames_at(INDICES).data, full[..., top : top + 100, left : left + 150])
    if tv2 is not None:
        torch.manual_seed(seed)
        assert torch.equal(decoder.get_frames_at(INDICES).data, tv2.RandomCrop((100, 150))(full))
    if tc_decoders is not None:
        torch.manual_seed(seed)
        theirs = tc_decoders.VideoDecoder(corpus.BY_NAME[name].path, transforms=[tc_transforms.RandomCrop((100, 150))])
        assert torch.equal(decoder.get_frames_at(INDICES).data, theirs.get_frames_at(INDICES).data)


def test_every_method_and_sampler_honours_transforms():
    entry = corpus.BY_NAME["h264_bframes_long_gop.mp4"]
    reference_decoder = VideoDecoder(entry.path)
    for mode in ("exact", "approximate"):
        for order in ("NCHW", "NHWC"):
            decoder = VideoDecoder(entry.path, seek_mode=mode, dimension_order=order,
                                   transforms=[Resize((60, 80)), CenterCrop((50, 70))])
            frame = (50, 70, 3) if order == "NHWC" else (3, 50, 70)
            expected = decoder.get_frame_at(4).data  # checked against the references, then the other methods
            assert_transformed((expected.permute(2, 0, 1) if order == "NHWC" else expected)[None],
                               reference_decoder.get_frames_at([4]).data,
                               [("resize", (60, 80)), ("crop", centre((60, 80), (50, 70)))])
            assert torch.equal(decoder[4], expected)
            assert torch.equal(decoder.get_frame_played_at(4 / 25).data, expected)
            assert torch.equal(decoder.get_frames_at([4, 4]).data[1], expected)
            assert torch.equal(decoder.get_frames_played_at([4 / 25]).data[0], expected)
            assert decoder.get_frames_in_range(0, 10, 3).data.shape == (4, *frame)
            assert decoder[2:5].shape == (3, *frame)
            assert decoder.get_frames_played_in_range(0.0, 0.2).data.shape == (5, *frame)
            assert decoder.get_frames_played_in_range(0.0, 0.2, fps=10).data.shape == (2, *frame)
            assert decoder.get_all_frames().data.shape == (200, *frame)
            assert next(iter(decoder)).shape == frame
            assert (decoder.metadata.height, decoder.metadata.width) == (240, 320)
            for sampler, kwargs in [("clips_at_random_indices", dict(num_clips=2, num_frames_per_clip=3)),
                                    ("clips_at_regular_indices", dict(num_clips=2, num_frames_per_clip=3)),
                                    ("clips_at_random_timestamps", dict(num_clips=2, num_frames_per_clip=3)),
                                    ("clips_at_regular_timestamps", dict(seconds_between_clip_starts=3.0,
                                                                         num_frames_per_clip=3))]:
                clips = getattr(ff_samplers, sampler)(decoder, **kwargs)
                assert clips.data.shape[1:] == (3, *frame), sampler


def test_rotated_stream_is_transformed_after_rotation():
    name = "rotated_90.mp4"
    full = full_frames(name)
    assert full.shape[-2:] == (320, 240)
    decoder = VideoDecoder(corpus.BY_NAME[name].path, transforms=[CenterCrop((100, 50)), Resize((60, 40))])
    assert_transformed(decoder.get_frames_at(INDICES).data, full,
                       [("crop", centre((320, 240), (100, 50))), ("resize", (60, 40))])


@pytest.mark.parametrize("make, error, phrase", [
    (lambda: [Resize((10,))], ValueError, "Resize transform must have a (height, width) pair for the size, got (10,)."),
    (lambda: [CenterCrop((1, 2, 3))], ValueError, "CenterCrop transform must have a (height, width) pair"),
    (lambda: [RandomCrop([5])], ValueError, "RandomCrop transform must have a (height, width) pair"),
    (lambda: [Resize(10)], TypeError, "has no len()"),
    (lambda: [Resize((0, 10))], RuntimeError, "String must be a positive integer: 0"),
    (lambda: [Resize((-5, 10))], ValueError, "String must be a positive integer: -5"),
    (lambda: [CenterCrop((1000, 10))], RuntimeError, "Crop output height (1000) is greater than input height (240)"),
    (lambda: [CenterCrop((10, 1000))], ValueError, "Crop output width (1000) is greater than input width (320)"),
    (lambda: [Resize((20, 20)), CenterCrop((30, 10))], RuntimeError, "Crop output height (30) is greater"),
    (lambda: [RandomCrop((1000, 10))], ValueError, "Input dimensions (240, 320) are smaller than the crop size (1000, 10)."),
    (lambda: [lambda frame: frame], ValueError, "Unsupported transform"),
    (lambda: Resize((10, 10)), TypeError, "not iterable"),
])
def test_transform_errors(make, error, phrase):
    path = corpus.BY_NAME["h264_bframes_long_gop.mp4"].path
    with pytest.raises(error) as raised:
        VideoDecoder(path, transforms=make())
    assert phrase in str(raised.value)


def test_empty_and_none_transforms_change_nothing():
    path = corpus.BY_NAME["h264_bframes_long_gop.mp4"].path
    plain = VideoDecoder(path).get_frames_at(INDICES).data
    for transforms in (None, [], ()):
        assert torch.equal(VideoDecoder(path, transforms=transforms).get_frames_at(INDICES).data, plain)


# -- torchvision v2 and torchcodec transform objects ---------------------------------------------

def torchvision_like(name: str, **attributes):
    """An object that looks like torchvision.transforms.v2.<name> to the converter
    (module and class name, plus the attributes torchvision sets), for machines
    where torchvision is not installed."""
    cls = type(name, (), {"__module__": "torchvision.transforms.v2._geometry",
                          "__repr__": lambda self: f"{name}({attributes})"})
    obj = cls()
    for key, value in attributes.items():
        setattr(obj, key, value)
    return obj


BILINEAR = types.SimpleNamespace(value="bilinear")
NEAREST = types.SimpleNamespace(value="nearest")


def test_torchvision_like_objects_are_converted():
    path = corpus.BY_NAME["h264_bframes_long_gop.mp4"].path
    native = VideoDecoder(path, transforms=[Resize((100, 120)), CenterCrop((90, 90))]).get_frames_at(INDICES).data
    converted = VideoDecoder(path, transforms=[
        torchvision_like("Resize", size=[100, 120], interpolation=BILINEAR, antialias=True, max_size=None),
        torchvision_like("CenterCrop", size=(90, 90)),
    ]).get_frames_at(INDICES).data
    assert torch.equal(native, converted)
    torch.manual_seed(3)
    a = VideoDecoder(path, transforms=[RandomCrop((50, 60))]).get_frames_at(INDICES).data
    torch.manual_seed(3)
    b = VideoDecoder(path, transforms=[torchvision_like("RandomCrop", size=(50, 60), padding=None, pad_if_needed=False,
                                                        fill={torch.Tensor: 0}, padding_mode="constant")])
    assert torch.equal(a, b.get_frames_at(INDICES).data)


@pytest.mark.parametrize("transform, phrase", [
    (torchvision_like("Resize", size=[100, 120], interpolation=NEAREST, antialias=True), "bilinear interpolation"),
    (torchvision_like("Resize", size=[100, 120], interpolation=BILINEAR, antialias=False), "antialias enabled"),
    (torchvision_like("Resize", size=[100], interpolation=BILINEAR, antialias=True), "(height, width) pair"),
    (torchvision_like("Resize", size=None, interpolation=BILINEAR, antialias=True), "must have a size specified"),
    (torchvision_like("Resize", size=[100, 120], interpolation=BILINEAR, antialias=True, max_size=200), "max_size"),
    (torchvision_like("CenterCrop", size=[100]), "(height, width) pair"),
    (torchvision_like("RandomCrop", size=(5, 5), padding=[2], pad_if_needed=False, fill=0, padding_mode="constant"),
     "must not specify padding"),
    (torchvision_like("RandomCrop", size=(5, 5), padding=None, pad_if_needed=True, fill=0, padding_mode="constant"),
     "must not specify pad_if_needed"),
    (torchvision_like("RandomCrop", size=(5, 5), padding=None, pad_if_needed=False, fill=3, padding_mode="constant"),
     "fill must be 0"),
    (torchvision_like("RandomCrop", size=(5, 5), padding=None, pad_if_needed=False, fill=0, padding_mode="reflect"),
     "padding_mode must be constant"),
    (torchvision_like("ColorJitter"), "Unsupported transform"),
])
def test_torchvision_options_that_cannot_apply_are_refused(transform, phrase):
    with pytest.raises(ValueError) as raised:
        VideoDecoder(corpus.BY_NAME["h264_bframes_long_gop.mp4"].path, transforms=[transform])
    assert phrase in str(raised.value)


@needs_torchvision
def test_real_torchvision_transforms():
    path = corpus.BY_NAME["h264_bframes_long_gop.mp4"].path
    full = full_frames("h264_bframes_long_gop.mp4")
    pipeline = [tv2.Resize((100, 120)), tv2.CenterCrop((90, 91))]
    got = VideoDecoder(path, transforms=pipeline).get_frames_at(INDICES).data
    assert torch.equal(got, tv2.Compose(pipeline)(full))
    with pytest.raises(ValueError, match="padding"):
        VideoDecoder(path, transforms=[tv2.RandomCrop((10, 10), padding=2)])
    with pytest.raises(ValueError, match="Unsupported transform"):
        VideoDecoder(path, transforms=[tv2.ColorJitter()])


@needs_torchcodec
def test_torchcodec_transform_objects_are_accepted():
    path = corpus.BY_NAME["h264_bframes_long_gop.mp4"].path
    ours = VideoDecoder(path, transforms=[Resize((100, 120))]).get_frames_at(INDICES).data
    theirs = VideoDecoder(path, transforms=[tc_transforms.Resize((100, 120))]).get_frames_at(INDICES).data
    assert torch.equal(ours, theirs)


@pytest.mark.cuda
def test_cuda_transforms_match_the_cpu():
    path = corpus.BY_NAME["h264_bframes_long_gop.mp4"].path
    transforms = [CenterCrop((200, 300)), Resize((100, 120))]
    cpu = VideoDecoder(path, transforms=transforms).get_frames_at(INDICES).data
    cuda = VideoDecoder(path, device="cuda", transforms=transforms).get_frames_at(INDICES).data
    assert cuda.device.type == "cuda" and cuda.shape == cpu.shape
    assert (cuda.cpu().int() - cpu.int()).abs().float().mean() <= 1.0
