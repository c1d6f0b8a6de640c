"""Transforms fused into the NVDEC colour kernel, checked on the CPU (no GPU needed).

- The tap tables (`resampling.axis_taps`) against torch's own antialiased
  bilinear `interpolate`, applied in float64 to an identity matrix: that
  gives the exact linear map of any sequence of crops and resizes.
- The kernel's own source, compiled for the CPU (`host_kernels`), against
  the torch reference `reference_resampled`, bit for bit: every surface
  format, rotation, slot layout, and resizes up, down, odd and chained.
- The reference against the CPU path (`VideoDecoder(device="cpu",
  transforms=...)`: swscale, then torch's uint8 resize) on corpus frames:
  crops within 2 (exact for 10-bit 4:2:0), resizes within a mean |diff| of 1
  and a max of 6.
- The backend API: a pipeline in `BackendContext` reaches the NVDEC backend
  (the emulated decoder of `gpu_fixtures`), which applies it itself
  (`applied_transforms`) instead of being wrapped; other backends are wrapped.
"""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gpu_fixtures import emulated_nvdec_decoders
from host_kernels import compile_host_kernels, run_on_host

import corpus
from framefeed import VideoDecoder
from framefeed.engine.backends.gpu_decode.backend import NvdecBackend
from framefeed.engine.backends.gpu_decode.colour import (
    colour_spec_for,
    colour_spec_for_stream,
    native_planes,
    reference_rgb,
)
from framefeed.engine.backends.gpu_decode.kernels import destination_walk, resample_tables
from framefeed.engine.backends.gpu_decode.resampling import (
    AxisTaps,
    axis_taps,
    reference_resampled,
    resampling_for,
    resize_rows,
)
from framefeed.engine.backends.gpu_decode.surfaces import planes_of_tensor, surface_rows
from framefeed.engine.backends.registry import BackendContext, open_backend
from framefeed.engine.backends.transformed import TransformedBackend, with_transforms
from framefeed.engine.executor import DecodeSession, OutputBuffer
from framefeed.engine.opening import open_stream
from framefeed.transforms import CenterCrop, RandomCrop, Resize, resolve_transforms

# Pipelines as functions of the (rotated) input size; every kind the issue names.
PIPELINES = {
    "centre crop": lambda h, w: [CenterCrop((h - 11, w - 20))],
    "random crop": lambda h, w: [RandomCrop((h // 2, w // 3))],
    "down": lambda h, w: [Resize((h // 2, w // 3))],
    "down odd": lambda h, w: [Resize((h // 4 + 1, w // 5 + 1))],
    "down to 7x5": lambda h, w: [Resize((7, 5))],
    "down to 1x1": lambda h, w: [Resize((1, 1))],
    "up": lambda h, w: [Resize((h + 37, w * 2))],
    "up odd": lambda h, w: [Resize((2 * h + 1, 3 * w - 1))],
    "up and down": lambda h, w: [Resize((h * 3 // 4, w * 3 // 2 + 1))],
    "crop resize crop": lambda h, w: [CenterCrop((h - 8, w - 10)), Resize((27, 33)), CenterCrop((20, 21))],
    "resize then crop": lambda h, w: [Resize((h + 3, w - 5)), RandomCrop((h - 4, w - 9))],
    "resize twice": lambda h, w: [Resize((h - 9, w + 12)), Resize((h // 3, w // 2))],
    "resize crop resize": lambda h, w: [Resize((h // 2, w // 2)), CenterCrop((h // 2 - 4, w // 2 - 5)),
                                        Resize((h // 2 + 7, w // 3))],
    "down then up": lambda h, w: [Resize((h // 3, w // 3)), Resize((h, w))],
}
CROPS = ("centre crop", "random crop")


def resolved(pipeline: str, height: int, width: int, seed: int = 3):
    torch.manual_seed(seed)
    return resolve_transforms(PIPELINES[pipeline](height, width), height, width)


def difference(ours: torch.Tensor, theirs: torch.Tensor) -> tuple[int, float]:
    diff = (ours.int() - theirs.int()).abs()
    return int(diff.max()), float(diff.float().mean())


# -- the tap tables against torch's interpolate ---------------------------------------------------


def dense(taps: AxisTaps, input_size: int) -> torch.Tensor:
    """The table as an `(output, input)` float64 matrix."""
    matrix = torch.zeros(taps.size, input_size, dtype=torch.float64)
    for k, (first, count) in enumerate(taps.spans.tolist()):
        matrix[k, first : first + count] = torch.from_numpy(taps.weights[k, :count].astype(np.float64))
    return matrix


def torch_linear_map(steps, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols): the exact linear maps torch's crops and antialiased
    bilinear resizes perform per axis, read off by transforming identity
    matrices in float64 (column j of the result is the image of pixel j)."""
    rows = torch.eye(height, dtype=torch.float64)[None, None]  # resize along dim 2 only
    cols = torch.eye(width, dtype=torch.float64)[None, None]
    for step in steps:
        if hasattr(step, "top"):
            rows = rows[:, :, step.top : step.top + step.height]
            cols = cols[:, :, step.left : step.left + step.width]
        else:
            rows = F.interpolate(rows, size=(step.height, rows.shape[3]), mode="bilinear", antialias=True)
            cols = F.interpolate(cols, size=(step.width, cols.shape[3]), mode="bilinear", antialias=True)
    return rows[0, 0], cols[0, 0]


@pytest.mark.parametrize("pipeline", list(PIPELINES))
@pytest.mark.parametrize("size", [(48, 64), (241, 321), (1080, 1920)])
def test_taps_are_torchs_linear_map(pipeline, size):
    """Every table row is torch's weights for that output pixel (a single
    resize: its filter; a sequence: the product of the stages' filters)."""
    height, width = size
    chosen = resolved(pipeline, height, width)
    resampling = resampling_for(chosen)
    rows, cols = torch_linear_map(chosen.steps, height, width)
    assert resampling.output_size == chosen.output_size == (rows.shape[0], cols.shape[0])
    assert torch.allclose(dense(resampling.rows, height), rows, atol=2e-7, rtol=0)
    assert torch.allclose(dense(resampling.cols, width), cols, atol=2e-7, rtol=0)
    for taps in (resampling.rows, resampling.cols):
        assert np.allclose(taps.weights.sum(axis=1), 1.0, atol=1e-6)
        assert (taps.first >= 0).all() and (taps.count >= 1).all()


def test_1080p_to_224_tables():
    """Scales 1080/224 and 1920/224: triangles 2 * 4.82 and 2 * 8.57 pixels wide."""
    resampling = resampling_for(resolve_transforms([Resize((224, 224))], 1080, 1920))
    assert resampling.rows.weights.shape == (224, 10) and resampling.cols.weights.shape == (224, 18)
    assert resampling.rows.spans[:2].tolist() == [[0, 7], [2, 10]]  # the first taps clipped at the edge
    assert resampling.cols.spans[:2].tolist() == [[0, 13], [4, 17]]


def test_axes_without_a_resize_copy_pixels():
    """Crops alone (and resizes to the same size) are one tap of weight 1."""
    taps = axis_taps([("crop", 5, 20), ("resize", 0, 20), ("crop", 3, 7)], 40)
    assert taps.spans.tolist() == [[8 + k, 1] for k in range(7)]
    assert (taps.weights == 1.0).all()


def test_single_resize_rows_follow_torchs_formula():
    first, weights = resize_rows(10, 4)[1]  # scale 2.5, centre 3.75, support 2.5: taps [1, 6)
    assert first == 1
    expected = np.array([1 - abs(j + 0.5 - 3.75) / 2.5 for j in range(1, 6)])
    assert np.allclose(weights, expected / expected.sum())


@pytest.mark.parametrize("operations, phrase", [
    ([("crop", 3, 10)], "does not fit"),
    ([("resize", 0, 0)], "at least 1"),
    ([("flip", 0, 2)], "unknown operation"),
])
def test_axis_taps_errors(operations, phrase):
    with pytest.raises(ValueError, match=phrase):
        axis_taps(operations, 8)


# -- the kernel source on the CPU against the reference -------------------------------------------


@pytest.fixture(scope="session")
def host_kernel(tmp_path_factory):
    library = compile_host_kernels(tmp_path_factory.mktemp("host-kernel-resampled"))
    if library is None:
        pytest.skip("no C++ compiler to run the kernel source on the CPU")
    return library


SURFACES = [  # (pixel format for the colour spec, surface format, bits)
    ("yuv420p", "NV12", 8), ("yuv420p10le", "P016", 10), ("yuv420p12le", "P016", 12), ("yuv444p", "YUV444", 8),
    ("yuv444p10le", "YUV444_16Bit", 10),
]


def random_surface(surface_format: str, bits: int, width: int, height: int, pitch: int, seed: int):
    """A native surface of random samples (16-bit formats: in the top bits)
    with a pitch wider than the picture: (storage for the kernel, int32
    samples for the reference)."""
    generator = torch.Generator().manual_seed(seed)
    rows = surface_rows(surface_format, height)
    samples = torch.randint(0, 1 << bits, (rows, pitch), generator=generator, dtype=torch.int32)
    samples <<= 16 - bits if bits > 8 else 0
    if bits > 8:
        storage = torch.from_numpy(samples.numpy().astype(np.uint16).view(np.int16))
    else:
        storage = samples.to(torch.uint8)
    return storage, samples


@pytest.mark.parametrize("pix_fmt, surface_format, bits", SURFACES)
@pytest.mark.parametrize("turns, channels_first", [(0, False), (1, True), (2, True), (3, False)])
@pytest.mark.parametrize("pipeline", list(PIPELINES))
def test_kernel_source_equals_reference(host_kernel, pix_fmt, surface_format, bits, turns, channels_first,
                                        pipeline):
    """The resampled kernels, run on the CPU, give exactly the reference's
    pixels (the same float32 operations in the same order), written into
    the output slot only; NCHW and NHWC slots each with two rotations."""
    width, height, pitch = 64, 48, 80
    storage, samples = random_surface(surface_format, bits, width, height, pitch, seed=turns * 7 + bits)
    planes = planes_of_tensor(storage, surface_format, width, height)
    spec = colour_spec_for(pix_fmt, 1 if turns % 2 else 5, 2 if channels_first else 1)[0]
    shift = 16 - bits if bits > 8 else 0
    luma, cb, cr = native_planes(samples, surface_format, height, width)
    picture = torch.rot90(reference_rgb(luma, cb, cr, spec, sample_shift=shift), turns, dims=(0, 1)).contiguous()
    chosen = resolved(pipeline, *picture.shape[:2], seed=turns)
    resampling = resampling_for(chosen)
    expected = reference_resampled(picture, resampling)
    out_h, out_w = chosen.output_size
    batch = torch.zeros((3, 3, out_h, out_w) if channels_first else (3, out_h, out_w, 3), dtype=torch.uint8)
    slot = batch[1].permute(1, 2, 0) if channels_first else batch[1]
    tables, keep_alive = resample_tables(resampling, turns, width, height, torch.device("cpu"))
    walk = destination_walk(tuple(slot.shape), tuple(slot.stride()), 0, out_h, out_w)
    run_on_host(host_kernel, planes, slot, walk, spec.coefficients(), shift, spec.chroma_shift_x,
                spec.chroma_shift_y, tables)
    del keep_alive
    assert torch.equal(slot, expected)
    assert batch[0].sum() == 0 and batch[2].sum() == 0  # neighbouring slots untouched


def test_crops_are_the_converted_pixels(host_kernel):
    """A crop is a copy of the full conversion's pixels (nothing rounds twice)."""
    width, height = 64, 48
    storage, samples = random_surface("NV12", 8, width, height, width, seed=1)
    planes = planes_of_tensor(storage, "NV12", width, height)
    spec = colour_spec_for("yuv420p", 1, 1)[0]
    full = reference_rgb(*native_planes(samples, "NV12", height, width), spec)
    chosen = resolve_transforms([CenterCrop((30, 41))], height, width)
    tables, keep_alive = resample_tables(resampling_for(chosen), 0, width, height, torch.device("cpu"))
    out = torch.zeros(30, 41, 3, dtype=torch.uint8)
    run_on_host(host_kernel, planes, out, destination_walk((30, 41, 3), tuple(out.stride()), 0, 30, 41),
                spec.coefficients(), 0, 1, 1, tables)
    top, left = chosen.steps[0].top, chosen.steps[0].left
    assert torch.equal(out, full[top : top + 30, left : left + 41])


def test_kernel_source_compiles_for_hopper(tmp_path):
    """The whole source (plain and resampled kernels) compiles as CUDA for
    sm_90 without spilling, when a CUDA toolkit is installed (no GPU needed;
    CuPy compiles the same source with NVRTC on the GPU machine)."""
    import shutil
    import subprocess

    from framefeed.engine.backends.gpu_decode.kernels import _KERNEL_NAMES, KERNEL_SOURCE

    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("no nvcc (CUDA toolkit) on this machine")
    source = tmp_path / "kernels.cu"
    source.write_text(KERNEL_SOURCE)
    result = subprocess.run([nvcc, "-arch=sm_90", "-cubin", "-o", str(tmp_path / "kernels.cubin"), str(source),
                             "-Xptxas", "-v"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = result.stdout + result.stderr
    for name in _KERNEL_NAMES:
        assert f"Compiling entry function '{name}'" in report, name
    assert report.count("0 bytes spill stores, 0 bytes spill loads") == len(_KERNEL_NAMES), report


def test_tables_for_another_size_are_refused():
    resampling = resampling_for(resolve_transforms([Resize((10, 10))], 48, 64))
    with pytest.raises(ValueError, match="resolved for 48x64 frames applied to 64x48"):
        resample_tables(resampling, 1, 64, 48, torch.device("cpu"))


# -- the reference against the CPU path on corpus frames --------------------------------------------


@pytest.fixture(scope="session")
def gpu_corpus(corpus_files):
    return corpus_files


def corpus_path(name: str, gpu_corpus) -> str:
    return str(corpus.BY_NAME[name].path if name in corpus.BY_NAME else gpu_corpus[name])


def decoded_pictures(path: str, indices: list[int]) -> list[torch.Tensor]:
    """The reference's full-size RGB of decoded frames (rotated as the CPU path rotates)."""
    opened = open_stream(path)
    turns = opened.params.rotation_quarter_turns
    opened.demuxer.close()
    pictures = {}
    with av.open(path) as container:
        stream = container.streams.video[0]
        spec = colour_spec_for_stream(stream)[0]
        for index, frame in enumerate(container.decode(stream)):
            if index in indices:
                dtype = np.uint16 if frame.format.components[0].bits > 8 else np.uint8
                planes = []
                for number, plane in enumerate(frame.planes[:3]):
                    w = frame.width if number == 0 else frame.format.chroma_width(frame.width)
                    h = frame.height if number == 0 else frame.format.chroma_height(frame.height)
                    rows = np.frombuffer(plane, dtype).reshape(-1, plane.line_size // np.dtype(dtype).itemsize)
                    planes.append(torch.from_numpy(rows[:h, :w].astype(np.int32)))
                pictures[index] = torch.rot90(reference_rgb(*planes, spec), turns, dims=(0, 1)).contiguous()
            if index >= max(indices):
                break
    return [pictures[i] for i in indices]


CORPUS_FILES = {  # name: what it exercises
    "h264_bframes_long_gop.mp4": "8-bit 4:2:0 (NV12), 320x240",
    "rotated_90.mp4": "a quarter turn",
    "full_range_bt709.mp4": "full range, BT.709",
    "h264_10bit.mp4": "10-bit 4:2:0 (P016, swscale's generic path)",
    "odd_321x241_444.mkv": "4:4:4, odd size",
    "hevc_444_10bit.mp4": "10-bit 4:4:4 (YUV444_16Bit)",
}
INDICES = [0, 5, 11]


@pytest.mark.parametrize("name", list(CORPUS_FILES))
def test_reference_against_the_cpu_path(gpu_corpus, name):
    path = corpus_path(name, gpu_corpus)
    pictures = decoded_pictures(path, INDICES)
    height, width = pictures[0].shape[:2]
    ten_bit_420 = name == "h264_10bit.mp4"
    report = []
    for pipeline in PIPELINES:
        chosen = resolved(pipeline, height, width)
        torch.manual_seed(3)
        cpu = VideoDecoder(path, device="cpu", dimension_order="NHWC",
                           transforms=PIPELINES[pipeline](height, width)).get_frames_at(INDICES).data
        resampling = resampling_for(chosen)
        ours = torch.stack([reference_resampled(picture, resampling) for picture in pictures])
        worst, mean = difference(ours, cpu)
        report.append(f"{pipeline}: max {worst}, mean {mean:.3f}")
        if pipeline in CROPS:
            assert worst <= (0 if ten_bit_420 else 2), report[-1]
        else:
            assert worst <= 6 and mean <= 1.0, report[-1]
    print(f"\n{name} ({CORPUS_FILES[name]}): " + "; ".join(report))


# -- the backend API: pipelines through the registry ------------------------------------------------


def open_with_transforms(path: str, device: torch.device, transforms, nvdec=None):
    opened = open_stream(path)
    meta = opened.metadata
    pipeline = resolve_transforms(transforms, int(meta.height), int(meta.width))
    selection = open_backend(opened.params, device, BackendContext(stream=opened.demuxer.stream, nvdec=nvdec,
                                                                   transforms=pipeline))
    return opened, pipeline, selection.backend


def decode_with(opened, pipeline, backend, indices: list[int]) -> torch.Tensor:
    session = DecodeSession(opened.demuxer, backend, opened.timeline, facts=opened.timeline.facts,
                            disposable=opened.disposable)
    out = OutputBuffer.allocate(len(indices), *pipeline.output_size, backend.output_device)
    session.decode(opened.timeline.targets_for_indices(indices), out)
    session.close()
    return out.frames


@pytest.mark.parametrize("name, transforms", [
    ("h264_bframes_long_gop.mp4", [Resize((40, 50))]),
    ("hevc_10bit.mkv", [CenterCrop((100, 120)), Resize((57, 31))]),
    ("hevc_444.mp4", [RandomCrop((90, 111))]),
    ("hevc_444_10bit.mp4", [Resize((300, 200)), CenterCrop((250, 150)), Resize((64, 64))]),
    ("rotated_90.mp4", [CenterCrop((200, 100)), Resize((61, 45))]),
])
def test_nvdec_backend_applies_the_pipeline_itself(gpu_corpus, name, transforms):
    """A pipeline in `BackendContext` reaches the NVDEC backend (emulated
    decoder, reference conversion): it is not wrapped, reports the pipeline
    as applied, and its frames have the output size and match the CPU path."""
    path = corpus_path(name, gpu_corpus)
    torch.manual_seed(5)
    opened, pipeline, backend = open_with_transforms(path, torch.device("cuda", 0), transforms,
                                                     emulated_nvdec_decoders())
    try:
        assert isinstance(backend, NvdecBackend), type(backend)
        assert backend.applied_transforms == pipeline
        assert with_transforms(backend, pipeline) is backend  # nobody applies it twice
        ours = decode_with(opened, pipeline, backend, INDICES)
    finally:
        backend.close()
        opened.demuxer.close()
    torch.manual_seed(5)
    cpu = VideoDecoder(path, dimension_order="NHWC", transforms=transforms).get_frames_at(INDICES).data
    assert ours.shape == cpu.shape == (len(INDICES), *pipeline.output_size, 3)
    worst, mean = difference(ours, cpu)
    if all(isinstance(t, RandomCrop) for t in transforms):
        assert worst <= 2, (worst, mean)
    else:
        assert worst <= 6 and mean <= 1.0, (worst, mean)


def test_other_backends_are_wrapped_by_open_backend(gpu_corpus):
    path = str(gpu_corpus["h264_bframes_long_gop.mp4"])
    opened, pipeline, backend = open_with_transforms(path, torch.device("cpu"), [Resize((40, 50))])
    try:
        assert isinstance(backend, TransformedBackend)
        frames = decode_with(opened, pipeline, backend, INDICES)
    finally:
        backend.close()
        opened.demuxer.close()
    expected = VideoDecoder(path, dimension_order="NHWC", transforms=[Resize((40, 50))]).get_frames_at(INDICES).data
    assert torch.equal(frames, expected)


def test_a_backend_applying_another_pipeline_is_an_error(gpu_corpus):
    path = str(gpu_corpus["h264_bframes_long_gop.mp4"])
    opened, pipeline, backend = open_with_transforms(path, torch.device("cuda", 0), [Resize((40, 50))],
                                                     emulated_nvdec_decoders())
    try:
        other = resolve_transforms([Resize((20, 20))], 96, 128)
        with pytest.raises(ValueError, match="already applies"):
            with_transforms(backend, other)
    finally:
        backend.close()
        opened.demuxer.close()
