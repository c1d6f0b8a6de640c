"""Plans and packet bundles built in a CUDA-free `spawn` worker, decoded in
this process: the same frames, pts and durations as `VideoDecoder`, for
every corpus file, both seek modes and every backend
(`backends_under_test.BACKENDS`; a file NVDEC cannot take falls back to the
CPU there with its stated reason).
A bundle missing a needed keyframe interval raises, naming the pts, instead
of returning another frame."""

from __future__ import annotations

import dataclasses
import multiprocessing
import pickle
import random
import warnings

import numpy as np
import pytest
import torch
from backends_under_test import BACKENDS, check_routing, nvdec_pixel_error, open_selection
from shipping_worker import ship

import corpus
from framefeed import VideoDecoder
from framefeed.engine.demux.disposable import disposable_test_for
from framefeed.engine.executor import OutputBuffer, execute_plan
from framefeed.engine.packets import BundleSource, MissingPacketsError
from framefeed.engine.plan import DecodePlan

MODES = ["exact", "approximate"]
IDS = [f.name for f in corpus.FILES]


@pytest.fixture(scope="module")
def worker():
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        yield pool


def requests_for(decoder: VideoDecoder, name: str) -> list[dict]:
    """Random indices with duplicates, an index range, times, a time range."""
    rng = random.Random(name)
    count = len(decoder)
    indices = [rng.randrange(count) for _ in range(6)]
    indices += [indices[0], indices[-1]]
    start = rng.randrange(max(count - 8, 1))
    begin, end = decoder.metadata.begin_stream_seconds, decoder.metadata.end_stream_seconds
    times = [begin + (end - begin) * rng.random() for _ in range(5)]
    times.append(times[0])
    span = (end - begin) / 5
    low = begin + (end - begin - span) * rng.random()
    return [{"indices": indices}, {"indices": list(range(start, min(start + 8, count), 2))},
            {"seconds": times}, {"time_range": (low, low + span)}]


def expected(decoder: VideoDecoder, request: dict):
    if "indices" in request:
        return decoder.get_frames_at(request["indices"])
    if "seconds" in request:
        return decoder.get_frames_played_at(request["seconds"])
    return decoder.get_frames_played_in_range(*request["time_range"])


_shipped: dict[tuple[str, str], tuple] = {}


def shipped_for(worker, entry, mode):
    key = (entry.name, mode)
    if key not in _shipped:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            decoder = VideoDecoder(entry.path, seek_mode=mode, dimension_order="NHWC")
            requests = requests_for(decoder, entry.name)
            truths = [expected(decoder, request) for request in requests]
        results, cuda_modules = worker.apply(ship, (str(entry.path), mode, requests))
        assert cuda_modules == [], f"the worker imported {cuda_modules}"
        _shipped[key] = (requests, truths, results)
    return _shipped[key]


def execute(plan: DecodePlan, bundle, backend):
    params = bundle.params
    disposable = disposable_test_for(params.codec, params.extradata)
    height, width = (params.height, params.width) if params.rotation_quarter_turns % 2 == 0 else (
        params.width, params.height)

    def allocate(count):
        return OutputBuffer.allocate(count, height, width, backend.output_device)

    out = allocate(plan.slot_count) if plan.time_range is None else None
    return execute_plan(plan, BundleSource(bundle), backend, out, disposable=disposable, allocate=allocate)


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("entry", corpus.FILES, ids=IDS)
def test_shipped_plans_decode_like_video_decoder(worker, entry, mode, kind):
    requests, truths, results = shipped_for(worker, entry, mode)
    for request, truth, (plan, bundle) in zip(requests, truths, results, strict=True):
        plan, bundle = pickle.loads(pickle.dumps((plan, bundle)))  # values, nothing live
        selection = open_selection(kind, bundle.params)
        backend = selection.backend
        on_nvdec = check_routing(entry, kind, backend, selection.status)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = execute(plan, bundle, backend)
        backend.close()
        what = f"{entry.name} {mode} {kind} {request}"
        assert out.pts_seconds.tolist() == truth.pts_seconds.tolist(), what
        assert out.duration_seconds.tolist() == truth.duration_seconds.tolist(), what
        got = out.frames.cpu()
        if on_nvdec:  # NVDEC's colour conversion against swscale's
            error = nvdec_pixel_error(entry, got, truth.data)
            assert not error, f"{what}: {error}"
        else:
            assert torch.equal(got, truth.data), what


def test_a_bundle_without_a_needed_keyframe_interval_names_the_missing_pts(worker):
    entry = corpus.BY_NAME["h264_open_gop.mp4"]  # keyframes every 30 frames
    (plan, bundle), = worker.apply(ship, (str(entry.path), "exact", [{"indices": [5, 70]}]))[0]
    assert len(plan.seek_points) == 2 and len(bundle.stretches) == 2
    second = bundle.stretches[1]
    # Drop the second keyframe interval: the bundle then ends after the first.
    keep = second.first
    lacking = dataclasses.replace(
        bundle, payload=bundle.payload[:bundle.offsets[keep]], offsets=bundle.offsets[:keep + 1],
        pts=bundle.pts[:keep], dts=bundle.dts[:keep], durations=bundle.durations[:keep],
        flags=bundle.flags[:keep], stretches=bundle.stretches[:1])
    backend = open_selection("cpu", bundle.params).backend
    target_pts = plan.runs[1].targets[0].pts
    last_held = int(lacking.pts.max())
    with pytest.raises(MissingPacketsError, match=rf"Frame 70 \(pts {target_pts}") as info:
        execute(plan, lacking, backend)
    assert f"stop after pts {last_held}" in str(info.value)
    # A bundle whose interval is cut short before the target: the target's pts is named.
    cut = second.first + 3
    short = dataclasses.replace(
        bundle, payload=bundle.payload[:bundle.offsets[cut]], offsets=bundle.offsets[:cut + 1],
        pts=bundle.pts[:cut], dts=bundle.dts[:cut], durations=bundle.durations[:cut], flags=bundle.flags[:cut],
        stretches=[bundle.stretches[0], dataclasses.replace(second, stop=cut)])
    with pytest.raises(MissingPacketsError, match=rf"Frame 70 \(pts {target_pts}"):
        execute(plan, short, open_selection("cpu", bundle.params).backend)
    # The complete bundle decodes.
    out = execute(plan, bundle, open_selection("cpu", bundle.params).backend)
    reference = corpus.reference_frames(entry.name)
    assert np.array_equal(out.frames[1].numpy(), reference[70].rgb)
