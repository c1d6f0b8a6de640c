"""`framefeed.data`: ClipDataset and ClipLoader.

Clips are checked against PyAV's sequential decode (pixels by pts, and the
sampler's index spacing in display order); determinism across worker counts
and start methods, epochs, DistributedSampler shards, bad input both ways,
and the CUDA target's path (workers plan and read packets, a `DecodePool`
in this process decodes: on the CPU backend, and on the emulated NVDEC
decoder of `gpu_fixtures`), with workers checked from the inside for CUDA
modules. Few, small files: spawn workers are slow on small machines.
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
import warnings

import av
import numpy as np
import pytest
import torch
from data_worker import ReportingDataset
from gpu_fixtures import emulated_runtime
from torch.utils.data import DistributedSampler

from framefeed.data import (
    ClipDataset,
    ClipLoader,
    ClipLoadError,
    ItemKey,
    ShippedClips,
    SkippedItem,
)
from framefeed.data._batch import collate_items
from framefeed.samples import VideoSpec, encode_video, x264_options
from framefeed.transforms import RandomCrop, Resize

SIZE = (64, 48)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Five small videos of one size (H.264 with B-frames and VP9), a
    3-frame one, one of another size, one of garbage, one truncated."""
    root = tmp_path_factory.mktemp("clip-data")
    width, height = SIZE
    made = {}
    for i, frames in enumerate((40, 33, 47, 36)):
        made[f"h264_{i}"] = encode_video(root / f"h264_{i}.mp4", VideoSpec(
            width=width, height=height, num_frames=frames, fps=25, codec_options=x264_options(12), seed=i))
    made["vp9"] = encode_video(root / "vp9.webm", VideoSpec(codec="libvpx-vp9", width=width, height=height,
                                                            num_frames=30, fps=25, seed=9))
    made["short"] = encode_video(root / "short.mp4", VideoSpec(width=width, height=height, num_frames=3, seed=4,
                                                               codec_options=x264_options(12)))
    made["other_size"] = encode_video(root / "other_size.mp4", VideoSpec(width=80, height=64, num_frames=20,
                                                                         codec_options=x264_options(12)))
    garbage = root / "garbage.mp4"
    garbage.write_bytes(b"\x00\x00\x00\x18ftypmp42" + random.Random(0).randbytes(20000))
    made["garbage"] = garbage
    made["truncated"] = _truncated(root)
    return {name: str(path) for name, path in made.items()}


def _truncated(root):
    """An MP4 with its index first, cut in half: it opens and plans, and
    decoding past the cut fails."""
    whole = encode_video(root / "whole.mp4", VideoSpec(width=SIZE[0], height=SIZE[1], num_frames=100,
                                                       codec_options=x264_options(25)))
    faststart = root / "faststart.mp4"
    with av.open(str(whole)) as src, av.open(str(faststart), "w", options={"movflags": "faststart"}) as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.size:
                packet.stream = out
                dst.mux(packet)
    half = root / "truncated.mp4"
    half.write_bytes(faststart.read_bytes()[: faststart.stat().st_size // 2])
    return half


def good(videos):
    return [videos[name] for name in ("h264_0", "h264_1", "h264_2", "h264_3", "vp9")]


_references: dict[str, tuple[list[float], list[np.ndarray]]] = {}


def reference(path):
    """PyAV's sequential decode: display-order pts (seconds) and RGB frames."""
    if path not in _references:
        with av.open(path) as container:
            frames = [(f.time, f.to_ndarray(format="rgb24", interpolation="BICUBIC"))
                      for f in container.decode(video=0)]
        frames.sort(key=lambda pair: pair[0])
        _references[path] = ([t for t, _ in frames], [rgb for _, rgb in frames])
    return _references[path]


@dataclasses.dataclass
class Seen:
    """What a test compares of one batch."""

    indices: list[int]
    sources: list[str]
    labels: object
    pts: list[list[float]]
    data: torch.Tensor


def collect(loader, epochs=1):
    seen = []
    for _ in range(epochs):
        for batch in loader:
            labels = batch.labels.tolist() if isinstance(batch.labels, torch.Tensor) else batch.labels
            seen.append(Seen(batch.indices.tolist(), batch.sources, labels, batch.pts_seconds.tolist(),
                             batch.data.cpu()))
    return seen


def assert_same(got, expected, tolerance=0):
    assert len(got) == len(expected)
    for mine, theirs in zip(got, expected, strict=True):
        assert (mine.indices, mine.sources, mine.labels, mine.pts) == (
            theirs.indices, theirs.sources, theirs.labels, theirs.pts)
        if tolerance:
            assert (mine.data.int() - theirs.data.int()).abs().max().item() <= tolerance
        else:
            assert torch.equal(mine.data, theirs.data)


def assert_matches_pyav(seen, step):
    """Every clip frame is PyAV's frame of that pts, and a clip's frames are
    `step` apart in display order (or repeat the last one, the default policy)."""
    for batch in seen:
        for clip, (source, clip_pts) in enumerate(zip(batch.sources, batch.pts, strict=True)):
            times, frames = reference(source)
            positions = [times.index(t) for t in clip_pts]
            for position, frame in zip(positions, batch.data[clip], strict=True):
                assert np.array_equal(frame.permute(1, 2, 0).numpy(), frames[position])
            gaps = {b - a for a, b in zip(positions, positions[1:], strict=False)}
            assert gaps <= {step, 0}, (source, positions)


def loader_for(dataset, **options):
    options.setdefault("batch_size", 2)
    return ClipLoader(dataset, **options)


# -- determinism ------------------------------------------------------------------------------------------

_baseline: dict[str, list[Seen]] = {}


def index_dataset(videos, **extra):
    return ClipDataset(good(videos), labels=[10, 11, 12, 13, 14], sampler="random_indices", num_clips=2,
                       num_frames_per_clip=3, num_indices_between_frames=2, **extra)


def baseline(videos):
    if "indices" not in _baseline:
        _baseline["indices"] = collect(loader_for(index_dataset(videos), shuffle=True, seed=7))
    return _baseline["indices"]


def test_batches_hold_every_clip_of_their_videos_as_pyav_decodes_them(videos):
    seen = baseline(videos)
    assert [len(batch.indices) for batch in seen] == [4, 4, 2]  # 2 videos x 2 clips, last batch 1 video
    assert sorted({i for batch in seen for i in batch.indices}) == [0, 1, 2, 3, 4]
    for batch in seen:
        assert batch.data.shape[1:] == (3, 3, SIZE[1], SIZE[0]) and batch.data.dtype == torch.uint8
        assert batch.labels == [10 + i for i in batch.indices]
        assert batch.sources == [good(videos)[i] for i in batch.indices]
    assert_matches_pyav(seen, step=2)


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_same_clips_whatever_the_number_of_workers(videos, context):
    expected = baseline(videos)
    for workers in (1, 2):
        loader = loader_for(index_dataset(videos), shuffle=True, seed=7, num_workers=workers,
                            multiprocessing_context=context)
        assert_same(collect(loader), expected)


def test_a_seed_gives_the_same_clips_for_timestamp_samplers_and_the_dataset_alone(videos):
    dataset = ClipDataset(good(videos), sampler="random_timestamps", num_clips=3, num_frames_per_clip=2,
                          seek_mode="approximate")
    first = collect(loader_for(dataset, seed=11, num_workers=2, multiprocessing_context="fork"))
    assert_same(collect(loader_for(dataset, seed=11)), first)
    assert_matches_pyav(first, step=1)
    # The dataset on its own: a seeded item is the same whenever it is fetched.
    seeded = ClipDataset(good(videos), sampler="random_timestamps", num_clips=3, seed=11)
    torch.manual_seed(0)
    once = seeded[2]
    torch.rand(5)
    again = seeded[ItemKey(2, 0, 11)]
    assert torch.equal(once.pts_seconds, again.pts_seconds) and torch.equal(once.data, again.data)
    # Unseeded, it draws from torch's global RNG (the caller's seed).
    unseeded = ClipDataset(good(videos), sampler="random_timestamps", num_clips=3)
    torch.manual_seed(5)
    first_draw = unseeded[2].pts_seconds
    torch.manual_seed(5)
    assert torch.equal(unseeded[2].pts_seconds, first_draw)


def test_epochs_reshuffle_order_and_clips_and_set_epoch_replays_one(videos):
    loader = loader_for(index_dataset(videos), shuffle=True, seed=3, batch_size=5)
    epoch0, epoch1 = collect(loader, epochs=2)
    assert loader.epoch == 1
    assert epoch0.indices != epoch1.indices  # the order changed ...
    pts0 = {i: p for i, p in zip(epoch0.indices, epoch0.pts, strict=True)}
    pts1 = {i: p for i, p in zip(epoch1.indices, epoch1.pts, strict=True)}
    assert pts0 != pts1  # ... and so did the clips
    loader.set_epoch(0)
    assert_same(collect(loader), [epoch0])
    # A fresh loader with the same seed walks through the same epochs.
    assert_same(collect(loader_for(index_dataset(videos), shuffle=True, seed=3, batch_size=5), epochs=2),
                [epoch0, epoch1])
    # Persistent workers learn the epoch from the keys they are sent.
    persistent = loader_for(index_dataset(videos), shuffle=True, seed=3, batch_size=5, num_workers=2,
                            multiprocessing_context="fork", persistent_workers=True)
    assert_same(collect(persistent, epochs=2), [epoch0, epoch1])
    # Without shuffle the order stays; the clips still change with the epoch.
    fixed = loader_for(index_dataset(videos), seed=3, batch_size=5)
    first, second = collect(fixed, epochs=2)
    assert first.indices == second.indices == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert first.pts != second.pts


def test_distributed_sampler_shards_do_not_overlap(videos):
    dataset = index_dataset(videos)
    shards = []
    for rank in (0, 1):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=5, drop_last=True)
        loader = loader_for(dataset, sampler=sampler, seed=5, num_workers=1, multiprocessing_context="fork")
        shard = [set(batch.indices) for batch in collect(loader, epochs=2)]
        assert sampler.epoch == loader.epoch == 1  # the loader's epoch reached the sampler
        shards.append(shard)
    (first0, second0), (first1, second1) = shards
    assert len(first0) == len(first1) == 2 and not first0 & first1
    assert len(second0) == len(second1) == 2 and not second0 & second1
    with pytest.raises(ValueError, match="mutually exclusive"):
        ClipLoader(dataset, sampler=DistributedSampler(dataset, num_replicas=2, rank=0), shuffle=True)


# -- what items hold ---------------------------------------------------------------------------------------


def test_all_frames_sampler(videos):
    path = videos["h264_1"]  # 33 frames
    item = ClipDataset([path], sampler="all", num_frames_per_clip=5)[0]
    times, frames = reference(path)
    assert item.data.shape == (7, 5, 3, SIZE[1], SIZE[0])
    assert item.pts_seconds.flatten().tolist() == times + [times[-1]] * 2  # last clip: repeat_last
    for got, position in zip(item.data.flatten(0, 1), [*range(33), 32, 32], strict=True):
        assert np.array_equal(got.permute(1, 2, 0).numpy(), frames[position])
    wrapped = ClipDataset([path], sampler="all", num_frames_per_clip=5, policy="wrap")[0]
    assert wrapped.pts_seconds[-1].tolist() == times[30:] + times[30:32]


def test_decoder_transforms_resize_and_crop_per_item(videos):
    path = videos["h264_2"]
    times, frames = reference(path)
    resized = ClipDataset([path], sampler="all", num_frames_per_clip=47, transforms=[Resize((24, 40))])[0]
    # The CPU path resizes the full RGB frame with torch's antialiased bilinear filter (torchvision's Resize).
    full = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(full, size=(24, 40), mode="bilinear", antialias=True)
    assert torch.equal(resized.data[0], expected)
    # A RandomCrop window is drawn per item from the item's RNG, before its clips, as a
    # VideoDecoder draws it at creation: the same crop and clips as that recipe.
    from framefeed import VideoDecoder
    from framefeed.data._items import item_seed
    from framefeed.samplers import clips_at_random_indices

    dataset = ClipDataset([path], num_clips=2, num_frames_per_clip=3, transforms=[RandomCrop((20, 30))], seed=4)
    item = dataset[ItemKey(0, 2, 4)]
    torch.manual_seed(item_seed(4, 2, 0))
    decoder = VideoDecoder(path, transforms=[RandomCrop((20, 30))])
    recipe = clips_at_random_indices(decoder, num_clips=2, num_frames_per_clip=3)
    assert torch.equal(item.data, recipe.data) and torch.equal(item.pts_seconds, recipe.pts_seconds)
    assert item.data.shape[-2:] == (20, 30)
    crops = {tuple(dataset[ItemKey(0, epoch, 4)].data[0, 0, 0, 0, :4].tolist()) for epoch in range(4)}
    assert len(crops) > 1  # a new window with each epoch


def test_a_batch_is_decoded_into_one_buffer_and_joined_without_a_copy(videos):
    dataset = index_dataset(videos, seed=1)
    items = dataset.__getitems__([0, 3, 1])
    batch = collate_items(items).clips
    assert batch.data.data_ptr() == items[0].data.data_ptr()  # a view of the items' buffer
    assert batch.data.stride(2) == 1  # channels innermost in memory, as VideoDecoder returns them
    alone = [dataset[i] for i in (0, 3, 1)]
    assert torch.equal(batch.data, torch.cat([item.data for item in alone]))
    assert torch.equal(batch.pts_seconds, torch.cat([item.pts_seconds for item in alone]))
    # A source failing while it decodes leaves a hole in the buffer: the rest is copied, still right.
    sources = [videos["h264_0"], videos["truncated"], videos["h264_1"]]
    holed = ClipDataset(sources, sampler="regular_indices", num_clips=3, num_frames_per_clip=2,
                        seek_mode="approximate", on_error="skip")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        items = holed.__getitems__([0, 1, 2])
        alone = [holed[0], holed[2]]
    assert isinstance(items[1], SkippedItem)
    first, last = items[0].data, items[2].data
    assert first.untyped_storage().data_ptr() == last.untyped_storage().data_ptr()  # one buffer ...
    assert last.storage_offset() > first.storage_offset() + first.numel()  # ... with a hole
    joined = collate_items(items).clips
    assert joined.data.data_ptr() != items[0].data.data_ptr()
    assert torch.equal(joined.data, torch.cat([item.data for item in alone]))


def test_a_short_video_follows_the_samplers_policy(videos):
    short = videos["short"]
    times, _ = reference(short)
    repeated = ClipDataset([short], num_clips=2, num_frames_per_clip=5)[0]
    assert repeated.pts_seconds.tolist() == [times + [times[-1]] * 2] * 2
    wrapped = ClipDataset([short], num_clips=1, num_frames_per_clip=5, policy="wrap")[0]
    assert wrapped.pts_seconds.tolist() == [times + times[:2]]
    strict = ClipDataset([short], num_clips=1, num_frames_per_clip=5, policy="error")
    with pytest.raises(ClipLoadError, match=re.escape(short) + r".*'error' policy"):
        strict[0]


def test_clips_of_different_sizes_need_a_resize(videos):
    sources = [videos["h264_0"], videos["other_size"]]
    with pytest.raises(ValueError, match="same frame size.*other_size.mp4"):
        collect(loader_for(ClipDataset(sources, num_frames_per_clip=2)))
    resized = collect(loader_for(ClipDataset(sources, num_frames_per_clip=2, transforms=[Resize((32, 32))])))
    assert resized[0].data.shape == (2, 2, 3, 32, 32)


def test_arguments_are_checked_when_the_dataset_is_made(videos):
    with pytest.raises(ValueError, match="Invalid sampler"):
        ClipDataset(good(videos), sampler="random")
    with pytest.raises(TypeError, match="takes no argument num_clips"):
        ClipDataset(good(videos), sampler="regular_timestamps", seconds_between_clip_starts=1.0, num_clips=2)
    with pytest.raises(TypeError, match="needs seconds_between_clip_starts"):
        ClipDataset(good(videos), sampler="regular_timestamps")
    with pytest.raises(ValueError, match="labels has 2 entries for 5 sources"):
        ClipDataset(good(videos), labels=[0, 1])
    with pytest.raises(ValueError, match="Invalid on_error"):
        ClipDataset(good(videos), on_error="ignore")
    with pytest.raises(ValueError, match="Invalid device"):
        ClipDataset(good(videos), device="mps")
    with pytest.raises(ValueError, match="Unsupported transform"):
        ClipDataset(good(videos), transforms=[lambda frames: frames])
    with pytest.raises(IndexError, match=r"\[0, 5\)"):
        ClipDataset(good(videos))[5]
    with pytest.raises(TypeError, match="ClipDataset"):
        ClipLoader(list(good(videos)))


# -- bad input ----------------------------------------------------------------------------------------------


def with_bad(videos, *bad):
    sources = good(videos)[:2] + [videos[name] if name in videos else name for name in bad] + good(videos)[2:4]
    return sources


@pytest.mark.parametrize("workers", [0, 1])
def test_a_corrupt_file_raises_with_its_path(videos, workers):
    dataset = ClipDataset(with_bad(videos, "garbage"), num_clips=1, num_frames_per_clip=2)
    loader = loader_for(dataset, num_workers=workers, multiprocessing_context="fork", timeout=120 if workers else 0)
    with pytest.raises(ClipLoadError, match=re.escape(videos["garbage"]) + r" \(dataset item 2\)"):
        collect(loader)


def test_skipped_files_warn_once_each_and_leave_the_others(videos, tmp_path):
    missing = str(tmp_path / "missing.mp4")
    dataset = ClipDataset(with_bad(videos, "garbage", missing), num_clips=2, num_frames_per_clip=2,
                          on_error="skip")
    loader = loader_for(dataset, num_workers=2, multiprocessing_context="fork", persistent_workers=True,
                        shuffle=True, seed=1, timeout=120)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seen = collect(loader, epochs=2)
    messages = [str(w.message) for w in caught if "Skipping" in str(w.message)]
    assert len(messages) == 2
    assert any(videos["garbage"] in m for m in messages) and any(missing in m and "not found" in m
                                                                  for m in messages)
    sources = [s for batch in seen for s in batch.sources]
    assert len(sources) == 2 * 4 * 2  # two epochs of four good videos with two clips each
    assert set(sources) == set(good(videos)[:4])
    # The dataset alone returns a SkippedItem and warns once per source.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = [dataset[2], dataset[2]]
    assert all(isinstance(item, SkippedItem) for item in items)
    assert len([w for w in caught if "Skipping" in str(w.message)]) == 1


# -- the CUDA target: plans and packets from workers, decoded by a pool in this process ----------------------


def test_items_for_a_cuda_target_are_plans_with_packets(videos):
    dataset = index_dataset(videos, device="cuda", seed=2)
    item = dataset[1]
    assert isinstance(item, ShippedClips) and item.planned.clip_shape == (2, 3)
    assert item.planned.plan.slot_count == 6 and len(item.planned.bundle) > 0
    assert not torch.cuda.is_initialized()


def test_a_cpu_pool_decodes_shipped_items_like_the_workers(videos):
    from framefeed.pool import DecodePool

    expected = baseline(videos)
    with DecodePool("cpu", sessions=2) as pool:
        loader = loader_for(index_dataset(videos), shuffle=True, seed=7, num_workers=1,
                            multiprocessing_context="fork", pool=pool)
        assert_same(collect(loader), expected)
        # Decoder transforms travel resolved with the plan (crop windows drawn in the worker).
        transformed = index_dataset(videos, transforms=[RandomCrop((40, 56)), Resize((24, 32))])
        shipped = collect(loader_for(transformed, seed=3, pool=pool))
    decoded = collect(loader_for(transformed, seed=3))
    assert_same(shipped, decoded)
    assert decoded[0].data.shape[-2:] == (24, 32)


@pytest.fixture
def emulated_cuda(monkeypatch):
    """torch believes in one GPU; a pool on it decodes with the emulated NVDEC (CPU output)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    return emulated_runtime()


def test_emulated_nvdec_decodes_what_cpu_workers_decode_and_workers_stay_cuda_free(videos, emulated_cuda):
    import sys

    from framefeed.pool import DecodePool

    expected = baseline(videos)
    # The items' labels become what the spawn worker finds inside itself (`ReportingDataset`).
    dataset = ReportingDataset(good(videos), labels=[10, 11, 12, 13, 14], sampler="random_indices", num_clips=2,
                               num_frames_per_clip=3, num_indices_between_frames=2)
    with DecodePool("cuda:0", sessions=2, nvdec_runtime=emulated_cuda) as pool:
        loader = loader_for(dataset, shuffle=True, seed=7, num_workers=1, multiprocessing_context="spawn",
                            pool=pool)
        seen = collect(loader)
        stats = pool.stats()
    reports = {tuple(label) for batch in seen for label in batch.labels}
    for batch in seen:
        batch.labels = [10 + i for i in batch.indices]
    assert_same(seen, expected, tolerance=2)  # NVDEC's colour conversion: within 2 levels of swscale
    # H.264 on (emulated) NVDEC; the 64x48 VP9 file is below NVDEC's VP9 minimum (128x128): CPU.
    assert stats.decoders_created >= 1 and stats.cpu_fallbacks == 1
    # From inside the spawn worker: no CUDA module imported, CUDA not initialised ...
    assert len(reports) == 1 and os.getpid() not in {pid for pid, _, _ in reports}
    assert all(found == () and not initialised for _, found, initialised in reports), reports
    assert "framefeed.engine.backends.gpu_decode" in sys.modules  # ... while this process imported the GPU backend


@pytest.mark.cuda
def test_on_a_gpu_the_loader_decodes_on_nvdec_what_cpu_workers_decode(videos):
    """Real NVDEC (skips without a GPU): batches on the GPU equal the CPU
    workers' within 2 levels; the spawn worker imported nothing CUDA."""
    pytest.importorskip("PyNvVideoCodec")
    expected = collect(loader_for(index_dataset(videos), shuffle=True, seed=7))
    dataset = ReportingDataset(good(videos), labels=[10, 11, 12, 13, 14], sampler="random_indices", num_clips=2,
                               num_frames_per_clip=3, num_indices_between_frames=2)
    with ClipLoader(dataset, batch_size=2, device="cuda", num_workers=1, multiprocessing_context="spawn",
                    shuffle=True, seed=7) as loader:
        batches = list(loader)
        stats = loader.pool.stats()
    assert all(batch.data.is_cuda for batch in batches)
    seen = [Seen(b.indices.tolist(), b.sources, [10 + i for i in b.indices.tolist()], b.pts_seconds.tolist(),
                 b.data.cpu()) for b in batches]
    assert_same(seen, expected, tolerance=2)
    assert stats.decoders_created >= 1  # the H.264 files on NVDEC (the 64x48 VP9 one is below its minimum)
    reports = {tuple(label) for batch in batches for label in batch.labels}
    assert all(found == () and not initialised for _, found, initialised in reports), reports


@pytest.mark.filterwarnings("ignore:.*could not be decoded")
@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_a_file_failing_in_the_pool_follows_on_error(videos, on_error):
    """The truncated file opens and plans in the worker; its last clip lies
    past the cut, so decoding it in the pool fails."""
    from framefeed.pool import DecodePool

    sources = [videos["h264_0"], videos["truncated"], videos["h264_1"]]
    dataset = ClipDataset(sources, sampler="regular_indices", num_clips=3, num_frames_per_clip=2,
                          seek_mode="approximate", on_error=on_error)
    assert isinstance(dataset.with_target(True)[1], ShippedClips)
    with DecodePool("cpu", sessions=2) as pool:
        loader = loader_for(dataset, batch_size=3, pool=pool)
        if on_error == "raise":
            with pytest.raises(ClipLoadError, match=re.escape(videos["truncated"]) + r" \(dataset item 1\)"):
                collect(loader)
            return
        with pytest.warns(UserWarning, match=re.escape(videos["truncated"])):
            seen = collect(loader)
    assert seen[0].sources == [videos["h264_0"]] * 3 + [videos["h264_1"]] * 3
