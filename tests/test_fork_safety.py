"""Children forked by framefeed never finalize the parent's garbage: a
finalizer that joins a parent thread or takes its lock would hang them
(`framefeed.fork_safety`)."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest

from framefeed.data import ClipDataset, ClipLoader
from framefeed.samples import VideoSpec, encode_video
from framefeed.testing.guard_pages import run_in_child


class _Finalized:
    """Part of a reference cycle: only the collector frees it. Its finalizer
    leaves a file named after the process that ran it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.cycle = self

    def __del__(self) -> None:
        (self.folder / f"finalized-by-{os.getpid()}").touch()


def _leave_garbage(folder: Path) -> None:
    """A cycle the parent dropped but has not collected yet."""
    gc.disable()  # re-enabled by the caller: the cycle must outlive this call
    _Finalized(folder)


def _finalizers_elsewhere(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != f"finalized-by-{os.getpid()}")


def test_run_in_child_never_finalizes_the_parents_garbage(tmp_path):
    _leave_garbage(tmp_path)
    try:
        collected = run_in_child(lambda: gc.collect(), timeout_s=60)
    finally:
        gc.enable()
    assert collected == 0
    assert _finalizers_elsewhere(tmp_path) == []
    assert (tmp_path / f"finalized-by-{os.getpid()}").exists()  # collected here, before the fork


@pytest.mark.parametrize("persistent_workers", [False, True])
def test_forked_loader_workers_never_finalize_the_parents_garbage(tmp_path, persistent_workers):
    video = encode_video(tmp_path / "clip.mp4", VideoSpec(width=64, height=48, num_frames=8))
    dataset = ClipDataset([str(video)] * 4, sampler="regular_indices", num_clips=1, num_frames_per_clip=2, seed=0)
    marks = tmp_path / "marks"
    marks.mkdir()
    loader = ClipLoader(dataset, batch_size=2, num_workers=2, seed=0, multiprocessing_context="fork",
                        persistent_workers=persistent_workers, worker_init_fn=lambda _: gc.collect())
    for _ in range(2):  # a second epoch starts new workers unless they persist
        _leave_garbage(marks)
        try:
            assert sum(len(batch.indices) for batch in loader) == 4
        finally:
            gc.enable()
    assert _finalizers_elsewhere(marks) == []
