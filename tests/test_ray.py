"""`framefeed.ray.read_clips` on a local Ray instance (2 CPUs), started once
for the module and stopped after it.

Rows are checked against direct sampling with the same seed
(`framefeed.data.ClipDataset`, whose items decode with `VideoDecoder`) and
their pixels against PyAV's sequential decode; directories, patterns and
`file://` URIs (read through pyarrow.fs); `on_error` both ways; the block
sizes on either side of the read/decode boundary (packets, not pixels);
`iter_torch_batches` and the streaming split Ray Train's shards use.
Source listing is tested without Ray. Few, small files: every execution
costs Ray task start-ups on a small machine.
"""

from __future__ import annotations

import os
import random
import threading
import warnings

import av
import numpy as np
import pytest
import torch

from framefeed.data import ClipDataset, ClipLoadError
from framefeed.ray._datasource import balanced_runs
from framefeed.ray._planning import clip_ranges
from framefeed.ray._sources import VIDEO_EXTENSIONS, expand_sources
from framefeed.samples import VideoSpec, encode_video, x264_options
from framefeed.transforms import RandomCrop, Resize

ray = pytest.importorskip("ray", reason="framefeed.ray needs the [ray] extra")

SIZE = (64, 48)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """Videos in nested directories (H.264 MP4 and MKV with B-frames, VP9
    WebM), a text file, and elsewhere a garbage file and a truncated one."""
    root = tmp_path_factory.mktemp("ray-clips")
    width, height = SIZE
    h264 = dict(width=width, height=height, fps=25, codec_options=x264_options(12))
    encode_video(root / "videos" / "cats" / "a.mp4", VideoSpec(num_frames=40, seed=1, **h264))
    encode_video(root / "videos" / "cats" / "deep" / "b.mkv", VideoSpec(num_frames=33, seed=2, **h264))
    encode_video(root / "videos" / "dogs" / "c.webm", VideoSpec(codec="libvpx-vp9", width=width, height=height,
                                                                num_frames=30, fps=25, seed=3))
    encode_video(root / "videos" / "dogs" / "d.mp4", VideoSpec(num_frames=47, seed=4, **h264))
    (root / "videos" / "cats" / "notes.txt").write_text("not a video")
    bad = root / "bad"
    bad.mkdir()
    (bad / "garbage.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + random.Random(0).randbytes(20000))
    _truncated(bad, root / "whole.mp4")
    return root


def _truncated(bad, whole):
    """An MP4 with its index first, cut in half: it opens and plans, and
    decoding past the cut fails."""
    encode_video(whole, VideoSpec(width=SIZE[0], height=SIZE[1], num_frames=100, codec_options=x264_options(25)))
    faststart = whole.with_name("faststart.mp4")
    with av.open(str(whole)) as src, av.open(str(faststart), "w", options={"movflags": "faststart"}) as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.size:
                packet.stream = out
                dst.mux(packet)
    (bad / "truncated.mp4").write_bytes(faststart.read_bytes()[: faststart.stat().st_size // 2])


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance for every test here (starting one costs seconds)."""
    # One GPU declared whether or not there is one: decode="cuda" actors then schedule here too.
    ray.init(num_cpus=2, num_gpus=1, object_store_memory=256 << 20, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    yield ray
    ray.shutdown()


def read_clips(*args, **kwargs):
    import framefeed.ray

    return framefeed.ray.read_clips(*args, **kwargs)


def videos(tree):
    """The four videos in listing order (directories sorted, recursively)."""
    base = tree / "videos"
    return [str(base / "cats" / "a.mp4"), str(base / "cats" / "deep" / "b.mkv"), str(base / "dogs" / "c.webm"),
            str(base / "dogs" / "d.mp4")]


_references: dict[str, dict[float, np.ndarray]] = {}


def reference(path):
    """PyAV's sequential decode: RGB frames (CHW) by pts in seconds."""
    if path not in _references:
        with av.open(path) as container:
            _references[path] = {float(f.time): f.to_ndarray(format="rgb24", interpolation="BICUBIC")
                                 .transpose(2, 0, 1) for f in container.decode(video=0)}
    return _references[path]


def by_key(rows):
    keyed = {(int(r["video_index"]), int(r["clip_index"])): r for r in rows}
    assert len(keyed) == len(rows), "a clip appears twice"
    return keyed


def assert_equals_direct_sampling(rows, sources, sampler, seed, **args):
    """Every row equals clip k of `ClipDataset(sources, seed=seed)[i]`, and
    (without transforms) its pixels PyAV's frames at its pts."""
    dataset = ClipDataset(sources, sampler=sampler, seed=seed, **args)
    expected = {}
    for i in range(len(sources)):
        item = dataset[i]
        for k in range(item.num_clips):
            expected[(i, k)] = (item.data[k], item.pts_seconds[k], item.duration_seconds[k])
    got = by_key(rows)
    assert sorted(got) == sorted(expected)
    for key, (data, pts, durations) in expected.items():
        row = got[key]
        assert row["pts_seconds"].tolist() == pts.tolist(), key
        assert row["duration_seconds"].tolist() == durations.tolist(), key
        assert np.array_equal(row["frames"], data.numpy()), key
        if args.get("transforms"):
            continue  # the dataset's transformed frames are the ground truth here
        truth = reference(sources[key[0]])
        for t, when in enumerate(row["pts_seconds"].tolist()):
            assert np.array_equal(row["frames"][t], truth[when]), (key, t)


# -- rows equal direct sampling -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("sampler", "args"), [
    ("random_indices", dict(num_clips=3, num_frames_per_clip=4, num_indices_between_frames=2)),
    ("random_timestamps", dict(num_clips=2, num_frames_per_clip=3, seconds_between_frames=0.1)),
    ("all", dict(num_frames_per_clip=5)),
])
def test_rows_equal_direct_sampling_with_the_same_seed(local_ray, tree, sampler, args):
    sources = videos(tree)
    # Groups of at most 12 frames: the 47-frame video's "all" clips are split
    # over several packet rows, decoded in separate tasks.
    ds = read_clips(str(tree / "videos"), sampler=sampler, seed=11, max_frames_per_group=12, **args)
    rows = ds.take_all()
    assert ds.sources == tuple(sources)
    assert_equals_direct_sampling(rows, sources, sampler, 11, **args)
    if sampler == "all":
        assert len(rows) == sum(-(-n // 5) for n in (40, 33, 30, 47))
    again = ds.take_all()  # a seed gives the same clips on every execution
    assert all(np.array_equal(a["frames"], b["frames"]) for a, b in zip(
        sorted(rows, key=_key), sorted(again, key=_key), strict=True))


def _key(row):
    return int(row["video_index"]), int(row["clip_index"])


TRANSFORMS = [Resize((40, 56)), RandomCrop((24, 32))]


def test_decoder_transforms_resolve_per_video_as_clip_dataset_resolves_items(local_ray, tree):
    """A RandomCrop window drawn from each video's RNG before its clips, the
    same window for every packet row of one video (groups of 3 frames)."""
    sources = videos(tree)
    args = dict(num_clips=2, num_frames_per_clip=3, transforms=TRANSFORMS)
    rows = read_clips(sources, sampler="random_indices", seed=5, max_frames_per_group=3, **args).take_all()
    assert {r["frames"].shape for r in rows} == {(3, 3, 24, 32)}
    assert_equals_direct_sampling(rows, sources, "random_indices", 5, **args)


def test_without_a_seed_each_execution_draws_new_clips(local_ray, tree):
    ds = read_clips(videos(tree)[3], sampler="random_indices", num_clips=4, num_frames_per_clip=1)
    first = sorted(r["pts_seconds"][0] for r in ds.take_all())
    draws = [sorted(r["pts_seconds"][0] for r in ds.take_all()) for _ in range(2)]
    assert any(d != first for d in draws)  # 47 frames, 4 clips: three equal draws are ~1e-9 likely


# -- sources --------------------------------------------------------------------------------------------------------


def test_directories_patterns_and_uris_with_labels(local_ray, tree):
    base = tree / "videos"
    entries = [str(base / "cats"), str(base / "**" / "*.webm"), (base / "dogs" / "d.mp4").as_uri()]
    ds = read_clips(entries, labels=["cat", "vp9", "dog"], sampler="regular_indices", num_clips=2,
                    num_frames_per_clip=2, dimension_order="NHWC", include_paths=True)
    rows = ds.take_all()
    seen = {(r["source"], r["label"]) for r in rows}
    assert seen == {(str(base / "cats" / "a.mp4"), "cat"), (str(base / "cats" / "deep" / "b.mkv"), "cat"),
                    (str(base / "dogs" / "c.webm"), "vp9"), ((base / "dogs" / "d.mp4").as_uri(), "dog")}
    uri_rows = [r for r in rows if r["source"].startswith("file://")]
    assert len(uri_rows) == 2 and all(r["frames"].shape == (2, SIZE[1], SIZE[0], 3) for r in uri_rows)
    truth = reference(str(base / "dogs" / "d.mp4"))  # read through pyarrow.fs as bytes
    for row in uri_rows:
        for t, when in enumerate(row["pts_seconds"].tolist()):
            assert np.array_equal(row["frames"][t], truth[when].transpose(1, 2, 0))


def test_listing_expands_directories_and_patterns_in_sorted_order(tree):
    base = tree / "videos"
    names = [f.name for f in expand_sources(str(base))]
    assert names == videos(tree)  # notes.txt is not a video
    assert [f.name for f in expand_sources(str(base / "*" / "*.mp4"))] == [videos(tree)[0], videos(tree)[3]]
    assert [f.name for f in expand_sources(str(base / "**" / "*.mkv"))] == [videos(tree)[1]]
    assert [f.name for f in expand_sources(str(base / "cats" / "[ab].*"))] == [videos(tree)[0]]
    every = [f.name for f in expand_sources(str(base / "cats"), file_extensions=None)]
    assert str(base / "cats" / "notes.txt") in every
    listed = expand_sources([str(base / "dogs"), base.as_uri() + "/cats/*.mp4"])
    assert [f.entry for f in listed] == [0, 0, 1]
    assert listed[2].name == (base / "cats" / "a.mp4").as_uri() and listed[2].filesystem is not None
    assert all(f.size == os.path.getsize(f.path) for f in listed)


def test_listing_in_a_given_filesystem_and_relative_patterns(tree, monkeypatch):
    import pyarrow.fs as pafs

    subtree = pafs.SubTreeFileSystem(str(tree), pafs.LocalFileSystem())
    listed = expand_sources(["videos/cats", "bad/*.mp4"], filesystem=subtree)
    assert [f.name for f in listed] == ["videos/cats/a.mp4", "videos/cats/deep/b.mkv", "bad/garbage.mp4",
                                        "bad/truncated.mp4"]
    assert listed[0].open() == (tree / "videos" / "cats" / "a.mp4").read_bytes()  # small: read whole
    monkeypatch.setattr("framefeed.ray._sources.WHOLE_FILE_LIMIT", 1000)  # larger: a seekable file object
    handle = listed[0].open()
    try:
        from framefeed.decoders import VideoDecoder

        first = VideoDecoder(handle)[0]
        assert np.array_equal(first.data.numpy(), reference(str(tree / "videos" / "cats" / "a.mp4"))[0.0])
    finally:
        handle.close()
    monkeypatch.chdir(tree / "videos")
    assert [f.name for f in expand_sources("*/*.webm")] == [os.path.join("dogs", "c.webm")]


def test_listing_names_what_matches_nothing(tree):
    with pytest.raises(FileNotFoundError, match="nothing.mp4"):
        expand_sources(str(tree / "nothing.mp4"))
    with pytest.raises(FileNotFoundError, match=r"\*\.avi"):
        expand_sources(str(tree / "videos" / "**" / "*.avi"))
    with pytest.raises(FileNotFoundError, match="nothing"):
        expand_sources((tree / "nothing").as_uri())
    with pytest.raises(TypeError, match="str or os.PathLike"):
        expand_sources([3])


def test_read_tasks_are_balanced_runs_of_files():
    assert balanced_runs([1] * 10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert balanced_runs([100, 1, 1, 1, 1], 3) == [(0, 1), (1, 2), (2, 5)]  # a big file alone
    assert balanced_runs([1, 1, 1, 100], 2) == [(0, 3), (3, 4)]
    assert balanced_runs([5], 8) == [(0, 1)]


# -- errors --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["garbage.mp4", "truncated.mp4"])
def test_a_corrupt_file_raises_an_error_naming_it(local_ray, tree, name):
    # garbage fails to open in the read stage. Truncated opens and plans in approximate mode (its
    # header promises 100 frames), then fails to decode past the cut.
    bad = str(tree / "bad" / name)
    ds = read_clips([videos(tree)[0], bad], sampler="all", num_frames_per_clip=10, seek_mode="approximate")
    for consume in (ds.take_all, lambda: list(ds.iter_batches(batch_size=4))):
        with pytest.raises(ClipLoadError) as caught:
            consume()
        # framefeed's message first and alone, not Ray's task header and retry advice; Ray's error is the cause
        assert str(caught.value).startswith(f"Could not read clips from {bad} (video 1 of the listing): "), \
            str(caught.value)[:500]
        assert "\n" not in str(caught.value) and "attempts" not in str(caught.value)
        assert (caught.value.source, caught.value.index) == (bad, 1)
        assert isinstance(caught.value.__cause__, ray.exceptions.RayTaskError)


def test_skipped_files_are_counted_in_the_stats(local_ray, tree):
    missing, nothing = str(tree / "missing.mp4"), str(tree / "videos" / "*.avi")
    sources = [videos(tree)[0], str(tree / "bad" / "garbage.mp4"), missing, videos(tree)[2], str(tree / "bad"),
               nothing]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = read_clips(sources, sampler="regular_indices", num_clips=3, num_frames_per_clip=2, on_error="skip",
                        seek_mode="approximate")
    # Skip means skip at listing time too (as ClipLoader skips a missing file): one warning per entry.
    assert [str(w.message) for w in caught] == [
        f"framefeed.ray.read_clips: skipping {missing}: FileNotFoundError: [Errno 2] Video file not found: "
        f"'{missing}'",
        f"framefeed.ray.read_clips: skipping {nothing}: FileNotFoundError: No video files found for "
        f"'{nothing}' (a pattern holding no file with extension {', '.join(VIDEO_EXTENSIONS)}; set "
        "file_extensions to read others)"]
    rows = ds.take_all()
    assert {ds.sources[r["video_index"]] for r in rows} == {videos(tree)[0], videos(tree)[2]}
    # The truncated file's last clip lies past its cut: it plans, and fails in the decode stage.
    assert set(ds.skipped()) == {str(tree / "bad" / "garbage.mp4"), str(tree / "bad" / "truncated.mp4"), missing,
                                 nothing}
    summary = "framefeed read_clips: 4 of 7 videos skipped (on_error='skip'), 5 skip events over all executions"
    assert ds.skip_summary() == summary
    stats = ds.stats()
    assert summary in stats and stats.splitlines()[-1] != summary  # the skipped videos follow the summary
    assert "garbage.mp4: " in stats and "truncated.mp4: " in stats and "missing.mp4: FileNotFoundError" in stats
    ds.take_all()  # a second execution: the same videos, more events (garbage.mp4 is listed twice)
    assert ds.skip_summary() == summary.replace("5 skip events", "8 skip events")
    listed = ClipDataset([videos(tree)[0]], sampler="regular_indices", num_clips=3, num_frames_per_clip=2,
                         seek_mode="approximate")
    assert [r["pts_seconds"].tolist() for r in sorted(rows, key=_key) if r["video_index"] == 0] == \
        listed[0].pts_seconds.tolist()


def test_bad_arguments_fail_before_reading(tree):
    with pytest.raises(ValueError, match="Invalid sampler"):
        read_clips(str(tree / "videos"), sampler="every")
    with pytest.raises(TypeError, match="takes no argument seconds_between_frames"):
        read_clips(str(tree / "videos"), sampler="random_indices", seconds_between_frames=1.0)
    with pytest.raises(ValueError, match="Invalid decode"):
        read_clips(str(tree / "videos"), decode="gpu")
    with pytest.raises(ValueError, match=r"Invalid concurrency \(0\) for decode='cpu'"):
        read_clips(str(tree / "videos"), concurrency=0)
    with pytest.raises(ValueError, match=r"Invalid concurrency \(\(2, 1\)\) for decode='cuda'"):
        read_clips(str(tree / "videos"), decode="cuda", concurrency=(2, 1))
    with pytest.raises(ValueError, match="labels has 1 entries for 2 source entries"):
        read_clips([str(tree / "videos" / "cats"), str(tree / "videos" / "dogs")], labels=[0])
    with pytest.raises(ValueError, match="Unsupported transform"):
        read_clips(str(tree / "videos"), transforms=[lambda frames: frames])
    with pytest.raises(ValueError, match=r"Invalid output_dtype \(torch.float16\)"):
        read_clips(str(tree / "videos"), output_dtype=torch.float16)


def test_a_restarted_read_starts_after_the_videos_consumed_without_reading_them(local_ray, tree):
    """`start=2` with a garbage file first: it is never opened (no error),
    and the rest keep their `video_index` and their clips of `epoch`."""
    sources = [str(tree / "bad" / "garbage.mp4"), *videos(tree)[:3]]
    args = dict(sampler="random_indices", num_clips=2, num_frames_per_clip=3, seed=4)
    rows = read_clips(sources, epoch=3, start=2, **args).take_all()
    dataset = ClipDataset(sources, **args)
    dataset.set_epoch(3)
    got = by_key(rows)
    assert sorted(got) == [(2, 0), (2, 1), (3, 0), (3, 1)]
    for (video, clip), row in got.items():
        item = dataset[video]
        assert row["pts_seconds"].tolist() == item.pts_seconds[clip].tolist()
        assert np.array_equal(row["frames"], item.data[clip].numpy())
    assert read_clips(sources, epoch=3, start=4, **args).take_all() == []  # all consumed
    with pytest.raises(ValueError, match=r"start \(5\) must be in \[0, 4\]"):
        read_clips(sources, start=5, **args)


# -- the read/decode boundary ----------------------------------------------------------------------------------------


def test_packets_not_pixels_cross_from_the_read_stage_to_the_decode_stage(local_ray, tree):
    sources = videos(tree)
    ds = read_clips(sources, sampler="all", num_frames_per_clip=8, max_frames_per_group=16).materialize()
    operators = {s.operator_name: s for s in operator_stats(ds.get_stats_summary())}
    read = next(s for name, s in operators.items() if name.startswith("ReadClipPackets"))
    decode = next(s for name, s in operators.items() if "decode_packet_batch" in name)
    assert "decode" not in read.operator_name  # two operators: the stages are not fused into one task
    packet_bytes = read.output_size_bytes.sum
    frame_bytes = decode.output_size_bytes.sum
    files_bytes = sum(os.path.getsize(s) for s in sources)
    pixels = sum(-(-n // 8) * 8 for n in (40, 33, 30, 47)) * SIZE[0] * SIZE[1] * 3
    # The read stage ships the files' packets (every frame here) plus small plans; never pixels.
    assert packet_bytes <= files_bytes * 1.2 + 4096 * read.output_num_rows.sum
    assert frame_bytes >= pixels
    assert frame_bytes >= 4 * packet_bytes
    assert read.output_num_rows.sum >= sum(-(-n // 16) for n in (40, 33, 30, 47))  # groups of <= 16 frames


def operator_stats(summary):
    """Every operator's stats summary, this dataset's and its parents'."""
    yield from summary.operators_stats
    for parent in summary.parents:
        yield from operator_stats(parent)


def test_groups_are_cut_where_fewest_frames_decode_twice():
    class Timeline:  # keyframes every 10 frames
        def targets_for_indices(self, indices):
            from framefeed.engine.plan import Target

            return [Target(i / 25, i, i) for i in indices]

        def keyframe_position(self, target):
            return target.frame_index // 10 * 10

    values = list(range(60))
    ranges = clip_ranges(Timeline(), "get_frames_at", values, 30, 2, max_frames=24)
    assert ranges[0][0] == 0 and ranges[-1][1] == 30
    assert all(b - a <= 12 for a, b in ranges)
    assert all(values[a * 2] % 10 == 0 for a, _ in ranges)  # each later group starts on a keyframe


# -- consumers ---------------------------------------------------------------------------------------------------------


def test_iter_torch_batches_and_streaming_split_shards(local_ray, tree):
    sources = videos(tree)
    ds = read_clips(sources, labels=[0, 1, 2, 3], sampler="random_indices", num_clips=2, num_frames_per_clip=3,
                    seed=1)
    batches = list(ds.iter_torch_batches(batch_size=3))
    assert [len(b["frames"]) for b in batches] == [3, 3, 2]
    first = batches[0]
    assert first["frames"].dtype == torch.uint8 and first["frames"].shape[1:] == (3, 3, SIZE[1], SIZE[0])
    assert first["pts_seconds"].dtype == torch.float64 and first["label"].dtype == torch.int64
    seen = sorted((int(v), int(c)) for b in batches for v, c in zip(b["video_index"], b["clip_index"], strict=True))
    assert seen == [(v, c) for v in range(4) for c in range(2)]

    # Ray Train's `get_dataset_shard` hands each worker one iterator of a streaming split.
    shards = ds.streaming_split(2, equal=True)
    keys: list[list[tuple[int, int]]] = [[], []]

    def consume(rank):
        for batch in shards[rank].iter_torch_batches(batch_size=2):
            keys[rank].extend(zip(batch["video_index"].tolist(), batch["clip_index"].tolist(), strict=True))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        workers = [threading.Thread(target=consume, args=(rank,)) for rank in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=300)
    assert len(keys[0]) == len(keys[1]) == 4
    assert sorted(keys[0] + keys[1]) == seen


def test_without_ray_the_import_says_what_to_install():
    import subprocess
    import sys

    code = "import sys; sys.modules['ray'] = None\nimport framefeed.ray"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "framefeed.ray needs Ray Data: pip install 'framefeed[ray]'" in result.stderr


# -- the CUDA decode stage, in this process, on the emulated NVDEC decoder ------------------------------------------


@pytest.fixture
def emulated_cuda(monkeypatch):
    """torch believes in one GPU; a pool on it decodes with the emulated NVDEC (CPU output)."""
    from gpu_fixtures import emulated_runtime

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    return emulated_runtime()


def packet_table(sources, sampler, seek_mode="exact", transforms=(), **args):
    """The read stage's packet rows for `sources`, built in this process."""
    import pyarrow as pa

    from framefeed.ray._datasource import ReadConfig, read_packet_blocks

    files = expand_sources(sources)
    config = ReadConfig(sampler, args, seek_mode, None, 4, 0, 12, "raise", transforms=tuple(transforms))
    return pa.concat_tables(read_packet_blocks(list(range(len(files))), files, config))


def test_the_cuda_decode_stage_decodes_what_the_cpu_stage_decodes(tree, emulated_cuda):
    from framefeed.ray._decode import DecodeConfig, NvdecClipDecoder, decode_packet_batch

    sources = videos(tree)
    table = packet_table(sources, "random_indices", num_clips=3, num_frames_per_clip=3)
    cpu = [r for batch in decode_packet_batch(table, DecodeConfig(sources, [0, 1, 2, 3])) for r in split(batch)]
    actor = NvdecClipDecoder(DecodeConfig(sources, [0, 1, 2, 3], pool_options={"sessions": 2,
                                                                                "nvdec_runtime": emulated_cuda}))
    try:
        gpu = [r for batch in actor(table) for r in split(batch)]
        stats = actor._pool.stats()
    finally:
        actor.close()
    assert [_key(r) for r in gpu] == [_key(r) for r in cpu] == [(v, c) for v in range(4) for c in range(3)]
    for a, b in zip(gpu, cpu, strict=True):
        assert a["pts_seconds"].tolist() == b["pts_seconds"].tolist() and a["label"] == b["label"]
        assert np.abs(a["frames"].astype(int) - b["frames"].astype(int)).max() <= 2  # NVDEC colour vs swscale
    # H.264 on (emulated) NVDEC; the 64x48 VP9 file is below NVDEC's VP9 minimum (128x128): CPU.
    assert stats.decoders_created >= 1 and stats.cpu_fallbacks == 1


def test_the_cuda_decode_stage_applies_the_resolved_transforms(tree, emulated_cuda):
    """The pipeline resolved in the read stage goes to `submit_plan` (the
    emulated NVDEC's fused crop and resize); it matches the CPU stage's."""
    from framefeed.ray._decode import DecodeConfig, NvdecClipDecoder, decode_packet_batch

    sources = videos(tree)
    table = packet_table(sources, "random_indices", transforms=TRANSFORMS, num_clips=2, num_frames_per_clip=3)
    cpu = [r for batch in decode_packet_batch(table, DecodeConfig(sources, None)) for r in split(batch)]
    actor = NvdecClipDecoder(DecodeConfig(sources, None, pool_options={"sessions": 2,
                                                                       "nvdec_runtime": emulated_cuda}))
    try:
        gpu = [r for batch in actor(table) for r in split(batch)]
    finally:
        actor.close()
    assert [_key(r) for r in gpu] == [_key(r) for r in cpu]
    for a, b in zip(gpu, cpu, strict=True):
        assert a["frames"].shape == b["frames"].shape == (3, 3, 24, 32)
        assert a["pts_seconds"].tolist() == b["pts_seconds"].tolist()
        difference = np.abs(a["frames"].astype(int) - b["frames"].astype(int))
        # NVDEC colour and the fused kernel's resize vs swscale and torch (as in test_pool)
        assert difference.mean() <= 1.0 and difference.max() <= 6, (difference.mean(), difference.max())


@pytest.mark.parametrize("output_dtype", [torch.float32, "float32", "auto"])
def test_output_dtype_in_both_decode_stages(tree, emulated_cuda, output_dtype):
    """float32 rows (or uint8 under "auto": these sources are 8-bit) from the CPU
    stage equal `ClipDataset`'s items; the CUDA stage's are within NVDEC's colour
    difference of them."""
    from framefeed import _arguments as args
    from framefeed.ray._decode import DecodeConfig, NvdecClipDecoder, decode_packet_batch

    sources = videos(tree)[:2]
    dtype = args.output_dtype_from_name(output_dtype)
    expected = torch.uint8 if dtype == "auto" else torch.float32
    table = packet_table(sources, "random_indices", num_clips=2, num_frames_per_clip=2)
    cpu = [r for b in decode_packet_batch(table, DecodeConfig(sources, None, output_dtype=dtype)) for r in split(b)]
    dataset = ClipDataset(sources, sampler="random_indices", seed=4, num_clips=2, num_frames_per_clip=2,
                          output_dtype=dtype)
    for row in cpu:
        item = dataset[int(row["video_index"])]
        assert row["frames"].dtype == {torch.float32: np.float32, torch.uint8: np.uint8}[expected]
        assert np.array_equal(row["frames"], item.data[int(row["clip_index"])].numpy())
    actor = NvdecClipDecoder(DecodeConfig(sources, None, output_dtype=dtype,
                                          pool_options={"sessions": 1, "nvdec_runtime": emulated_cuda}))
    try:
        gpu = [r for batch in actor(table) for r in split(batch)]
    finally:
        actor.close()
    scale = 255.0 if expected == torch.float32 else 1.0
    for a, b in zip(gpu, cpu, strict=True):
        assert a["frames"].dtype == b["frames"].dtype
        assert np.abs(a["frames"].astype(np.float64) - b["frames"].astype(np.float64)).max() * scale <= 3.5


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_a_file_failing_in_the_cuda_stage_follows_on_error(tree, emulated_cuda, on_error):
    from framefeed.ray._decode import DecodeConfig, NvdecClipDecoder

    sources = [videos(tree)[0], str(tree / "bad" / "truncated.mp4")]  # plans, then fails past its cut
    table = packet_table(sources, "regular_indices", "approximate", num_clips=3, num_frames_per_clip=2)
    actor = NvdecClipDecoder(DecodeConfig(sources, None, on_error=on_error,
                                          pool_options={"sessions": 2, "nvdec_runtime": emulated_cuda}))
    try:
        if on_error == "raise":
            with pytest.raises(ClipLoadError, match="truncated.mp4"):
                list(actor(table))
        else:
            rows = [r for batch in actor(table) for r in split(batch)]
            assert [_key(r) for r in rows] == [(0, 0), (0, 1), (0, 2)]
    finally:
        actor.close()


def split(batch):
    """A numpy batch as rows."""
    return [{name: column[i] for name, column in batch.items()} for i in range(len(batch["frames"]))]


def test_decode_actors_run_under_ray_with_a_cpu_pool(local_ray, tree):
    """The actor stage's Ray wiring (actor pool, calls on threads, one pool per
    actor) on the declared GPU, with the actors' pools on the CPU."""
    sources = videos(tree)
    args = dict(sampler="random_indices", num_clips=3, num_frames_per_clip=3, seed=2)
    ds = read_clips(sources, decode="cuda", concurrency=1, pool_options={"device": "cpu", "sessions": 2},
                    max_frames_per_group=3, **args)
    rows = ds.take_all()
    assert_equals_direct_sampling(rows, sources, "random_indices", 2, num_clips=3, num_frames_per_clip=3)


@pytest.mark.cuda
@pytest.mark.parametrize("transforms", [None, TRANSFORMS], ids=["full", "resize-crop"])
def test_on_a_gpu_read_clips_decodes_in_pool_actors_what_cpu_tasks_decode(local_ray, tree, transforms):
    sources = videos(tree)
    args = dict(sampler="random_indices", num_clips=3, num_frames_per_clip=3, seed=2, transforms=transforms)
    cpu = sorted(read_clips(sources, **args).take_all(), key=_key)
    gpu = sorted(read_clips(sources, decode="cuda", concurrency=1, num_gpus_per_actor=0.5,
                            **args).take_all(), key=_key)
    assert [_key(r) for r in gpu] == [_key(r) for r in cpu]
    for a, b in zip(gpu, cpu, strict=True):
        assert a["pts_seconds"].tolist() == b["pts_seconds"].tolist()
        assert a["frames"].shape == b["frames"].shape
        difference = np.abs(a["frames"].astype(int) - b["frames"].astype(int))
        if transforms is None:
            assert difference.max() <= 2
        else:  # the fused kernel's resize vs torch's (as in test_pool)
            assert difference.mean() <= 1.0 and difference.max() <= 6, (difference.mean(), difference.max())
