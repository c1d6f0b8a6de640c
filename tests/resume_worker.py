"""Importable by spawned and forkserver processes for tests/test_resume.py:
a ledger of what was fetched and decoded, written from whichever process
did it, and the resuming side of a checkpoint run in a fresh process.

The ledger is a text file, one line per event (appends of a few bytes are
atomic): `items i j k` when a DataLoader fetch asks for dataset items
(`LedgerDataset`), `frames n` when a CPU backend closes having decoded n
frames (`count_frames`). Workers find the path on the dataset they were
given (a forkserver's environment is the one it started with).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch

from framefeed.data import ClipDataset, ClipLoader


class LedgerDataset(ClipDataset):
    """A `ClipDataset` that writes the indices of every fetch to `ledger`."""

    ledger: str = ""

    def __getitems__(self, keys):
        record(self.ledger, "items " + " ".join(str(int(getattr(key, "index", key))) for key in keys))
        return super().__getitems__(keys)


def record(path: str, line: str) -> None:
    if path:
        with open(path, "a") as ledger:
            ledger.write(line + "\n")


def read_ledger(path: str) -> tuple[list[int], int]:
    """(dataset indices fetched, in order; frames decoded by CPU backends)."""
    items: list[int] = []
    frames = 0
    if not os.path.exists(path):
        return items, frames
    with open(path) as ledger:
        for line in ledger:
            kind, *values = line.split()
            if kind == "items":
                items.extend(int(v) for v in values)
            elif kind == "frames":
                frames += int(values[0])
    return items, frames


def count_frames(path: str) -> Any:
    """From now on every CPU backend of this process records the frames it
    decoded when it closes (`framefeed.data` closes one per item). Returns
    the original `close`, to undo."""
    from framefeed.engine.backends.cpu_fallback.backend import CpuBackend

    original = CpuBackend.close

    def close(self):
        record(path, f"frames {self.frames_decoded}")
        original(self)

    CpuBackend.close = close
    return original


def worker_init(worker_id: int) -> None:
    """A DataLoader worker's `worker_init_fn`: count its frames into its dataset's ledger."""
    torch.set_num_threads(1)
    count_frames(torch.utils.data.get_worker_info().dataset.ledger)


def emulated_pool(patch_torch: bool = True) -> Any:
    """A `DecodePool` on "cuda:0" decoding with the emulated NVDEC
    (tests/gpu_fixtures.py). `patch_torch`: first make torch believe in one
    GPU, for good (in a process of its own; a test patches it itself)."""
    from gpu_fixtures import emulated_runtime

    from framefeed.pool import DecodePool

    if patch_torch:
        torch.cuda.is_available = lambda: True
        torch.cuda.device_count = lambda: 1
    return DecodePool("cuda:0", sessions=2, nvdec_runtime=emulated_runtime())


def make_loader(setup: dict[str, Any], pool: Any = None) -> ClipLoader:
    """The loader `setup` describes (the same in the saving and the resuming process)."""
    dataset = LedgerDataset(setup["sources"], labels=setup["labels"], on_error="skip", **setup["dataset"])
    dataset.ledger = setup["ledger"]
    workers = setup["workers"]
    options: dict[str, Any] = {}
    if workers:
        options = dict(multiprocessing_context=setup["context"], persistent_workers=True, worker_init_fn=worker_init,
                       timeout=120)
    return ClipLoader(dataset, num_workers=workers, pool=pool, **setup["loader"], **options)


def resume_each(setup: dict[str, Any], states: list[dict[str, Any]], out: str) -> None:
    """In a fresh process: one loader (persistent workers) resumes each of
    `states` in turn (loading it, then `set_epoch` with its epoch, as a
    training loop does); saves, per state, the batches, the items fetched
    and the frames decoded to `out`."""
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # the skipped file's warning
    pool = emulated_pool() if setup["target"] == "emulated-cuda" else None
    if not setup["workers"] and pool is None:
        count_frames(setup["ledger"])
    loader = make_loader(setup, pool)
    results = []
    for state in states:
        open(setup["ledger"], "w").close()
        decoded_before = pool.stats().frames_decoded if pool is not None else 0
        loader.load_state_dict(state)
        loader.set_epoch(state["epoch"])
        batches = [(b.indices.tolist(), b.sources, b.labels.tolist(), b.pts_seconds.tolist(), b.data.clone())
                   for b in loader]
        items, frames = read_ledger(setup["ledger"])
        if pool is not None:
            frames = pool.stats().frames_decoded - decoded_before
        results.append({"batches": batches, "items": items, "frames": frames, "state": loader.state_dict()})
    if pool is not None:
        pool.close()
    torch.save(results, out)
