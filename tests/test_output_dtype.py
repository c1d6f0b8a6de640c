"""`output_dtype` (torchcodec 0.17) on every surface: `VideoDecoder`, the samplers,
`DecodePool`, `ClipDataset`/`ClipLoader` (the service and Ray have theirs in
test_serve.py and test_ray.py), on the CPU, the emulated NVDEC and (cuda-marked) a GPU.

Ground truth, independent of framefeed's code:
- the ffmpeg command line's 16-bit conversion (`-pix_fmt rgb48le`) divided by
  65535, which is how torchcodec 0.17 computes float32 on the CPU (its own
  tests hold it to that reference); skipped without an `ffmpeg` executable;
- framefeed's own uint8 output / 255, within the documented distance (the
  16-bit conversion keeps what 8-bit rounding drops: <= 4/255);
- for the NVDEC kernel's float output, float64 arithmetic from the standard
  matrix definitions on the planes' samples (10-bit precision kept: no uint8
  step), and the CPU path's float32 within the documented distance.
"""

from __future__ import annotations

import math
import shutil
import subprocess

import numpy as np
import pytest
import torch
from backends_under_test import open_decoder

import corpus
from framefeed import VideoDecoder
from framefeed import _arguments as args
from framefeed.samplers import (
    clips_at_random_indices,
    clips_at_random_timestamps,
    clips_at_regular_indices,
    clips_at_regular_timestamps,
)

FFMPEG = shutil.which("ffmpeg")
TEN_BIT = "hevc_10bit.mkv"  # 40 frames of 320x240, yuv420p10le, open GOP; NVDEC decodes it
TEN_BIT_444 = "hevc_444_10bit.mp4"
EIGHT_BIT = "h264_bframes_long_gop.mp4"
ROTATED = "rotated_90.mp4"


def path(name: str) -> str:
    return str(corpus.BY_NAME[name].path)


def ffmpeg_rgb48(name: str, frames: int) -> np.ndarray:
    """The first `frames` frames as `ffmpeg -pix_fmt rgb48le` writes them, / 65535 in float32, NHWC."""
    entry = corpus.BY_NAME[name]
    raw = subprocess.run([FFMPEG, "-v", "error", "-i", str(entry.path), "-map", f"0:{entry.video_stream_index}",
                          "-frames:v", str(frames), "-fps_mode", "passthrough", "-pix_fmt", "rgb48le",
                          "-f", "rawvideo", "-"], capture_output=True, check=True, timeout=300).stdout
    decoder = VideoDecoder(entry.path)
    samples = np.frombuffer(raw, "<u2").reshape(-1, decoder.metadata.height, decoder.metadata.width, 3)
    return samples.astype(np.float32) / np.float32(65535)


def _torchcodec_with_output_dtype():
    """torchcodec when it imports and has `output_dtype` (0.14 and later: outside CI,
    `benchmarks/torchcodec017_compare.py` runs this file in such an environment)."""
    import inspect
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torchcodec.decoders
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return None
    parameters = inspect.signature(torchcodec.decoders.VideoDecoder.__init__).parameters
    return torchcodec if "output_dtype" in parameters else None


TORCHCODEC = _torchcodec_with_output_dtype()
needs_torchcodec_output_dtype = pytest.mark.skipif(TORCHCODEC is None,
                                                   reason="needs torchcodec >= 0.14 (output_dtype)")

# Where torchcodec 0.17 is wrong on its usual FFmpeg (Debian's 5.1): swscale's 16-bit
# output of 8-bit 4:2:2 there is off by up to 255/255 from its own uint8 frames.
TORCHCODEC_WRONG = {"h264_422.mp4"}
COMPARED = [TEN_BIT, "h264_10bit.mp4", TEN_BIT_444, EIGHT_BIT, "full_range_bt709.mp4", ROTATED, "odd_321x241.webm",
            "limited_bt709.mkv", "vp9.webm", "hevc_444.mp4", "h264_422.mp4"]


@needs_torchcodec_output_dtype
@pytest.mark.parametrize("mode", ["exact", "approximate"])
@pytest.mark.parametrize("requested", [torch.uint8, torch.float32, "auto"], ids=["uint8", "float32", "auto"])
@pytest.mark.parametrize("name", COMPARED)
def test_frames_equal_torchcodecs_for_every_output_dtype(name, requested, mode, corpus_files):
    """The call on both libraries: same dtype, same values, bit for bit (where
    torchcodec is right: see TORCHCODEC_WRONG)."""
    indices = [0, 5, 2, 5]
    ours = VideoDecoder(path(name), output_dtype=requested, seek_mode=mode).get_frames_at(indices)
    theirs = TORCHCODEC.decoders.VideoDecoder(path(name), output_dtype=requested, seek_mode=mode).get_frames_at(
        indices)
    assert ours.data.dtype == theirs.data.dtype and ours.data.shape == theirs.data.shape
    assert torch.equal(ours.pts_seconds, theirs.pts_seconds)
    if name in TORCHCODEC_WRONG and theirs.data.dtype == torch.float32:
        eight_bit = VideoDecoder(path(name)).get_frames_at(indices).data.to(torch.float32) / 255
        assert float((ours.data - eight_bit).abs().max()) <= 3 / 255  # framefeed: right
        assert float((theirs.data - eight_bit).abs().max()) > 0.5  # torchcodec: still wrong
        return
    assert torch.equal(ours.data, theirs.data), float((ours.data.float() - theirs.data.float()).abs().max())


@needs_torchcodec_output_dtype
@pytest.mark.parametrize("value", [torch.float16, "float32", None])
def test_bad_output_dtypes_raise_what_torchcodec_raises(value, corpus_files):
    raised = []
    for decoders in (TORCHCODEC.decoders, __import__("framefeed").decoders):
        with pytest.raises(ValueError) as error:
            decoders.VideoDecoder(path(EIGHT_BIT), output_dtype=value)
        raised.append(str(error.value))
    assert raised[0] == raised[1]


# -- the argument ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [torch.float16, torch.uint16, torch.float64, "float32", "uint8", "AUTO", None, 1,
                                   np.float32, [torch.uint8]])
def test_a_bad_output_dtype_names_the_value_and_the_allowed_ones(value, corpus_files):
    with pytest.raises(ValueError) as raised:
        VideoDecoder(path(EIGHT_BIT), output_dtype=value)
    # torchcodec 0.17's words, value included
    assert str(raised.value) == (f"Invalid output_dtype ({value}). Supported values are torch.uint8, "
                                 "torch.float32, and 'auto'.")


def test_output_dtype_is_checked_in_torchcodecs_order(corpus_files):
    """After dimension_order and num_ffmpeg_threads, before the device and the source."""
    with pytest.raises(ValueError, match="Invalid dimension order"):
        VideoDecoder(path(EIGHT_BIT), dimension_order="CHW", output_dtype=torch.int8)
    with pytest.raises(ValueError, match="Invalid output_dtype"):
        VideoDecoder("/nonexistent.mp4", device="mps", output_dtype=torch.int8)


@pytest.mark.parametrize("pixel_format, expected", [
    ("yuv420p", torch.uint8), ("yuvj420p", torch.uint8), ("yuv444p", torch.uint8), ("nv12", torch.uint8),
    ("yuv420p10le", torch.float32), ("yuv444p12le", torch.float32), ("p010le", torch.float32),
    ("gray10le", torch.float32), ("rgb24", torch.uint8), (None, torch.uint8), ("no-such-format", torch.uint8),
])
def test_auto_is_float32_above_8_bits_per_sample(pixel_format, expected):
    assert args.resolve_output_dtype("auto", pixel_format) == expected
    assert args.resolve_output_dtype(torch.uint8, pixel_format) == torch.uint8
    assert args.resolve_output_dtype(torch.float32, pixel_format) == torch.float32


# -- VideoDecoder on the CPU ----------------------------------------------------------------------------


def _every_method(decoder: VideoDecoder) -> dict[str, tuple[torch.Tensor, list[int]]]:
    """Pixels of each decoding method and the frame indices they hold (the stream is constant-rate)."""
    fps = decoder.metadata.average_fps
    begin = decoder.metadata.begin_stream_seconds
    t = [begin + (i + 0.5) / fps for i in range(len(decoder))]
    return {
        "getitem": (decoder[3][None], [3]),
        "slice": (decoder[1:7:2], [1, 3, 5]),
        "iteration": (torch.stack([f for _, f in zip(range(2), iter(decoder), strict=False)]), [0, 1]),
        "get_frame_at": (decoder.get_frame_at(-1).data[None], [len(decoder) - 1]),
        "get_frames_at": (decoder.get_frames_at([5, 0, 5]).data, [5, 0, 5]),
        "get_frames_in_range": (decoder.get_frames_in_range(2, 5).data, [2, 3, 4]),
        "get_frame_played_at": (decoder.get_frame_played_at(t[4]).data[None], [4]),
        "get_frames_played_at": (decoder.get_frames_played_at([t[6], t[1]]).data, [6, 1]),
        "get_frames_played_in_range": (decoder.get_frames_played_in_range(t[2], t[4]).data, [2, 3, 4]),
        "get_frames_played_in_range fps": (decoder.get_frames_played_in_range(t[0], t[8], fps=fps / 2).data,
                                           [0, 2, 4, 6]),
        "get_all_frames": (decoder.get_all_frames().data, list(range(len(decoder)))),
    }


@pytest.mark.parametrize("mode", ["exact", "approximate"])
@pytest.mark.parametrize("name", [TEN_BIT, ROTATED])
@pytest.mark.parametrize("requested", [torch.float32, "auto"])
def test_every_method_returns_the_requested_dtype_in_both_seek_modes(name, requested, mode, corpus_files):
    """Every decoding method in float32 (or what "auto" decides), in both
    dimension orders: the float frames are the uint8 decoder's frames to
    within the 16-bit conversion's difference (<= 4/255), in [0, 1]."""
    expected = torch.float32 if requested == torch.float32 or corpus.BY_NAME[name].ten_bit else torch.uint8
    eight_bit = VideoDecoder(path(name), seek_mode=mode, dimension_order="NHWC")
    reference = eight_bit.get_all_frames().data.to(torch.float32) / 255
    for order in ("NCHW", "NHWC"):
        decoder = VideoDecoder(path(name), seek_mode=mode, dimension_order=order, output_dtype=requested)
        for method, (data, indices) in _every_method(decoder).items():
            assert data.dtype == expected, (method, data.dtype)
            nhwc = data if order == "NHWC" else data.permute(0, 2, 3, 1)
            assert nhwc.shape == (len(indices), decoder.metadata.height, decoder.metadata.width, 3), method
            if expected == torch.uint8:
                assert torch.equal(nhwc, eight_bit.get_frames_at(indices).data), method
                continue
            difference = (nhwc - reference[indices]).abs()
            assert float(difference.max()) <= 4 / 255 and float(difference.mean()) <= 1 / 255, method
            assert float(nhwc.min()) >= 0.0 and float(nhwc.max()) <= 1.0


@pytest.mark.skipif(FFMPEG is None, reason="no ffmpeg executable on PATH")
@pytest.mark.parametrize("name", [TEN_BIT, "h264_10bit.mp4", TEN_BIT_444, EIGHT_BIT, "full_range_bt709.mp4",
                                  ROTATED, "odd_321x241.webm"])
def test_cpu_float32_equals_ffmpegs_16_bit_rgb_over_65535(name, corpus_files):
    """torchcodec 0.17's CPU values: swscale's 16-bit RGB / 65535 (10-bit
    precision kept), bit for bit, 8- and 10-bit, both ranges, rotated, odd size."""
    expected = ffmpeg_rgb48(name, 8)
    decoder = VideoDecoder(path(name), dimension_order="NHWC", output_dtype=torch.float32)
    ours = decoder.get_frames_in_range(0, len(expected)).data.numpy()
    assert np.array_equal(ours, expected), float(np.abs(ours - expected).max() * 65535)
    if corpus.BY_NAME[name].ten_bit:  # more than 256 levels per channel: not an 8-bit round trip
        assert len(np.unique(ours[..., 1])) > 300


def test_4_2_2_float32_is_the_uint8_frames_within_3_levels(corpus_files):
    """torchcodec 0.17 on Debian's FFmpeg 5.1 returns 8-bit 4:2:2 in float32 up to
    255/255 away from its own uint8 frames (that swscale's 16-bit 4:2:2 output is
    wrong); framefeed's FFmpeg converts it right."""
    ours = VideoDecoder(path("h264_422.mp4"), output_dtype=torch.float32).get_all_frames().data
    eight_bit = VideoDecoder(path("h264_422.mp4")).get_all_frames().data.to(torch.float32) / 255
    assert float((ours - eight_bit).abs().max()) <= 3 / 255


def test_float32_frames_follow_the_decoder_transforms(corpus_files):
    """Transforms apply to float frames as to uint8 ones: crops are the full
    float frame's windows; a resize is torch's antialiased bilinear, in float32."""
    from framefeed.transforms import CenterCrop, Resize

    full = VideoDecoder(path(TEN_BIT), output_dtype=torch.float32).get_frames_at([0, 9]).data
    cropped = VideoDecoder(path(TEN_BIT), output_dtype=torch.float32, transforms=[CenterCrop((100, 120))])
    assert torch.equal(cropped.get_frames_at([0, 9]).data, full[:, :, 70:170, 100:220])
    resized = VideoDecoder(path(TEN_BIT), output_dtype=torch.float32, transforms=[Resize((60, 80))])
    frames = resized.get_frames_at([0, 9]).data
    expected = torch.nn.functional.interpolate(full, size=(60, 80), mode="bilinear", antialias=True)
    assert frames.dtype == torch.float32 and torch.allclose(frames, expected, atol=1e-5)


def test_torch_compile_fake_frames_have_the_output_dtype(corpus_files):
    from framefeed import _ops

    decoder = VideoDecoder(path(TEN_BIT), output_dtype="auto")
    assert _ops._fake_pixels(decoder, 3).dtype == torch.float32
    assert _ops._fake_pixels(VideoDecoder(path(EIGHT_BIT), output_dtype="auto"), 3).dtype == torch.uint8


# -- samplers, pool, loader: they follow the decoder ------------------------------------------------------


SAMPLERS = [
    (clips_at_random_indices, dict(num_clips=2, num_frames_per_clip=3)),
    (clips_at_regular_indices, dict(num_clips=2, num_frames_per_clip=2, num_indices_between_frames=3)),
    (clips_at_random_timestamps, dict(num_clips=2, num_frames_per_clip=2)),
    (clips_at_regular_timestamps, dict(seconds_between_clip_starts=0.5, num_frames_per_clip=2)),
]


@pytest.mark.parametrize("mode", ["exact", "approximate"])
@pytest.mark.parametrize("sampler, kwargs", SAMPLERS, ids=[s.__name__ for s, _ in SAMPLERS])
def test_samplers_return_the_decoders_dtype(sampler, kwargs, mode, corpus_files):
    torch.manual_seed(3)
    clips = sampler(VideoDecoder(path(TEN_BIT), seek_mode=mode, output_dtype="auto"), **kwargs)
    torch.manual_seed(3)
    eight = sampler(VideoDecoder(path(TEN_BIT), seek_mode=mode), **kwargs)
    assert clips.data.dtype == torch.float32 and clips.data.ndim == 5
    assert torch.equal(clips.pts_seconds, eight.pts_seconds)
    flat = clips.data.flatten(0, 1)
    index = {round(p, 6): i for i, p in enumerate(VideoDecoder(path(TEN_BIT)).get_all_frames().pts_seconds.tolist())}
    frames = VideoDecoder(path(TEN_BIT), output_dtype=torch.float32).get_frames_at(
        [index[round(p, 6)] for p in clips.pts_seconds.flatten().tolist()])
    assert torch.equal(flat, frames.data)


def test_pool_and_loader_return_what_the_decoder_returns(corpus_files):
    from framefeed.data import ClipDataset, ClipLoader
    from framefeed.pool import DecodePool, DecodeRequest

    ten, eight = path(TEN_BIT), path(EIGHT_BIT)
    with DecodePool("cpu", sessions=2) as pool:
        batch = pool.submit(ten, indices=[7, 1, 7], output_dtype=torch.float32).result()
        assert torch.equal(batch.data, VideoDecoder(ten, output_dtype=torch.float32).get_frames_at([7, 1, 7]).data)
        mapped = list(pool.map([ten, DecodeRequest(eight, indices=[0])], output_dtype="auto"))
        assert [b.data.dtype for b in mapped] == [torch.float32, torch.uint8]  # a request keeps its own dtype
        torch.manual_seed(0)
        futures = clips_at_random_indices(pool.videos([ten, eight], output_dtype=torch.float32), num_clips=2)
        assert [f.result().data.dtype for f in futures] == [torch.float32, torch.float32]
        assert pool.stats().peak_bytes_in_flight >= 3 * 320 * 240 * 3 * 4  # budgeted at 4 bytes a sample
    dataset = ClipDataset([ten, ten], sampler="regular_indices", num_clips=2, num_frames_per_clip=2,
                          output_dtype=torch.float32)
    expected = clips_at_regular_indices(VideoDecoder(ten, output_dtype=torch.float32), num_clips=2,
                                        num_frames_per_clip=2).data
    for batch in ClipLoader(dataset, batch_size=2):
        assert batch.data.dtype == torch.float32 and torch.equal(batch.data, torch.cat([expected, expected]))
    mixed = ClipDataset([ten, eight], sampler="regular_indices", num_clips=1, output_dtype="auto")
    with pytest.raises(ValueError, match="same dtype"):
        list(ClipLoader(mixed, batch_size=2))


# -- NVDEC: the kernel writes float32 itself ---------------------------------------------------------------


def _expected_float64(luma, cb, cr, spec, sample_shift):
    """Float64 RGB from the definitions: Y'CbCr from the samples at their own
    bit depth, the matrix from Kr and Kb; 4:2:0 chroma read as the kernel's
    documented sampling (bicubic vertical taps for 10/12 bits), clamped to [0, 1]."""
    from framefeed.engine.backends.gpu_decode.colour import SWSCALE_CHROMA_TAPS

    bits = spec.bit_depth
    y = (luma.double() / (1 << sample_shift)).floor()
    u, v = ((p.double() / (1 << sample_shift)).floor() for p in (cb, cr))
    height, width = y.shape
    if spec.chroma_shift_x:
        cols = torch.arange(width) // 2
        if spec.swscale_generic_path:
            rows_out = []
            for row in range(height):
                taps = SWSCALE_CHROMA_TAPS["odd" if row % 2 else ("row0" if row == 0 else
                                                                  "row2" if row == 2 else "even")]
                first = row // 2 - (1 if row % 2 else 2)
                picked = [min(max(first + k, 0), u.shape[0] - 1) for k in range(4)]
                rows_out.append([sum(t / 4096 * p[r] for t, r in zip(taps, picked, strict=True)) for p in (u, v)])
            u = torch.stack([r[0] for r in rows_out])[:, cols]
            v = torch.stack([r[1] for r in rows_out])[:, cols]
        else:
            rows = torch.arange(height) // 2
            u, v = u[rows][:, cols], v[rows][:, cols]
    top = (1 << bits) - 1
    if spec.full_range:
        yn, un, vn = y / top, (u - (1 << (bits - 1))) / top, (v - (1 << (bits - 1))) / top
    else:
        step = 1 << (bits - 8)
        yn, un, vn = (y - 16 * step) / (219 * step), (u - 128 * step) / (224 * step), (v - 128 * step) / (224 * step)
    kr, kb = spec.kr, spec.kb
    kg = 1 - kr - kb
    red = yn + 2 * (1 - kr) * vn
    green = yn - 2 * kb * (1 - kb) / kg * un - 2 * kr * (1 - kr) / kg * vn
    blue = yn + 2 * (1 - kb) * un
    return torch.stack((red, green, blue), dim=-1).clamp(0, 1)


@pytest.fixture(scope="module")
def host_kernel(tmp_path_factory):
    from host_kernels import compile_host_kernels

    library = compile_host_kernels(tmp_path_factory.mktemp("host-kernel-float"))
    if library is None:
        pytest.skip("no C++ compiler to run the kernel source on the CPU")
    return library


@pytest.mark.parametrize("pix_fmt, surface_format, shift", [
    ("yuv420p", "NV12", 0), ("yuv420p10le", "P016", 6), ("yuv420p12le", "P016", 4), ("yuv444p", "YUV444", 0),
    ("yuv444p10le", "YUV444_16Bit", 6),
])
@pytest.mark.parametrize("tags", [(5, 1), (1, 2), (9, 1)])
def test_the_kernels_float_output_is_the_reference_and_keeps_the_samples_precision(host_kernel, pix_fmt,
                                                                                   surface_format, shift, tags):
    """The kernel's own source, run on the CPU, writes float32 equal to the
    torch reference (`reference_rgb_float`), rotated, into a channels-first
    slot, plain and with a fused crop and resize; both are within float32
    rounding of float64 arithmetic on the samples (no uint8 step: 10 and 12
    bits survive)."""
    from host_kernels import run_on_host
    from test_gpu_colour import native_surface, synthetic_frame

    from framefeed.engine.backends.gpu_decode import colour
    from framefeed.engine.backends.gpu_decode.kernels import destination_walk, resample_tables
    from framefeed.engine.backends.gpu_decode.resampling import reference_resampled, resampling_for
    from framefeed.engine.backends.gpu_decode.surfaces import planes_of_tensor
    from framefeed.transforms import CenterCrop, Resize, resolve_transforms

    height, width, pitch, turns = 48, 64, 96, 1
    frame, _ = synthetic_frame(pix_fmt, width, height, "noise", seed=5)
    surface = native_surface(frame, surface_format)
    padded = torch.zeros(surface.shape[0], pitch, dtype=torch.int32)
    padded[:, :width] = surface
    storage = torch.from_numpy(padded.numpy().astype(np.uint16).view(np.int16)) if shift else padded.to(torch.uint8)
    planes = planes_of_tensor(storage, surface_format, width, height)
    spec = colour.colour_spec_for(pix_fmt, *tags)[0]
    luma, cb, cr = colour.native_planes(padded, surface_format, height, width)
    upright = colour.reference_rgb_float(luma, cb, cr, spec, sample_shift=shift)
    exact = _expected_float64(luma, cb, cr, spec, shift)
    assert float((upright.double() - exact).abs().max()) < 2e-6
    expected = torch.rot90(upright, turns, dims=(0, 1))
    batch = torch.zeros((2, 3, width, height), dtype=torch.float32)
    slot = batch[1].permute(1, 2, 0)
    run_on_host(host_kernel, planes, slot, destination_walk(tuple(slot.shape), tuple(slot.stride()), turns, height,
                                                             width), spec.coefficients(), shift,
                spec.chroma_shift_x, spec.chroma_shift_y)
    assert torch.equal(slot, expected) and batch[0].abs().sum() == 0
    if spec.bit_depth > 8:
        levels = slot[..., 1] * 255
        assert float((levels - levels.round()).abs().max()) > 0.2  # not whole 8-bit levels

    pipeline = resolve_transforms([Resize((40, 30)), CenterCrop((32, 24))], width, height)
    resampling = resampling_for(pipeline)
    tables, _tensors = resample_tables(resampling, turns, width, height, torch.device("cpu"))
    out = torch.zeros((32, 24, 3), dtype=torch.float32)
    run_on_host(host_kernel, planes, out, destination_walk(tuple(out.shape), tuple(out.stride()), 0, 32, 24),
                spec.coefficients(), shift, spec.chroma_shift_x, spec.chroma_shift_y, tables)
    assert torch.equal(out, reference_resampled(expected.contiguous(), resampling))
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0


# NVDEC's float32 against the CPU path's (swscale's 16-bit RGB): the kernel keeps nominal
# white at 1.0 where swscale's 16-bit limited-range white is 65283/65535, and 8-bit
# 4:2:0 goes through 8 bits in swscale.
NVDEC_VS_CPU = {TEN_BIT: (1.5 / 255, 0.75 / 255), EIGHT_BIT: (3.5 / 255, 2 / 255), TEN_BIT_444: (1.5 / 255, 0.75 / 255)}


@pytest.mark.parametrize("kind", ["emulated-nvdec", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("name", list(NVDEC_VS_CPU))
def test_nvdec_float32_is_the_cpus_within_the_documented_distance(kind, name, corpus_files):
    decoder = open_decoder(kind, path(name), output_dtype="auto", dimension_order="NHWC")
    cpu = VideoDecoder(path(name), output_dtype=torch.float32, dimension_order="NHWC")
    expected_dtype = torch.float32 if corpus.BY_NAME[name].ten_bit else torch.uint8
    assert not decoder.cpu_fallback, str(decoder.cpu_fallback)
    indices = [0, 9, 5, 5]
    assert decoder.get_frames_at(indices).data.dtype == expected_dtype
    decoder = open_decoder(kind, path(name), output_dtype=torch.float32, dimension_order="NHWC")
    for ours in (decoder.get_frames_at(indices).data, torch.stack([decoder[i] for i in indices])):
        assert ours.dtype == torch.float32
        difference = (ours.cpu() - cpu.get_frames_at(indices).data).abs()
        worst, mean = NVDEC_VS_CPU[name]
        assert float(difference.max()) <= worst and float(difference.mean()) <= mean, (
            float(difference.max()) * 255, float(difference.mean()) * 255)
        if corpus.BY_NAME[name].ten_bit:
            levels = ours[..., 1].cpu() * 255
            assert float((levels - levels.round()).abs().max()) > 0.2  # written as float, not via uint8


@pytest.mark.parametrize("kind", ["emulated-nvdec", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_nvdec_float32_with_fused_transforms_matches_the_cpu(kind, corpus_files):
    from framefeed.transforms import CenterCrop, Resize

    transforms = [Resize((120, 160)), CenterCrop((96, 128))]
    ours = open_decoder(kind, path(TEN_BIT), output_dtype=torch.float32, transforms=transforms).get_frames_at(
        [3, 30]).data.cpu()
    cpu = VideoDecoder(path(TEN_BIT), output_dtype=torch.float32, transforms=transforms).get_frames_at([3, 30]).data
    assert ours.shape == cpu.shape == (2, 3, 96, 128)
    difference = (ours - cpu).abs()
    assert float(difference.max()) <= 3 / 255 and float(difference.mean()) <= 1 / 255
    assert not math.isnan(float(ours.sum()))


# -- swscale's destination contract, for the 16-bit conversion -------------------------------------------


def _ffmpeg_rgb48_of_raw(pictures: list[tuple[int, int, str, bytes]]) -> list[np.ndarray]:
    """The ffmpeg CLI's `-pix_fmt rgb48le` conversion of raw pictures, one process, / 65535."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        command = [FFMPEG, "-v", "error", "-nostdin", "-y"]
        for i, (width, height, pix_fmt, raw) in enumerate(pictures):
            (work / f"{i}.raw").write_bytes(raw)
            command += ["-f", "rawvideo", "-pix_fmt", pix_fmt, "-s", f"{width}x{height}", "-i", str(work / f"{i}.raw")]
        for i in range(len(pictures)):
            command += ["-map", f"{i}:v", "-pix_fmt", "rgb48le", "-f", "rawvideo", str(work / f"{i}.rgb")]
        subprocess.run(command, check=True, capture_output=True, timeout=600)
        return [np.fromfile(work / f"{i}.rgb", dtype="<u2").reshape(height, width, 3).astype(np.float32)
                / np.float32(65535) for i, (width, height, _, _) in enumerate(pictures)]


@pytest.mark.skipif(FFMPEG is None, reason="no ffmpeg executable on PATH")
def test_the_16_bit_conversion_stays_inside_guarded_buffers_and_equals_ffmpeg():
    """Every width 1-40 (each residue of swscale's 16-pixel blocks) and 426 and
    854, heights 16 and 17, in 8-bit 4:2:0 (both ranges), 4:2:2 and 4:4:4,
    10-bit 4:2:0 and gray, rotated or not: swscale's 16-bit picture ends at a
    guard page (its last line's padding, no slack after it), so does the
    caller's float32 destination; every pixel equals ffmpeg's rgb48le / 65535,
    except where the ffmpeg command line (FFmpeg 5.1, which torchcodec 0.17 runs
    on here) is wrong: 8-bit 4:2:2 (off by up to 255/255), and the last column
    of odd-width 8-bit 4:2:0 and 4:2:2 pictures of even height, which swscale's
    special converter skips (FFmpeg 8) and framefeed converts on its own: that
    column is within 3/255 of the uint8 conversion's."""
    from buffer_contract_support import synthetic_frame

    from framefeed.engine.backends.cpu_fallback import float_output
    from framefeed.engine.backends.cpu_fallback.rgb import RgbConverter
    from framefeed.testing.guard_pages import guarded_tensor, run_in_child

    cases = [(width, height, pix_fmt) for pix_fmt in ("yuv420p", "yuvj420p", "yuv422p", "yuv444p", "yuv420p10le",
                                                      "gray")
             for width, height in [*((w, h) for w in range(1, 41) for h in (16, 17)), (426, 16), (853, 16)]
             if not (pix_fmt == "yuv420p10le" and width % 2)]  # swscale refuses odd 10-bit 4:2:0 widths
    frames = [synthetic_frame(width, height, pix_fmt, seed=width) for width, height, pix_fmt in cases]
    expected = _ffmpeg_rgb48_of_raw([(w, h, f, raw) for (w, h, f), (_, raw) in zip(cases, frames, strict=True)])

    def guarded_padded(height: int, width: int) -> torch.Tensor:
        line = -(-(width * 3 + 64) // 64) * 64  # `padded_rgb_picture`'s lines, without its trailing slack
        lines = guarded_tensor((height * line,), torch.uint8, "end").view(height, line)
        return lines[:, : width * 3].view(height, width, 3)

    def sweep() -> list[str]:
        float_output.padded_rgb_picture = guarded_padded  # in the child only
        failures = []
        for (width, height, pix_fmt), (frame, _), reference in zip(cases, frames, expected, strict=True):
            for turns in (0, 1):
                shape = (height, width, 3) if turns == 0 else (width, height, 3)
                dst = guarded_tensor(shape, torch.float32, "end" if width % 2 else "start")
                float_output.FloatRgbWriter(turns).write(frame, dst)
                ours = np.rot90(dst.numpy(), -turns, axes=(0, 1))
                case = f"{pix_fmt} {width}x{height} turns {turns}"
                columns = width
                if float_output._drops_last_column(frame):  # its last column: swscale's uint8 converter's
                    columns = width - 1
                    eight_bit = torch.empty((height, width, 3), dtype=torch.uint8)
                    RgbConverter().write(frame, eight_bit)
                    worst = np.abs(ours[:, -1] - eight_bit[:, -1].numpy() / np.float32(255)).max() * 255
                    if worst > 3.01:
                        failures.append(f"{case}: last column {worst:.2f}/255 from the uint8 conversion")
                if pix_fmt == "yuv422p":
                    continue
                if not np.array_equal(ours[:, :columns], reference[:, :columns]):
                    worst = np.abs(ours[:, :columns] - reference[:, :columns]).max() * 65535
                    failures.append(f"{case}: max |diff| {worst:.0f} / 65535")
        return failures

    failures = run_in_child(sweep, timeout_s=300)
    assert not failures, failures[:6]
