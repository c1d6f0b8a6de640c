"""Every path that writes frames stays inside its buffers and writes every
pixel, on encoded videos of awkward sizes in every pixel format.

Videos: every width 1-17 (each residue of swscale's 16-pixel blocks, odd and
even) and 30, 34, 62, 98, 130, 200, 328, 426, 854 (plus 426x240, 854x480 and
30x2), and the rest of widths 18-64 (every residue mod 64) spread over the
formats in turn, in yuv420p, yuvj420p, yuv422p, yuv444p and 10-bit 4:2:0 (H.264, or
VP9, MJPEG and FFV1 for the odd widths x264 refuses), gray and packed RGB
(FFV1, PNG) and planar RGB (H.264 gbrp). The converter itself
is swept over every width 1-130 in `test_buffer_contract.py`.

Paths, all in one forked child with every CPU frame buffer framefeed
allocates bounded by guard pages (ends and starts in turn): single frames,
iteration, batches with duplicates, index ranges, frames by time (exact and
approximate mode), Resize / CenterCrop / RandomCrop, packet bundles decoded
by the executor, NVDEC's backend on the emulated decoder (8-bit formats), Ray's CPU decode stage, `DecodePool`, `ClipLoader`; and,
pixels only (their buffers live in other processes): `ClipLoader` workers
and the service's slots in its shared-memory slab. Ground truth: the ffmpeg command line's
`-pix_fmt rgb24` decode of the same file; transforms applied to it with
torch (crops by slicing, resizes by `interpolate`, as the README specifies).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from backends_under_test import EmulatedNvdecVideoDecoder
from buffer_contract_support import FFMPEG, ffmpeg_rgb24_of_files

import corpus
from framefeed import VideoDecoder
from framefeed.data import ClipDataset, ClipLoader
from framefeed.data._sampling import PlanningVideo
from framefeed.engine import (
    BackendContext,
    BundleSource,
    OutputBuffer,
    execute_plan,
    open_backend,
    ship_request,
)
from framefeed.engine.opening import open_stream
from framefeed.pool import DecodePool
from framefeed.ray._decode import decode_on_cpu
from framefeed.samples import VideoSpec, encode_video
from framefeed.testing.guard_pages import guarded_frame_memory, run_in_child
from framefeed.transforms import CenterCrop, RandomCrop, Resize

pytestmark = pytest.mark.skipif(FFMPEG is None, reason="no ffmpeg executable on PATH (.ci/run installs Debian's)")

# Encoders, in order of preference, each with the pixel format it is given;
# the first that accepts a size makes that video (x264 refuses odd 4:2:0 and
# 4:2:2 widths: those come from VP9, MJPEG and FFV1, as they do in the wild).
# The decoder's output format is the format under test (checked).
_X264 = {"x264-params": "keyint=2:bframes=1"}
_GOP = {"g": "2"}
_VP9 = {"g": "2", "deadline": "realtime", "cpu-used": "8"}
SOURCES = {
    "yuv420p": [("libx264", "yuv420p", _X264), ("libvpx-vp9", "yuv420p", _VP9)],
    "yuvj420p": [("libx264", "yuvj420p", _X264), ("mjpeg", "yuvj420p", {})],
    "yuv422p": [("libx264", "yuv422p", _X264), ("ffv1", "yuv422p", _GOP), ("libvpx-vp9", "yuv422p", _VP9)],
    "yuv444p": [("libx264", "yuv444p", _X264)],
    "yuv420p10le": [("libx264", "yuv420p10le", _X264), ("ffv1", "yuv420p10le", _GOP)],
    "gray": [("ffv1", "gray", _GOP), ("png", "gray", {})],
    "packed rgb": [("ffv1", "bgr0", _GOP), ("png", "rgb24", {})],
    "gbrp": [("libx264rgb", "rgb24", _X264)],
}
# Sizes no encoder PyAV ships makes (the converter sweep covers them).
UNENCODABLE = {("yuv420p10le", 1), ("yuv420p10le", 3)}
# What the decoder may output for each: the name, or the packed RGB layouts.
DECODED = {"packed rgb": ("bgr0", "rgb24")}
# Containers: Matroska, or QuickTime for PNG (Matroska does not take it).
_CONTAINER = {"png": ".mov"}
WIDTHS = [*range(1, 18), 30, 34, 62, 98, 130, 200, 328, 426, 854]
SIZES = [(width, 34) for width in WIDTHS] + [(426, 240), (854, 480), (30, 2)]
# The other residues mod 64 (widths 18-64; 64 bytes is the widest SIMD store and,
# at height 34, every slot offset's residue mod 64 recurs within them), each in
# one format, the formats taking turns: every path sees every residue.
ROTATED_WIDTHS = {pix_fmt: [w for w in range(18, 65) if w not in WIDTHS and w % len(SOURCES) == turn]
                  for turn, pix_fmt in enumerate(SOURCES)}
FRAMES = 5
PLAIN_MEMORY = "FRAMEFEED_TEST_PLAIN_FRAME_MEMORY"


def _videos(pix_fmt: str) -> list[tuple[Path, tuple[int, int]]]:
    folder = corpus.cache_dir() / "buffer-contract"
    videos = []
    for width, height in SIZES + [(width, 34) for width in ROTATED_WIDTHS[pix_fmt]]:
        stem = folder / f"{pix_fmt.replace(' ', '_')}_{width}x{height}"
        made = [stem.with_suffix(suffix) for suffix in (".mkv", ".mov") if stem.with_suffix(suffix).exists()]
        path = made[0] if made else None
        errors = []
        for codec, encoder_format, options in SOURCES[pix_fmt] if path is None else []:
            try:
                path = stem.with_suffix(_CONTAINER.get(codec, ".mkv"))
                encode_video(path, VideoSpec(codec=codec, pix_fmt=encoder_format, width=width, height=height,
                                             num_frames=FRAMES, codec_options=options, seed=width))
                break
            except av.error.FFmpegError as error:
                errors.append(f"{codec}: {error}")
                path = None
        if path is None and (pix_fmt, width) in UNENCODABLE:
            continue
        assert path is not None, f"no encoder makes {pix_fmt} at {width}x{height}: {errors}"
        videos.append((path, (width, height)))
    return videos


def _resized(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    nchw = torch.from_numpy(frames).permute(0, 3, 1, 2)
    out = F.interpolate(nchw, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return out.permute(0, 2, 3, 1).numpy()


def _check(failures: list[str], case: str, got: torch.Tensor, expected: np.ndarray) -> None:
    got_array = got.numpy()
    if got_array.shape != expected.shape:
        failures.append(f"{case}: shape {got_array.shape}, expected {expected.shape}")
    elif not np.array_equal(got_array, expected):
        diff = np.abs(got_array.astype(np.int16) - expected.astype(np.int16))
        failures.append(f"{case}: max |diff| {diff.max()} at {np.unravel_index(diff.argmax(), diff.shape)}")


def _decoder_paths(path: Path, ref: np.ndarray, failures: list[str]) -> None:
    name = path.stem
    count = len(ref)
    decoder = VideoDecoder(path, dimension_order="NHWC")
    _check(failures, f"{name} decoder[i]", torch.stack([decoder[i] for i in range(count)]), ref)
    _check(failures, f"{name} iteration", torch.stack(list(decoder)), ref)
    order = [count - 1, 0, 0, 2]
    _check(failures, f"{name} get_frames_at", decoder.get_frames_at(order).data, ref[order])
    _check(failures, f"{name} get_frames_in_range", decoder.get_frames_in_range(0, count).data, ref)
    middles = [(decoder.get_frame_at(i).pts_seconds + decoder.get_frame_at(i).duration_seconds / 2)
               for i in range(count)]
    _check(failures, f"{name} get_frames_played_at", decoder.get_frames_played_at(middles).data, ref)
    _check(failures, f"{name} get_frame_played_at", decoder.get_frame_played_at(middles[1]).data, ref[1])
    approximate = VideoDecoder(path, dimension_order="NHWC", seek_mode="approximate")
    _check(failures, f"{name} approximate get_frames_at", approximate.get_frames_at(list(range(count))).data, ref)

    height, width = ref.shape[1:3]
    size = (max(1, height * 2 // 3), max(1, width * 3 // 4 + 1))
    resized = VideoDecoder(path, dimension_order="NHWC", transforms=[Resize(size)])
    _check(failures, f"{name} Resize{size}", resized.get_frames_at(list(range(count))).data, _resized(ref, *size))
    crop = (max(1, height // 2), max(1, width // 2))
    centre = VideoDecoder(path, dimension_order="NHWC", transforms=[CenterCrop(crop)])
    top, left = int(round((height - crop[0]) / 2.0)), int(round((width - crop[1]) / 2.0))
    _check(failures, f"{name} CenterCrop{crop}", torch.stack(list(centre)),
           ref[:, top:top + crop[0], left:left + crop[1]])
    torch.manual_seed(width)
    random_crop = VideoDecoder(path, dimension_order="NHWC", transforms=[RandomCrop(crop)])
    torch.manual_seed(width)
    top = int(torch.randint(0, height - crop[0] + 1, size=(1,)))
    left = int(torch.randint(0, width - crop[1] + 1, size=(1,)))
    _check(failures, f"{name} RandomCrop{crop}", random_crop.get_frames_in_range(0, count).data,
           ref[:, top:top + crop[0], left:left + crop[1]])


def _engine_paths(path: Path, ref: np.ndarray, failures: list[str]) -> None:
    name = path.stem
    order = [2, 0, len(ref) - 1, 2]
    plan, bundle = ship_request(path, indices=order)
    backend = open_backend(bundle.params, torch.device("cpu"), BackendContext()).backend
    out = OutputBuffer.allocate(plan.slot_count, *bundle.params.frame_size, backend.output_device)
    execute_plan(plan, BundleSource(bundle), backend, out)
    backend.close()
    _check(failures, f"{name} bundle", out.frames, ref[order])
    opened = open_stream(path)
    try:
        planned = PlanningVideo(opened).get_frames_at(order)
    finally:
        opened.demuxer.close()
    data, _, _ = decode_on_cpu(planned, "NHWC")
    _check(failures, f"{name} ray decode stage", data[0], ref[order])


def _emulated_nvdec_path(path: Path, ref: np.ndarray, failures: list[str]) -> None:
    """NVDEC's backend and kernel walk (or its CPU fallback for sizes it refuses),
    on the emulated decoder: within NVDEC's tolerance of 2 (see the README)."""
    decoder = EmulatedNvdecVideoDecoder(path, dimension_order="NHWC")
    got = decoder.get_frames_at(list(range(len(ref)))).data.numpy()
    diff = np.abs(got.astype(np.int16) - ref.astype(np.int16))
    if got.shape != ref.shape or diff.max() > 2:
        failures.append(f"{path.stem} emulated NVDEC: shape {got.shape}, max |diff| {diff.max()}")


def _all_paths(paths: list[Path], refs: list[np.ndarray], nvdec: bool) -> list[str]:
    failures: list[str] = []
    # Under glibc's heap checker (test_heap_checker.py) buffers stay on the heap it watches.
    bounds = contextlib.nullcontext() if os.environ.get(PLAIN_MEMORY) else guarded_frame_memory()
    with bounds:
        for path, ref in zip(paths, refs, strict=True):
            _decoder_paths(path, ref, failures)
            _engine_paths(path, ref, failures)
            if nvdec:
                _emulated_nvdec_path(path, ref, failures)
        _loader_path(paths, refs, failures, num_workers=0)
    return failures


def _pool_path(paths: list[Path], refs: list[np.ndarray]) -> list[str]:
    """In this process, not a forked child: torch refuses intra-op work on new
    threads of a child forked after the parent made its thread pool."""
    failures: list[str] = []
    bounds = contextlib.nullcontext() if os.environ.get(PLAIN_MEMORY) else guarded_frame_memory()
    with bounds, DecodePool("cpu", sessions=2) as pool:
        futures = [pool.submit(path, indices=[1, 0, 1], dimension_order="NHWC") for path in paths]
        for path, ref, future in zip(paths, refs, futures, strict=True):
            _check(failures, f"{path.stem} pool", future.result().data, ref[[1, 0, 1]])
    return failures


def _loader_path(paths: list[Path], refs: list[np.ndarray], failures: list[str], num_workers: int) -> None:
    dataset = ClipDataset([str(p) for p in paths], sampler="regular_indices", num_clips=1,
                          num_frames_per_clip=FRAMES, dimension_order="NHWC", seed=0)
    loader = ClipLoader(dataset, batch_size=1, num_workers=num_workers, seed=0,
                        multiprocessing_context="fork" if num_workers else None)
    for batch in loader:
        index = int(batch.indices[0])
        _check(failures, f"{paths[index].stem} loader ({num_workers} workers)", batch.data[0], refs[index])


@pytest.fixture(scope="module", params=list(SOURCES))
def videos(request):
    videos = _videos(request.param)
    paths = [path for path, _ in videos]
    refs = ffmpeg_rgb24_of_files([(path, width, height) for path, (width, height) in videos])
    assert all(len(ref) == FRAMES for ref in refs)
    return request.param, paths, refs


def test_every_path_stays_inside_guarded_buffers_and_equals_ffmpeg(videos):
    pix_fmt, paths, refs = videos
    for path in paths:  # the format under test is what the decoder outputs
        with av.open(str(path)) as container:
            assert next(container.decode(video=0)).format.name in DECODED.get(pix_fmt, (pix_fmt,)), path.name
    nvdec = pix_fmt in ("yuv420p", "yuv444p")  # NVDEC's 8-bit formats on Hopper
    failures = run_in_child(lambda: _all_paths(paths, refs, nvdec), timeout_s=300)
    assert not failures, f"{len(failures)} mismatches, first: {failures[:6]}"
    failures = _pool_path(paths, refs)
    assert not failures, f"{len(failures)} mismatches, first: {failures[:6]}"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """One CPU server over shared memory for every format's videos."""
    pytest.importorskip("grpc", reason="framefeed[serve] not installed")
    from framefeed.client import connect
    from framefeed.serve.launch import ServerProcess

    tmp = tmp_path_factory.mktemp("serve")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parent.parent),
                                                       os.environ.get("PYTHONPATH", "")]))
    args = ["--device", "cpu", "--allow-root", str(corpus.cache_dir()), "--sessions", "2",
            "--memory-budget", "128MiB", "--socket", str(tmp / "serve.sock")]
    with ServerProcess(args, env=env) as server, connect(server.address, timeout=120) as client:
        yield client


def test_service_slots_over_shared_memory_hold_every_pixel(videos, service):
    """Frames decoded by a server into its shared-memory slab, read by the client."""
    _, paths, refs = videos
    assert service.transport == "shm"
    failures: list[str] = []
    for path, ref in zip(paths, refs, strict=True):
        batch = service.submit(str(path), indices=[2, 0, 2], dimension_order="NHWC").result()
        _check(failures, f"{path.stem} service", batch.data, ref[[2, 0, 2]])
        batch.release()
    assert not failures, failures[:6]


def test_loader_workers_write_every_pixel(videos):
    _, paths, refs = videos
    failures: list[str] = []
    _loader_path(paths, refs, failures, num_workers=2)
    assert not failures, failures[:6]
