"""Transforms fused into the NVDEC colour kernel, on a real GPU: the fused
output against the CPU path, and the kernel against its torch reference bit
for bit. Marked `cuda`; skipped without a CUDA GPU, PyNvVideoCodec or CuPy.

Run on a GPU machine with:
    PYTHONPATH=. python -m pytest tests/test_gpu_cuda_resampling.py -v -s
(`-s` prints each file's max/mean differences.)
"""

from __future__ import annotations

import pytest
import torch

import framefeed.engine.backends.gpu_decode as gpu_decode
from framefeed.decoders import VideoDecoder
from framefeed.engine.backends.gpu_decode.backend import NvdecBackend
from framefeed.engine.backends.gpu_decode.capabilities import stream_traits
from framefeed.engine.backends.gpu_decode.colour import (
    native_planes,
    reference_rgb,
    surface_format_for,
)
from framefeed.engine.backends.gpu_decode.resampling import (
    reference_resampled,
    resampling_for,
    rotated_size,
)
from framefeed.engine.backends.gpu_decode.surfaces import surface_rows
from framefeed.engine.demux.demuxer import Demuxer
from framefeed.engine.packets import CodecParameters
from framefeed.engine.source import resolve_source
from framefeed.transforms import CenterCrop, RandomCrop, Resize, resolve_transforms

pytestmark = pytest.mark.cuda

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU (torch.cuda.is_available() is False)", allow_module_level=True)
_UNAVAILABLE = gpu_decode.nvdec_unavailable_reason()
if _UNAVAILABLE:
    pytest.skip(f"NVDEC unavailable: {_UNAVAILABLE}", allow_module_level=True)

DEVICE = torch.device("cuda", 0)
# Every surface format; MPEG-2 is left out of the CPU comparison (its IDCT
# legitimately differs from FFmpeg's by up to 9, see test_gpu_cuda.py).
FILES = ["h264_bframes_long_gop.mp4", "full_range_bt709.mp4", "hevc_10bit.mkv", "hevc_444.mp4",
         "hevc_444_10bit.mp4", "vp9.webm"]
PIPELINES = {
    "centre crop": lambda h, w: [CenterCrop((h - 11, w - 20))],
    "random crop": lambda h, w: [RandomCrop((h // 2, w // 3))],
    "down": lambda h, w: [Resize((h // 2, w // 3))],
    "down odd": lambda h, w: [Resize((h // 4 + 1, w // 5 + 1))],
    "224": lambda h, w: [Resize((224, 224))],
    "up odd": lambda h, w: [Resize((2 * h + 1, 3 * w - 1))],
    "crop resize crop": lambda h, w: [CenterCrop((h - 8, w - 10)), Resize((27, 33)), CenterCrop((20, 21))],
    "resize crop resize": lambda h, w: [Resize((h // 2, w // 2)), CenterCrop((h // 2 - 4, w // 2 - 5)),
                                        Resize((h // 2 + 7, w // 3))],
}
CROPS = ("centre crop", "random crop")


@pytest.fixture(scope="session")
def corpus(corpus_files):
    return corpus_files


@pytest.mark.parametrize("name", FILES)
def test_fused_output_matches_the_cpu_path(corpus, name, capsys):
    path = str(corpus[name])
    dimension_order = ("NCHW", "NHWC")[FILES.index(name) % 2]
    probe = VideoDecoder(path, device="cpu")
    height, width = probe.metadata.height, probe.metadata.width
    indices = list(range(0, len(probe), 3))
    report = []
    for pipeline, make in PIPELINES.items():
        torch.manual_seed(11)
        cuda = VideoDecoder(path, device="cuda", dimension_order=dimension_order, transforms=make(height, width))
        torch.manual_seed(11)
        cpu = VideoDecoder(path, device="cpu", dimension_order=dimension_order, transforms=make(height, width))
        assert not cuda.cpu_fallback, str(cuda.cpu_fallback)
        assert isinstance(cuda._backend, NvdecBackend) and cuda._backend.applied_transforms, "not fused"
        ours, theirs = cuda.get_frames_at(indices), cpu.get_frames_at(indices)
        assert ours.data.device.type == "cuda" and ours.data.shape == theirs.data.shape
        assert torch.equal(ours.pts_seconds, theirs.pts_seconds)
        diff = (ours.data.cpu().int() - theirs.data.int()).abs()
        worst, mean = int(diff.max()), float(diff.float().mean())
        report.append(f"{pipeline}: max {worst}, mean {mean:.3f}")
        if pipeline in CROPS:
            assert worst <= 2, report[-1]
        else:
            assert worst <= 6 and mean <= 1.0, report[-1]
    with capsys.disabled():
        print(f"\n[fused {dimension_order}] {name}: " + "; ".join(report))


def _surface_tensor(owned, surface_format: str, height: int) -> torch.Tensor:
    planes = owned.planes
    rows = surface_rows(surface_format, height)
    torch.cuda.synchronize(DEVICE)  # the copy was made on the decoder's stream
    raw = owned.buffer.cpu()
    if planes.sample_bytes == 2:
        return (raw.view(torch.int16).to(torch.int32) & 0xFFFF).reshape(rows, planes.luma_pitch // 2)
    return raw.reshape(rows, planes.luma_pitch).to(torch.int32)


@pytest.mark.parametrize("name", FILES + ["mpeg2.ts"])
@pytest.mark.parametrize("turns, pipeline", [(0, "down odd"), (1, "random crop"), (2, "up odd"),
                                             (3, "resize crop resize")])
def test_fused_kernel_equals_the_reference(corpus, name, turns, pipeline):
    """The GPU kernel writes exactly `reference_resampled` of the reference
    conversion of the same surface, into planar and packed slots alike."""
    demuxer = Demuxer(resolve_source(str(corpus[name])), None)
    params = CodecParameters.from_stream(demuxer.stream, turns)
    traits = stream_traits(demuxer.stream)
    height, width = rotated_size(turns, traits.width, traits.height)
    torch.manual_seed(turns)
    chosen = resolve_transforms(PIPELINES[pipeline](height, width), height, width)
    backend, reason = gpu_decode.open_nvdec_backend(params, DEVICE, stream=demuxer.stream, transforms=chosen)
    assert backend is not None, reason
    surface_format = surface_format_for(traits.colour)
    shift = 16 - traits.bit_depth if surface_format in ("P016", "YUV444_16Bit") else 0
    resampling = resampling_for(chosen)
    out_h, out_w = chosen.output_size
    checked = 0
    try:
        backend.reset()
        for packet in demuxer.packets():
            for frame in backend.send(packet):
                owned = backend.retain(frame)
                surface = _surface_tensor(owned.owned, surface_format, traits.height)
                luma, cb, cr = native_planes(surface, surface_format, traits.height, traits.width)
                picture = torch.rot90(reference_rgb(luma, cb, cr, traits.colour, sample_shift=shift), turns,
                                      dims=(0, 1)).contiguous()
                expected = reference_resampled(picture, resampling)
                planar = torch.zeros(3, 3, out_h, out_w, dtype=torch.uint8, device=DEVICE)
                packed = torch.zeros(2, out_h, out_w, 3, dtype=torch.uint8, device=DEVICE)
                backend.write_rgb(frame, planar[1].permute(1, 2, 0))  # the decoder-owned picture
                backend.write_rgb(owned, packed[0])  # the retained copy
                assert torch.equal(planar[1].permute(1, 2, 0).cpu(), expected)
                assert torch.equal(packed[0].cpu(), expected)
                assert planar[0].sum() == 0 and planar[2].sum() == 0 and packed[1].sum() == 0
                checked += 1
            if checked >= 4:
                break
    finally:
        backend.close()
        demuxer.close()
    assert checked >= 4
