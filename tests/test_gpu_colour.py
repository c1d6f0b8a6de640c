"""The NVDEC path's colour conversion, checked on the CPU (no GPU needed).

Ground truth is FFmpeg's swscale `rgb24` conversion (bicubic), as PyAV's
`to_ndarray` and framefeed's CPU backend run it. The torch reference
(`colour.reference_rgb`) states the fused kernel's maths; these tests pin it
to swscale, pin the native surface layouts to FFmpeg's definitions of
NV12/P010, and pin the kernel's destination walk to `torch.rot90`.
"""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from host_kernels import compile_host_kernels, run_on_host

from framefeed.engine.backends.cpu_fallback.rgb import RgbConverter
from framefeed.engine.backends.gpu_decode.colour import (
    colour_spec_for,
    colour_spec_for_stream,
    native_planes,
    reference_rgb,
    surface_format_for,
)
from framefeed.engine.backends.gpu_decode.kernels import KERNEL_SOURCE, destination_walk
from framefeed.engine.backends.gpu_decode.surfaces import (
    planes_of_tensor,
    surface_layout,
    surface_rows,
)

COLORSPACES = {"bt601": (5, "ITU601"), "bt709": (1, "ITU709"), "bt2020": (9, "BT2020")}
RANGES = {"limited": (1, "MPEG"), "full": (2, "JPEG")}


@pytest.fixture(scope="session")
def corpus(corpus_files):
    return corpus_files


def synthetic_frame(pix_fmt: str, width: int, height: int, content: str, seed: int = 0):
    """A frame of `pix_fmt` with smooth or noisy samples inside the legal
    limited range; returns (frame, [Y, Cb, Cr] int32 tensors)."""
    frame = av.VideoFrame(width, height, pix_fmt)
    fmt = frame.format
    bits = fmt.components[0].bits
    dtype = np.uint16 if bits > 8 else np.uint8
    rng = np.random.default_rng(seed)
    planes = []
    for index, plane in enumerate(frame.planes):
        w = width if index == 0 else fmt.chroma_width(width)
        h = height if index == 0 else fmt.chroma_height(height)
        low, high = 16 << (bits - 8), (235 if index == 0 else 240) << (bits - 8)
        if content == "noise":
            values = rng.integers(low, high + 1, size=(h, w))
        else:  # low-frequency gradients: what real pictures mostly are
            yy, xx = np.mgrid[0:h, 0:w]
            phase = (0.0, 1.3, 2.6)[index]
            values = low + (high - low) * (0.5 + 0.5 * np.sin(xx / w * 2.5 + yy / h * 1.7 + phase))
        rows = np.frombuffer(plane, dtype=dtype).reshape(h, plane.line_size // np.dtype(dtype).itemsize)
        rows[:, :w] = np.round(values)
        planes.append(torch.from_numpy(rows[:, :w].astype(np.int32)))
    return frame, planes


def swscale_rgb(frame, matrix: str, value_range: str) -> torch.Tensor:
    rgb = frame.to_ndarray(format="rgb24", interpolation="BICUBIC", src_colorspace=COLORSPACES[matrix][1],
                           src_color_range=RANGES[value_range][1])
    return torch.from_numpy(rgb)


def difference(ours: torch.Tensor, theirs: torch.Tensor) -> tuple[int, float]:
    diff = (ours.int() - theirs.int()).abs()
    return int(diff.max()), float(diff.float().mean())


# -- choosing the conversion ----------------------------------------------------------


@pytest.mark.parametrize("name, matrix, full, depth, shift", [
    ("h264_bframes_long_gop.mp4", "bt601", False, 8, 1),  # unspecified -> BT.601 limited, as FFmpeg
    ("full_range_bt709.mp4", "bt709", True, 8, 1),
    ("hevc_10bit.mkv", "bt601", False, 10, 1),
    ("hevc_444.mp4", "bt601", False, 8, 0),
    ("hevc_444_10bit.mp4", "bt601", False, 10, 0),
    ("vp9.webm", "bt601", False, 8, 1),
    ("mpeg2.ts", "bt601", False, 8, 1),  # chroma_location "left": swscale and the kernel both ignore it
])
def test_conversion_is_chosen_from_the_stream(corpus, name, matrix, full, depth, shift):
    with av.open(str(corpus[name])) as container:
        spec, reason = colour_spec_for_stream(container.streams.video[0])
    assert reason == ""
    assert (spec.matrix, spec.full_range, spec.bit_depth, spec.chroma_shift_x, spec.chroma_shift_y) == (
        matrix, full, depth, shift, shift)


@pytest.mark.parametrize("pix_fmt, colorspace, color_range, expected", [
    ("yuv420p", 2, 0, ("bt601", False)),
    ("yuv420p", 6, 1, ("bt601", False)),
    ("yuv420p", 1, 2, ("bt709", True)),
    ("yuvj420p", 2, 0, ("bt601", True)),  # J formats are full range whatever the tag says
    ("yuv420p10le", 9, 1, ("bt2020", False)),
    ("yuv444p", 3, 0, ("bt601", False)),  # reserved -> swscale's default, BT.601
    ("yuv420p", 8, 0, ("bt601", False)),  # YCgCo: swscale has no matrix and uses BT.601
])
def test_conversion_for_tags(pix_fmt, colorspace, color_range, expected):
    spec, reason = colour_spec_for(pix_fmt, colorspace, color_range)
    assert reason == "" and (spec.matrix, spec.full_range) == expected


@pytest.mark.parametrize("pix_fmt, colorspace, words", [
    ("yuv420p", 0, "RGB"), ("gbrp", 2, "RGB"), ("gray", 2, "not 3-component"), ("yuva420p", 2, "not 3-component"),
    ("yuv422p", 2, "chroma subsampling"), ("yuv420p16le", 2, "16-bit"),
])
def test_conversions_the_kernel_cannot_reproduce_are_refused(pix_fmt, colorspace, words):
    spec, reason = colour_spec_for(pix_fmt, colorspace, 0)
    assert spec is None and words in reason


def test_coefficients_are_the_standard_matrices():
    bt601 = colour_spec_for("yuvj420p", 5, 2)[0].coefficients()
    assert (bt601.r_from_cr, bt601.g_from_cb, bt601.g_from_cr, bt601.b_from_cb) == pytest.approx(
        (1.402, -0.344136, -0.714136, 1.772), abs=1e-5)
    bt709 = colour_spec_for("yuvj420p", 1, 2)[0].coefficients()
    assert (bt709.r_from_cr, bt709.g_from_cb, bt709.g_from_cr, bt709.b_from_cb) == pytest.approx(
        (1.5748, -0.187324, -0.468124, 1.8556), abs=1e-5)
    limited = colour_spec_for("yuv420p", 5, 1)[0].coefficients()
    assert (limited.y_offset, limited.y_scale, limited.c_offset, limited.c_scale) == pytest.approx(
        (16, 255 / 219, 128, 255 / 224), rel=1e-6)
    ten_bit = colour_spec_for("yuv420p10le", 5, 1)[0].coefficients()
    assert (ten_bit.y_offset, ten_bit.c_offset) == (64.0, 512.0)


@pytest.mark.parametrize("spec_args, surface", [
    (("yuv420p", 2, 0), "NV12"), (("yuv420p10le", 2, 0), "P016"), (("yuv420p12le", 2, 0), "P016"),
    (("yuv444p", 2, 0), "YUV444"), (("yuv444p10le", 2, 0), "YUV444_16Bit"),
])
def test_surface_format_follows_depth_and_chroma(spec_args, surface):
    assert surface_format_for(colour_spec_for(*spec_args)[0]) == surface


# -- the reference against swscale ------------------------------------------------------


@pytest.mark.parametrize("matrix", ["bt601", "bt709"])
@pytest.mark.parametrize("value_range", ["limited", "full"])
@pytest.mark.parametrize("pix_fmt, size, content", [
    ("yuv420p", (64, 48), "smooth"), ("yuv420p", (64, 48), "noise"), ("yuv420p", (320, 240), "smooth"),
    ("yuv444p", (64, 48), "noise"), ("yuv444p", (320, 240), "smooth"), ("yuv444p", (63, 47), "smooth"),
])
def test_reference_matches_swscale_on_8_bit(matrix, value_range, pix_fmt, size, content):
    frame, (y, cb, cr) = synthetic_frame(pix_fmt, *size, content)
    spec = colour_spec_for(pix_fmt, COLORSPACES[matrix][0], RANGES[value_range][0])[0]
    worst, mean = difference(reference_rgb(y, cb, cr, spec), swscale_rgb(frame, matrix, value_range))
    assert worst <= 2, f"max |diff| {worst}, mean {mean:.3f}"
    assert mean < 0.6


@pytest.mark.parametrize("matrix", ["bt601", "bt709"])
@pytest.mark.parametrize("value_range", ["limited", "full"])
@pytest.mark.parametrize("pix_fmt, size", [("yuv444p10le", (64, 48)), ("yuv444p10le", (63, 47))])
def test_reference_against_swscale_on_10_bit_4_4_4(matrix, value_range, pix_fmt, size):
    frame, (y, cb, cr) = synthetic_frame(pix_fmt, *size, "smooth")
    spec = colour_spec_for(pix_fmt, COLORSPACES[matrix][0], RANGES[value_range][0])[0]
    assert not spec.swscale_generic_path
    worst, mean = difference(reference_rgb(y, cb, cr, spec), swscale_rgb(frame, matrix, value_range))
    assert worst <= 2 and mean < 0.7, f"max |diff| {worst}, mean {mean:.3f}"


@pytest.mark.parametrize("matrix", ["bt601", "bt709", "bt2020"])
@pytest.mark.parametrize("value_range", ["limited", "full"])
@pytest.mark.parametrize("pix_fmt", ["yuv420p10le", "yuv420p12le"])
@pytest.mark.parametrize("size, content", [((64, 48), "noise"), ((320, 240), "smooth"), ((18, 14), "noise"),
                                           ((192, 160), "noise")])
def test_reference_equals_swscale_on_10_and_12_bit_4_2_0(matrix, value_range, pix_fmt, size, content):
    """swscale converts high-bit-depth 4:2:0 with its generic scaler (vertical
    bicubic chroma, lookup tables); the reference performs the same integer
    steps and is bit-exact, edge rows and clipping included."""
    frame, (y, cb, cr) = synthetic_frame(pix_fmt, *size, content, seed=5)
    spec = colour_spec_for(pix_fmt, COLORSPACES[matrix][0], RANGES[value_range][0])[0]
    assert spec.swscale_generic_path
    worst, mean = difference(reference_rgb(y, cb, cr, spec), swscale_rgb(frame, matrix, value_range))
    assert worst == 0, f"max |diff| {worst}, mean {mean:.3f}"


def test_reference_equals_swscale_on_out_of_range_10_bit_samples():
    """Samples outside the legal range (Y 1023, chroma 0 and 1023) take the
    tables' headroom and the chroma clip, as in swscale."""
    frame = av.VideoFrame(64, 48, "yuv420p10le")
    rng = np.random.default_rng(9)
    planes = []
    for index, plane in enumerate(frame.planes):
        h, w = (48, 64) if index == 0 else (24, 32)
        rows = np.frombuffer(plane, dtype=np.uint16).reshape(h, plane.line_size // 2)
        rows[:, :w] = rng.choice([0, 1, 2, 1021, 1022, 1023], size=(h, w))
        planes.append(torch.from_numpy(rows[:, :w].astype(np.int32)))
    spec = colour_spec_for("yuv420p10le", 5, 1)[0]
    worst, _ = difference(reference_rgb(*planes, spec), swscale_rgb(frame, "bt601", "limited"))
    assert worst == 0


def test_swscale_inverse_tables_are_swscales_own():
    """The integers the generic path builds its tables from are what the
    loaded libswscale's `sws_getCoefficients` returns."""
    from framefeed.engine.backends.cpu_fallback.rgb import _libs
    from framefeed.engine.backends.gpu_decode.colour import _MATRICES, SWSCALE_INVERSE_TABLES

    libs = _libs()
    if libs is None:
        pytest.skip("PyAV's libswscale cannot be loaded through ctypes here")
    for colorspace, (name, _, _) in _MATRICES.items():
        table = libs.sws.sws_getCoefficients(colorspace)
        assert tuple(table[i] for i in range(4)) == SWSCALE_INVERSE_TABLES[name], name


def test_generic_path_refuses_pictures_with_too_few_chroma_rows():
    spec = colour_spec_for("yuv420p10le", 5, 1)[0]
    y = torch.zeros(12, 16, dtype=torch.int32)
    c = torch.zeros(6, 8, dtype=torch.int32)
    with pytest.raises(ValueError, match="6 chroma rows"):
        reference_rgb(y, c, c, spec)


@pytest.mark.parametrize("matrix", ["bt601", "bt709"])
def test_reference_on_odd_4_2_0_sizes(matrix):
    """Odd 4:2:0 sizes: the reference picks chroma (x >> 1, y >> 1) from
    ceil-sized planes. swscale filters chroma at odd sizes, so pictures only
    agree approximately; that is one reason odd sizes never go to NVDEC."""
    frame, (y, cb, cr) = synthetic_frame("yuv420p", 63, 47, "smooth")
    assert tuple(cb.shape) == (24, 32)
    spec = colour_spec_for("yuv420p", COLORSPACES[matrix][0], 1)[0]
    ours = reference_rgb(y, cb, cr, spec)
    assert tuple(ours.shape) == (47, 63, 3)
    # The last column and row use the last chroma sample, nearest-neighbour.
    single = reference_rgb(y[46:47, 62:63], cb[23:24, 31:32], cr[23:24, 31:32], spec)
    assert torch.equal(ours[46, 62], single[0, 0])
    worst, mean = difference(ours, swscale_rgb(frame, matrix, "limited"))
    assert mean < 4.0, f"mean |diff| {mean:.3f}"


@pytest.mark.parametrize("name", ["h264_bframes_long_gop.mp4", "full_range_bt709.mp4", "hevc_cra.mp4",
                                  "hevc_444.mp4", "vp9.webm", "hevc_10bit.mkv", "hevc_444_10bit.mp4",
                                  "mpeg2.ts"])
def test_reference_matches_cpu_backend_on_decoded_pictures(corpus, name):
    """Real decoded pictures: the reference against framefeed's own CPU
    conversion (the pixels CUDA output is compared with on the GPU)."""
    with av.open(str(corpus[name])) as container:
        stream = container.streams.video[0]
        spec = colour_spec_for_stream(stream)[0]
        converter = RgbConverter()
        for index, frame in enumerate(container.decode(stream)):
            if index % 5:
                continue
            dtype = np.uint16 if frame.format.components[0].bits > 8 else np.uint8
            planes = [torch.from_numpy(np.frombuffer(p, dtype).reshape(-1, p.line_size // np.dtype(dtype).itemsize)
                                       .astype(np.int32)) for p in frame.planes]
            height, width = frame.height, frame.width
            ch, cw = frame.format.chroma_height(height), frame.format.chroma_width(width)
            y, cb, cr = planes[0][:height, :width], planes[1][:ch, :cw], planes[2][:ch, :cw]
            cpu = torch.empty(height, width, 3, dtype=torch.uint8)
            converter.write(frame, cpu)
            worst, mean = difference(reference_rgb(y, cb, cr, spec), cpu)
            assert worst <= 2 and mean < 1.0, f"frame {index}: max {worst}, mean {mean:.3f}"
            if spec.swscale_generic_path:
                assert worst == 0, f"frame {index}: 10-bit 4:2:0 is bit-exact, got max {worst}"


def test_swscale_ground_truth_is_what_the_cpu_backend_outputs():
    frame, _ = synthetic_frame("yuv420p", 64, 48, "noise", seed=3)
    frame.colorspace, frame.color_range = 1, 1
    cpu = torch.empty(48, 64, 3, dtype=torch.uint8)
    RgbConverter().write(frame, cpu)
    assert torch.equal(cpu, swscale_rgb(frame, "bt709", "limited"))


# -- native NVDEC surface layouts -----------------------------------------------------------


def native_surface(frame, surface_format: str) -> torch.Tensor:
    """A native surface built by FFmpeg: NV12 and P010 (= P016 holding 10-bit
    samples) are swscale's own packings; 4:4:4 surfaces stack the planes."""
    height, width = frame.height, frame.width
    if surface_format in ("NV12", "P016"):
        bits = frame.format.components[0].bits
        packed = frame.reformat(format="nv12" if surface_format == "NV12" else f"p0{bits}le")
        dtype = np.uint8 if surface_format == "NV12" else np.uint16
        rows = []
        for index, plane in enumerate(packed.planes):
            data = np.frombuffer(plane, dtype).reshape(-1, plane.line_size // np.dtype(dtype).itemsize)
            rows.append(data[: height if index == 0 else (height + 1) // 2, :width])
        return torch.from_numpy(np.concatenate(rows).astype(np.int32))
    dtype = np.uint8 if surface_format == "YUV444" else np.uint16
    shift = 0 if surface_format == "YUV444" else 6
    planes = [np.frombuffer(p, dtype).reshape(-1, p.line_size // np.dtype(dtype).itemsize)[:height, :width]
              for p in frame.planes]
    return torch.from_numpy(np.concatenate(planes).astype(np.int32) << shift)


@pytest.mark.parametrize("pix_fmt, surface_format, shift", [
    ("yuv420p", "NV12", 0), ("yuv420p10le", "P016", 6), ("yuv444p", "YUV444", 0),
    ("yuv444p10le", "YUV444_16Bit", 6),
])
def test_native_planes_read_ffmpegs_packed_layouts(pix_fmt, surface_format, shift):
    frame, (y, cb, cr) = synthetic_frame(pix_fmt, 64, 48, "noise", seed=7)
    surface = native_surface(frame, surface_format)
    assert tuple(surface.shape) == (surface_rows(surface_format, 48), 64)
    luma, u, v = native_planes(surface, surface_format, 48, 64)
    assert torch.equal(luma >> shift, y) and torch.equal(u >> shift, cb) and torch.equal(v >> shift, cr)
    spec = colour_spec_for(pix_fmt, 1, 1)[0]
    assert torch.equal(reference_rgb(luma, u, v, spec, sample_shift=shift), reference_rgb(y, cb, cr, spec))


@pytest.mark.parametrize("surface_format, dtype", [("NV12", torch.uint8), ("P016", torch.int16),
                                                   ("YUV444", torch.uint8), ("YUV444_16Bit", torch.int16)])
def test_surface_layout_addresses_agree_with_native_planes(surface_format, dtype):
    """The addresses and steps the kernel reads are those of the views the
    reference reads (a padded pitch included)."""
    height, width, pitch_elements = 48, 64, 80
    storage = torch.zeros(surface_rows(surface_format, height), pitch_elements, dtype=dtype)
    planes = planes_of_tensor(storage, surface_format, width, height)
    luma, cb, cr = native_planes(storage, surface_format, height, width)
    element = storage.element_size()
    assert (planes.luma, planes.cb, planes.cr) == (luma.data_ptr(), cb.data_ptr(), cr.data_ptr())
    assert planes.luma_pitch == luma.stride(0) * element
    assert planes.chroma_pitch == cb.stride(0) * element
    assert planes.chroma_step == cb.stride(1) * element
    assert planes.sample_bytes == element
    assert planes.size == storage.numel() * element
    assert planes == surface_layout(surface_format, storage.data_ptr(), pitch_elements * element, width, height)


# -- the destination walk --------------------------------------------------------------------


def write_through_walk(upright: torch.Tensor, dst: torch.Tensor, turns: int) -> None:
    """Write `upright` into `dst` the way the kernel addresses it."""
    height, width, _ = upright.shape
    walk = destination_walk(tuple(dst.shape), tuple(dst.stride()), turns, height, width)
    rows = torch.arange(height).view(-1, 1, 1)
    cols = torch.arange(width).view(1, -1, 1)
    channels = torch.arange(3).view(1, 1, -1)
    offsets = walk.origin + rows * walk.step_row + cols * walk.step_col + channels * walk.step_channel
    flat = dst.as_strided((dst.untyped_storage().nbytes(),), (1,), 0)
    flat[(offsets + dst.storage_offset()).reshape(-1)] = upright.reshape(-1)


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
@pytest.mark.parametrize("channels_first", [False, True])
@pytest.mark.parametrize("size", [(6, 10), (7, 5)])
def test_destination_walk_writes_the_rotated_picture(turns, channels_first, size):
    height, width = size
    upright = torch.randint(0, 256, (height, width, 3), dtype=torch.uint8)
    expected = torch.rot90(upright, turns, dims=(0, 1))  # what the CPU backend does
    out_h, out_w = expected.shape[:2]
    batch = torch.zeros((3, 3, out_h, out_w) if channels_first else (3, out_h, out_w, 3), dtype=torch.uint8)
    slot = batch[1].permute(1, 2, 0) if channels_first else batch[1]  # what OutputBuffer.slot gives
    write_through_walk(upright, slot, turns)
    assert torch.equal(slot, expected)
    assert batch[0].sum() == 0 and batch[2].sum() == 0  # neighbours untouched


def test_destination_walk_rejects_a_wrong_slot_shape():
    with pytest.raises(ValueError, match="does not fit"):
        destination_walk((10, 6, 3), (18, 3, 1), 0, 10, 8)


def test_kernel_source_mirrors_the_reference_operation_order():
    """The kernel must stay FMA-free and keep the reference's association
    (y + g_cb*u) + g_cr*v; a change to either is a change to both."""
    assert "__fadd_rn(__fadd_rn(__fadd_rn(yf, __fmul_rn(g_from_cb, uf)), __fmul_rn(g_from_cr, vf)), bias)" in (
        KERNEL_SOURCE)
    assert "fmaf" not in KERNEL_SOURCE and "__fmaf" not in KERNEL_SOURCE


# -- the CUDA kernel's source, executed on the CPU ------------------------------------------------


@pytest.fixture(scope="session")
def host_kernel(tmp_path_factory):
    """The kernel source compiled for the CPU (`host_kernels`). Skipped without a C++ compiler."""
    library = compile_host_kernels(tmp_path_factory.mktemp("host-kernel"))
    if library is None:
        pytest.skip("no C++ compiler to run the kernel source on the CPU")
    return library


@pytest.mark.parametrize("pix_fmt, surface_format, shift", [
    ("yuv420p", "NV12", 0), ("yuv420p10le", "P016", 6), ("yuv420p12le", "P016", 4), ("yuv444p", "YUV444", 0),
    ("yuv444p10le", "YUV444_16Bit", 6),
])
@pytest.mark.parametrize("turns", [0, 1, 2, 3])
@pytest.mark.parametrize("channels_first", [False, True])
@pytest.mark.parametrize("tags", [(5, 1), (1, 2)])
def test_kernel_source_equals_torch_reference(host_kernel, pix_fmt, surface_format, shift, turns,
                                              channels_first, tags):
    """The kernel's own source, run on the CPU, produces exactly the torch
    reference's pixels, for every surface format, rotation and slot layout,
    from a surface whose pitch is wider than the picture."""
    from framefeed.engine.backends.gpu_decode.kernels import destination_walk

    height, width, pitch = 48, 64, 96
    frame, _ = synthetic_frame(pix_fmt, width, height, "noise", seed=11)
    surface = native_surface(frame, surface_format)
    padded = torch.zeros(surface.shape[0], pitch, dtype=torch.int32)
    padded[:, :width] = surface
    if shift:  # 16-bit storage, the samples' bit patterns as int16
        storage = torch.from_numpy(padded.numpy().astype(np.uint16).view(np.int16))
    else:
        storage = padded.to(torch.uint8)
    planes = planes_of_tensor(storage, surface_format, width, height)
    spec = colour_spec_for(pix_fmt, *tags)[0]
    luma, cb, cr = native_planes(padded, surface_format, height, width)
    expected = torch.rot90(reference_rgb(luma, cb, cr, spec, sample_shift=shift), turns, dims=(0, 1))
    out_h, out_w = expected.shape[:2]
    batch = torch.zeros((2, 3, out_h, out_w) if channels_first else (2, out_h, out_w, 3), dtype=torch.uint8)
    slot = batch[1].permute(1, 2, 0) if channels_first else batch[1]
    walk = destination_walk(tuple(slot.shape), tuple(slot.stride()), turns, height, width)
    run_on_host(host_kernel, planes, slot, walk, spec.coefficients(), shift, spec.chroma_shift_x,
                spec.chroma_shift_y)
    assert torch.equal(slot, expected)
    assert batch[0].sum() == 0  # the neighbouring slot is untouched


@pytest.mark.parametrize("name", ["hevc_10bit.mkv", "hevc_444_10bit.mp4"])
def test_kernel_source_on_10_bit_corpus_frames_equals_the_cpu_path(host_kernel, corpus, name):
    """What NVDEC's 10-bit output becomes: the kernel source, run on the CPU
    over P016/YUV444_16Bit surfaces of real decoded pictures, against the CPU
    backend's swscale conversion of the same pictures (the contract every
    NVDEC stream is held to on the GPU: max |diff| <= 2; 4:2:0 is exact)."""
    from framefeed.engine.backends.gpu_decode.kernels import destination_walk

    with av.open(str(corpus[name])) as container:
        stream = container.streams.video[0]
        spec = colour_spec_for_stream(stream)[0]
        surface_format = surface_format_for(spec)
        converter = RgbConverter()
        for index, frame in enumerate(container.decode(stream)):
            if index % 4:
                continue
            height, width = frame.height, frame.width
            surface = native_surface(frame, surface_format)
            storage = torch.from_numpy(surface.numpy().astype(np.uint16).view(np.int16))
            planes = planes_of_tensor(storage, surface_format, width, height)
            ours = torch.zeros(height, width, 3, dtype=torch.uint8)
            walk = destination_walk(tuple(ours.shape), tuple(ours.stride()), 0, height, width)
            run_on_host(host_kernel, planes, ours, walk, spec.coefficients(), 16 - spec.bit_depth,
                        spec.chroma_shift_x, spec.chroma_shift_y)
            cpu = torch.empty(height, width, 3, dtype=torch.uint8)
            converter.write(frame, cpu)
            worst, mean = difference(ours, cpu)
            assert worst <= 2, f"{name} frame {index}: max |diff| {worst}, mean {mean:.3f}"
            if spec.swscale_generic_path:
                assert worst == 0, f"{name} frame {index}: max |diff| {worst}"


class _PlaneView:
    """A CAIMemoryView stand-in: a CUDA-array-interface dict, nothing else."""

    def __init__(self, interface):
        self.__cuda_array_interface__ = interface


class _Picture:
    """A DecodedFrame stand-in whose `cuda()` describes planes of a CPU tensor."""

    def __init__(self, views):
        self._views = views

    def cuda(self):
        return self._views


@pytest.mark.parametrize("surface_format, sample", [("NV12", 1), ("P016", 2), ("YUV444", 1), ("YUV444_16Bit", 2)])
@pytest.mark.parametrize("strides_in_samples", [False, True])
@pytest.mark.parametrize("whole_surface_view", [False, True])
def test_planes_of_a_decoded_picture_come_from_its_luma_view(surface_format, sample, strides_in_samples,
                                                            whole_surface_view):
    """PyNvVideoCodec pictures: plane addresses derive from the luma view
    alone, whether its strides are in bytes or (a 2.2 quirk on 16-bit
    surfaces) in samples, and whatever the chroma views claim."""
    from framefeed.engine.backends.gpu_decode.surfaces import planes_of_decoded_frame
    from framefeed.errors import DecodingError

    height, width, pitch = 48, 64, 80
    storage = torch.zeros(surface_rows(surface_format, height), pitch, dtype=torch.uint8 if sample == 1 else torch.int16)
    rows = storage.shape[0] if whole_surface_view else height
    row_stride = pitch if strides_in_samples else pitch * sample
    luma = {"shape": (rows, width, 1), "strides": (row_stride, sample, sample), "data": (storage.data_ptr(), False),
            "typestr": "|u1" if sample == 1 else "<u2", "version": 3, "stream": 2}
    bogus_chroma = dict(luma, data=(storage.data_ptr() + 3, False))  # ignored
    planes = planes_of_decoded_frame(_Picture([_PlaneView(luma), _PlaneView(bogus_chroma)]), surface_format,
                                     width, height)
    expected = planes_of_tensor(storage, surface_format, width, height)
    assert planes == expected  # the view's "stream": 2 says nothing about where the pixels are ready
    with pytest.raises(DecodingError, match="for a 66x48 stream"):
        planes_of_decoded_frame(_Picture([_PlaneView(luma)]), surface_format, width + 2, height)


# -- CuPy stream interop ----------------------------------------------------------------------


class _FakeDevice:
    current = None

    def __init__(self, index):
        self.index = index

    def __enter__(self):
        self.previous, _FakeDevice.current = _FakeDevice.current, self.index

    def __exit__(self, *exc):
        _FakeDevice.current = self.previous


def test_the_kernel_runs_on_the_decoders_own_stream_and_no_cupy_wrapper_destroys_it(monkeypatch):
    """Issue 22, item 6. CuPy's `Stream.from_external` returns a
    `cupy.cuda.Stream`, whose `__del__` destroys the handle it holds
    (`cupy/cuda/stream.pyx`): collecting such a wrapper of another library's
    stream destroys that stream. The launch passes CuPy the decoder's
    `OwnedStream` handle as a bare `ptr` (what `Function.__call__`'s
    `_get_stream` reads) on the stream's device, and makes no CuPy stream."""
    import gc
    import sys
    import types

    from gpu_fixtures import RecordingCudaCalls

    from framefeed.engine.backends.gpu_decode import kernels
    from framefeed.engine.backends.gpu_decode.backend import CudaSurfaceConverter
    from framefeed.engine.backends.gpu_decode.colour import colour_spec_for
    from framefeed.engine.backends.gpu_decode.streams import OwnedStream

    destroyed, launched = [], []

    class Stream:  # as cupy.cuda.Stream: destroys its handle when collected
        def __init__(self, ptr):
            self.ptr = ptr

        def __del__(self):
            destroyed.append(self.ptr)

        @classmethod
        def from_external(cls, obj):
            return cls(obj.__cuda_stream__()[1])

    def deprecated(*args, **kwargs):
        raise AssertionError("cupy.cuda.ExternalStream is deprecated in CuPy 14")

    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(Device=_FakeDevice, Stream=Stream,
                                                            ExternalStream=deprecated))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(kernels, "_kernel", lambda index, name: lambda grid, block, args, **options: launched.append(
        (_FakeDevice.current, options["stream"].ptr, type(options["stream"]).__name__)))
    stream = OwnedStream(RecordingCudaCalls(), 3)
    spec = colour_spec_for("yuv420p", 2, 0)[0]
    converter = CudaSurfaceConverter(torch.device("cpu"), stream, "NV12", 64, 48, spec, 0,
                                     launch=kernels.CupyKernelLaunch())
    surface = torch.zeros(surface_rows("NV12", 48), 64, dtype=torch.uint8)
    converter.write(planes_of_tensor(surface, "NV12", 64, 48), torch.empty(48, 64, 3, dtype=torch.uint8))
    del converter
    gc.collect()
    assert launched == [(3, stream.handle, "_RawStream")] and destroyed == []
