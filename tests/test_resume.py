"""Checkpoints of `ClipLoader` (`state_dict` / `load_state_dict`) and the
re-sharding of an interrupted epoch (`merge_states`).

The ground truth is one uninterrupted run: a loader saved after k batches
and resumed (JSON round trip; in a fresh spawned process for the worker,
start-method and CUDA-target combinations) must yield exactly the rest of
it: indices, sources, labels, pts and pixels. A ledger written from every
process (`resume_worker.py`) shows that the resumed run fetched only the
remaining items and decoded only their frames: the run over the first k
batches' items alone plus the resumed run decode what the whole epoch
decodes. The CUDA target runs on the emulated NVDEC of `gpu_fixtures`, in
a `DecodePool` in the loading process. Tiny videos, few frames: most cost
here is process start-up.
"""

from __future__ import annotations

import json
import multiprocessing
import warnings

import pytest
import torch
from resume_worker import (
    LedgerDataset,
    count_frames,
    emulated_pool,
    make_loader,
    read_ledger,
    resume_each,
)
from torch.utils.data import DistributedSampler

from framefeed.data import ClipDataset, ClipLoader, merge_states
from framefeed.samples import VideoSpec, encode_video, x264_options

pytestmark = pytest.mark.filterwarnings("ignore:Skipping .*garbage")

NUM_VIDEOS = 9
DATASET = dict(sampler="random_indices", num_clips=2, num_frames_per_clip=2, num_indices_between_frames=3)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Nine 64x48 H.264 files of 16 frames (B-frames, a keyframe every 6),
    with a garbage file at position 4 (skipped: `on_error="skip"`)."""
    root = tmp_path_factory.mktemp("resume")
    paths = [str(encode_video(root / f"v{i}.mp4", VideoSpec(width=64, height=48, num_frames=16, fps=25,
                                                            codec_options=x264_options(6), seed=i)))
             for i in range(NUM_VIDEOS)]
    garbage = root / "garbage.mp4"
    garbage.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    return [*paths[:4], str(garbage), *paths[4:]]


def labels_of(sources):
    return [100 + i for i in range(len(sources))]


def batch_tuple(batch):
    return (batch.indices.tolist(), batch.sources, batch.labels.tolist(), batch.pts_seconds.tolist(),
            batch.data.cpu().clone())


def assert_same_batches(got, expected):
    assert [b[:4] for b in got] == [b[:4] for b in expected]  # indices, sources, labels, pts
    for mine, theirs in zip(got, expected, strict=True):
        assert torch.equal(mine[4], theirs[4])


def run_saving_states(loader, epoch):
    """The uninterrupted epoch, with the state taken before it and after every batch."""
    loader.set_epoch(epoch)
    states, batches = [loader.state_dict()], []
    for batch in loader:
        batches.append(batch_tuple(batch))
        states.append(json.loads(json.dumps(loader.state_dict())))  # a plain JSON value
    return batches, states


def prefix_frames(sources, setup, epoch, indices, pool=None):
    """Frames decoded for `indices` alone (their clips in `epoch`): a
    0-worker loader visiting just them, in this process."""
    dataset = ClipDataset(sources, labels=labels_of(sources), on_error="skip", **setup["dataset"])
    loader = ClipLoader(dataset, sampler=list(indices), seed=setup["loader"]["seed"],
                        batch_size=setup["loader"]["batch_size"], pool=pool)
    loader.set_epoch(epoch)
    before = pool.stats().frames_decoded if pool is not None else 0
    ledger = setup["ledger"] + ".prefix"
    open(ledger, "w").close()
    undo = count_frames(ledger) if pool is None else None
    try:
        for _ in loader:
            pass
    finally:
        if undo is not None:
            from framefeed.engine.backends.cpu_fallback.backend import CpuBackend

            CpuBackend.close = undo
    return pool.stats().frames_decoded - before if pool is not None else read_ledger(ledger)[1]


# -- resumed in a new process ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("target", "workers", "context"), [
    ("cpu", 0, None),
    ("cpu", 1, "fork"),
    ("cpu", 2, "spawn"),
    ("cpu", 2, "forkserver"),
    ("emulated-cuda", 0, None),
    ("emulated-cuda", 1, "spawn"),
])
def test_a_state_after_any_batch_resumes_in_a_new_process(sources, tmp_path, monkeypatch, target, workers, context):
    """States after k = 0..4 batches of a shuffled epoch (3, 3, 3, 1 items;
    the garbage file skipped in one), taken while workers (and the pool)
    work ahead, each resumed in one fresh spawned process by a loader with
    `workers` started by `context`: the batches are the rest of the
    uninterrupted run, only the remaining items are fetched, and only their
    frames decoded."""
    setup = dict(sources=sources, labels=labels_of(sources), dataset=DATASET, target=target, workers=workers,
                 context=context, ledger=str(tmp_path / "ledger"), loader=dict(batch_size=3, shuffle=True, seed=21,
                                                                                prefetch=1))
    pool = None
    if target == "emulated-cuda":
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        pool = emulated_pool(patch_torch=False)
    try:
        # Saved with fork workers (cheap to start; on CUDA targets, which refuse
        # fork, with `context`'s), resumed with `context`'s: the state does not
        # depend on how workers start.
        saving = dict(setup, context=("fork" if target == "cpu" else context) if workers else None)
        expected, states = run_saving_states(make_loader(saving, pool), epoch=1)
        assert len(expected) == 4 and [s["position"] for s in states] == [0, 3, 6, 9, 10]
        assert states[-1]["finished"] and not any(s["finished"] for s in states[:-1])
        epoch_order = fetch_order(setup, epoch=1)
        full = prefix_frames(sources, setup, 1, epoch_order, pool)
        prefixes = [prefix_frames(sources, setup, 1, epoch_order[:s["position"]], pool) for s in states]
    finally:
        if pool is not None:
            pool.close()

    out = tmp_path / "resumed.pt"
    process = multiprocessing.get_context("spawn").Process(target=resume_each, args=(setup, states, str(out)))
    process.start()
    process.join(240)
    assert process.exitcode == 0, f"the resuming process failed (exit code {process.exitcode})"
    results = torch.load(out, weights_only=False)

    for k, (state, result) in enumerate(zip(states, results, strict=True)):
        assert_same_batches(result["batches"], expected[k:])
        # The prefix was never fetched (workers fetch concurrently: compared as multisets) ...
        assert sorted(result["items"]) == sorted(epoch_order[state["position"]:]), k
        assert result["frames"] == full - prefixes[k], k  # ... nor decoded
        assert result["state"]["position"] == 10 and result["state"]["finished"]
        assert result["state"]["skipped"] == [4]  # skipped once, before or after the resume
    assert full > prefixes[2] > prefixes[1] > 0


def fetch_order(setup, epoch):
    """The items of the epoch in the order a 0-worker loader fetches them
    (the ledger of a plain run; the garbage item included)."""
    plain = dict(setup, workers=0, ledger=setup["ledger"] + ".order")
    loader = make_loader(plain)
    loader.set_epoch(epoch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batches = [b.indices.tolist() for b in loader]
    order = read_ledger(plain["ledger"])[0]
    assert [i for i in order if i != 4] == [i for b in batches for i in dict.fromkeys(b)]
    return order


# -- in this process: every batch, skips, epochs, the pool in flight -----------------------------------------------


def test_every_place_in_an_epoch_including_a_skipped_batch_and_the_end(sources, tmp_path):
    """batch_size 1: the garbage file empties its batch, which is not
    yielded but is counted; a state after the last batch resumes with the
    next epoch; the resumed loader does not warn again about a file the
    saved one skipped."""
    dataset = ClipDataset(sources, labels=labels_of(sources), on_error="skip", **DATASET)

    def loader():
        return ClipLoader(dataset, batch_size=1, shuffle=True, seed=5)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        epoch0, states = run_saving_states(loader(), epoch=0)
        reference = loader()
        reference.set_epoch(1)
        epoch1 = [batch_tuple(b) for b in reference]
    assert len(epoch0) == 9 and 4 not in {i for b in epoch0 for i in b[0]}
    skipped_at = next(k for k, s in enumerate(states) if s["skipped"])
    assert states[skipped_at]["position"] == states[skipped_at - 1]["position"] + 2  # the empty batch counted
    for k, state in enumerate(states):
        resumed = loader()
        resumed.load_state_dict(state)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = [batch_tuple(b) for b in resumed]
        if k < len(epoch0):
            assert resumed.epoch == 0
            assert_same_batches(got, epoch0[k:])
        else:  # after the last batch: the next epoch, whole
            assert state["finished"] and resumed.epoch == 1
            assert_same_batches(got, epoch1)
        warned = [str(w.message) for w in caught if "Skipping" in str(w.message)]
        assert len(warned) == (1 if not state["skipped"] and k < len(epoch0) else 0), (k, warned)
    # set_epoch after loading: the state's epoch continues (a finished one stays finished) ...
    resumed = loader()
    resumed.load_state_dict(states[-1])
    resumed.set_epoch(0)
    assert list(resumed) == []
    resumed = loader()
    resumed.load_state_dict(states[3])
    resumed.set_epoch(0)
    assert_same_batches([batch_tuple(b) for b in resumed], epoch0[3:])
    # ... another epoch starts from its beginning, and so does the state taken before iterating it.
    resumed.load_state_dict(states[3])
    resumed.set_epoch(1)
    assert resumed.state_dict()["position"] == 0
    assert_same_batches([batch_tuple(b) for b in resumed], epoch1)


def test_a_loader_interrupted_with_batches_in_the_pool_resumes_after_the_last_one_handed_out(sources):
    """CUDA target (emulated NVDEC), prefetch 2: when the caller stops after
    one batch, three more are in the pool; the state counts the one."""
    from gpu_fixtures import emulated_runtime

    from framefeed.pool import DecodePool

    dataset = ClipDataset(sources, labels=labels_of(sources), on_error="skip", **DATASET)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.cuda, "is_available", lambda: True)
        patch.setattr(torch.cuda, "device_count", lambda: 1)
        with DecodePool("cuda:0", sessions=2, nvdec_runtime=emulated_runtime()) as pool:
            def loader():
                return ClipLoader(dataset, batch_size=2, shuffle=True, seed=8, prefetch=2, pool=pool)

            whole = [batch_tuple(b) for b in loader()]
            interrupted = loader()
            first = []
            for batch in interrupted:
                first.append(batch_tuple(batch))
                break
            state = interrupted.state_dict()
            assert state["position"] == 2 and state["batches"] == 1
            resumed = loader()
            resumed.load_state_dict(state)
            rest = [batch_tuple(b) for b in resumed]
    assert_same_batches(first + rest, whole)


@pytest.mark.cuda
def test_on_a_gpu_a_loader_resumed_mid_epoch_decodes_the_rest_on_nvdec(sources):
    """Real NVDEC (skips without a GPU): stopped after one batch with more in
    the pool, resumed by a new loader (spawn worker): the rest of the
    uninterrupted run, on the GPU, with fewer frames decoded than the whole."""
    pytest.importorskip("PyNvVideoCodec")
    dataset = ClipDataset(sources, labels=labels_of(sources), on_error="skip", **DATASET)

    def loader():
        return ClipLoader(dataset, batch_size=3, device="cuda", num_workers=1, multiprocessing_context="spawn",
                          shuffle=True, seed=21, prefetch=2)

    with loader() as uninterrupted:
        whole = [batch_tuple(b) for b in uninterrupted if b.data.is_cuda]
        whole_frames = uninterrupted.pool.stats().frames_decoded
    with loader() as interrupted:
        for batch in interrupted:
            first = [batch_tuple(batch)]
            break
        state = json.loads(json.dumps(interrupted.state_dict()))
    assert state["position"] == 3
    with loader() as resumed:
        resumed.load_state_dict(state)
        rest = [batch_tuple(b) for b in resumed if b.data.is_cuda]
        rest_frames = resumed.pool.stats().frames_decoded
    assert len(whole) == 4
    assert_same_batches(first + rest, whole)
    assert 0 < rest_frames < whole_frames


# -- ranks ------------------------------------------------------------------------------------------------------


def distributed_loader(dataset, rank, world, **options):
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=3)
    return ClipLoader(dataset, batch_size=2, sampler=sampler, seed=13, **options)


def take(loader, count, epoch):
    loader.set_epoch(epoch)
    batches = []
    for batch in loader:
        batches.append(batch_tuple(batch))
        if len(batches) == count:
            break
    return batches, loader.state_dict()


def clips_by_index(dataset, epoch):
    """Every item's clips in `epoch` (pts and pixels), from one plain pass:
    an item's clips depend only on (seed, epoch, index)."""
    loader = ClipLoader(dataset, batch_size=1, seed=13)
    loader.set_epoch(epoch)
    return {b.indices[0].item(): (b.pts_seconds.tolist(), b.data.clone()) for b in loader}


def test_each_rank_resumes_itself_and_refuses_another_ranks_state(sources):
    dataset = ClipDataset(sources, labels=labels_of(sources), on_error="skip", **DATASET)
    states = []
    for rank in (0, 1):
        whole = [batch_tuple(b) for b in _with_epoch(distributed_loader(dataset, rank, 2), 2)]
        head, state = take(distributed_loader(dataset, rank, 2), 1 + rank, 2)
        resumed = distributed_loader(dataset, rank, 2)
        resumed.load_state_dict(json.loads(json.dumps(state)))
        resumed.set_epoch(2)
        assert_same_batches(head + [batch_tuple(b) for b in resumed], whole)
        states.append(state)
    with pytest.raises(ValueError, match=r"DistributedSampler rank 1 of 2.*rank 0 of 2.*merge_states"):
        distributed_loader(dataset, 0, 2).load_state_dict(states[1])
    with pytest.raises(ValueError, match=r"rank 0 of 2.*rank 0 of 3.*merge_states"):
        distributed_loader(dataset, 0, 3).load_state_dict(states[0])


def _with_epoch(loader, epoch):
    loader.set_epoch(epoch)
    return loader


def test_re_sharding_2_to_3_then_3_to_2_sees_every_remaining_item_once(sources):
    """Two ranks stop after 1 and 2 batches; their merged state resumes on
    three ranks, which stop after 1, 0 and 1 batches; merged again, the
    rest finishes on two ranks. Every item of the epoch is seen exactly
    once over the three stages (8 items: DistributedSampler pads nothing),
    with the clips the item has in that epoch; the deal is deterministic."""
    good = [i for i in range(len(sources)) if i != 4]
    dataset = ClipDataset([sources[i] for i in good], labels=[100 + i for i in good], **dict(DATASET, num_clips=1))
    truth = clips_by_index(dataset, epoch=1)
    seen: list[int] = []
    stage1 = [take(distributed_loader(dataset, rank, 2), count, 1) for rank, count in ((0, 1), (1, 2))]
    merged = merge_states([json.loads(json.dumps(state)) for _, state in reversed(stage1)])  # any order
    assert merged == merge_states([state for _, state in stage1])
    assert merged["remaining"] == len(good) - 6 and json.loads(json.dumps(merged)) == merged
    stage2 = []
    for rank, count in ((0, 1), (1, 0), (2, 1)):
        loader = distributed_loader(dataset, rank, 3)
        loader.load_state_dict(merged)
        stage2.append(take(loader, count, 1) if count else ([], loader.state_dict()))
    merged_again = merge_states([state for _, state in stage2])
    stage3 = []
    for rank in (0, 1):
        loader = distributed_loader(dataset, rank, 2)
        loader.load_state_dict(merged_again)
        loader.set_epoch(1)
        stage3.append([batch_tuple(b) for b in loader])
    remaining3 = [i for batches in stage3 for b in batches for i in b[0]]
    assert abs(len(stage3[0]) - len(stage3[1])) <= 1 and merged_again["remaining"] == len(remaining3)
    for batches in [b for b, _ in stage1] + [b for b, _ in stage2] + stage3:
        for indices, _, labels, pts, data in batches:
            seen += indices
            assert labels == [100 + good[i] for i in indices]
            for clip, index in enumerate(indices):
                assert pts[clip] == truth[index][0][0] and torch.equal(data[clip], truth[index][1][0])
    assert sorted(seen) == list(range(len(good)))  # exactly once
    # Deterministic: the same merged state deals the same items again.
    again = distributed_loader(dataset, 0, 2)
    again.load_state_dict(merged_again)
    assert [b[0] for b in _collect(again, 1)] == [b[0] for b in stage3[0]]
    # Re-sharding onto one plain loader (no sampler) takes all that remains.
    single = ClipLoader(dataset, batch_size=2, seed=13)
    single.load_state_dict(merged_again)
    assert sorted(i for b in _collect(single, 1) for i in b[0]) == sorted(remaining3)
    # With 7 items, DistributedSampler pads rank 1 with rank 0's first item: it remains once.
    seven = ClipDataset([sources[i] for i in good[:7]], **DATASET)
    fresh = merge_states([distributed_loader(seven, rank, 2).state_dict() for rank in (0, 1)])
    assert fresh["remaining"] == 7 and not fresh["finished"]


def _collect(loader, epoch):
    loader.set_epoch(epoch)
    return [batch_tuple(b) for b in loader]


# -- refused states ---------------------------------------------------------------------------------------------


def test_a_state_of_another_dataset_seed_or_version_is_refused_naming_what_differs(sources, tmp_path):
    dataset = ClipDataset(sources, labels=labels_of(sources), on_error="skip", **DATASET)
    loader = ClipLoader(dataset, batch_size=3, shuffle=True, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        next(iter(loader))
    state = loader.state_dict()
    other_file = encode_video(tmp_path / "other.mp4", VideoSpec(width=64, height=48, num_frames=16, seed=99))
    cases = [
        (ClipDataset([*sources[:-1], str(other_file)], labels=labels_of(sources), **DATASET), {},
         "another dataset: its sources"),
        (ClipDataset(sources[:-1], labels=labels_of(sources)[:-1], **DATASET), {}, "dataset of 10 items.*has 9"),
        (ClipDataset(sources, labels=labels_of(sources)[::-1], **DATASET), {}, "its labels differ"),
        (ClipDataset(sources, labels=labels_of(sources), **dict(DATASET, num_clips=3)), {}, "sampling settings"),
        (dataset, dict(seed=2), "seed 1, this loader's seed is 2.*seed=1"),
        (dataset, dict(shuffle=False), "visiting the loader's own order \\(shuffle=True\\).*shuffle=False"),
    ]
    for other, options, message in cases:
        with pytest.raises(ValueError, match=message):
            ClipLoader(other, **{**dict(batch_size=3, shuffle=True, seed=1), **options}).load_state_dict(state)
    same = ClipLoader(dataset, batch_size=3, shuffle=True, seed=1)
    for broken, message in [({**state, "version": 2}, "format version 2"),
                            ({**state, "format": "torchdata"}, "not a ClipLoader state"),
                            ([1, 2], "not a ClipLoader state"),
                            ({**state, "position": -1}, "position is -1"),
                            ({**state, "position": 11}, "past the 10 items")]:
        with pytest.raises(ValueError, match=message):
            same.load_state_dict(broken)
    same.load_state_dict({})  # nothing to resume: as torchdata's StatefulDataLoader
    assert same.state_dict()["position"] == 0
    with pytest.raises(ValueError, match="disagree on epoch"):
        merge_states([state, {**state, "epoch": 3}])
    with pytest.raises(ValueError, match="ranks \\[0, 0\\]"):
        merge_states([state, state])
    custom = ClipLoader(dataset, batch_size=3, sampler=list(range(10)), seed=1)
    with pytest.raises(ValueError, match="cannot be recomputed"):
        merge_states([custom.state_dict()])
    with pytest.raises(ValueError, match="rank is unknown"):
        custom.load_state_dict(merge_states([state]))
    # Bytes sources are identified by their content.
    with open(sources[0], "rb") as file:
        data = file.read()
    as_bytes = ClipLoader(LedgerDataset([data], **DATASET), seed=1)
    changed = ClipLoader(LedgerDataset([data[:-1] + b"\x00"], **DATASET), seed=1)
    with pytest.raises(ValueError, match="its sources"):
        changed.load_state_dict(as_bytes.state_dict())
