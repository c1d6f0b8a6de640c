"""What a `ClipDataset` item is, and how one is named: plain values that
cross from a DataLoader worker to the main process (no CUDA anywhere).

- `DecodedClips`: a CPU target's item, the clips decoded.
- `ShippedClips`: a CUDA target's item, a plan plus its packet bundle.
- `SkippedItem`: a source that failed with `on_error="skip"`.
- `ItemKey`: what `ClipLoader` asks the dataset for: the item index plus
  the seed and epoch its clips are drawn with.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any, NamedTuple

from torch import Tensor

from framefeed.data._sampling import PlannedClips


class ClipLoadError(RuntimeError):
    """A dataset item could not be loaded (the file is missing, corrupt or
    cannot give the clips the sampler asks for). The message names the
    source; the original exception is its `__cause__` (in the process that
    raised it: a DataLoader worker passes on the message and traceback only).

    Attributes:
        source: the source's description (a path), when known.
        index: the dataset index, when known.
    """

    def __init__(self, message: str, source: str | None = None, index: int | None = None) -> None:
        super().__init__(message)
        self.source = source
        self.index = index


def load_error(source: str, index: int, error: BaseException) -> ClipLoadError:
    return ClipLoadError(f"Could not load clips from {source} (dataset item {index}): "
                         f"{type(error).__name__}: {error}", source, index)


class ItemKey(NamedTuple):
    """A dataset index with the RNG inputs its clips are drawn with."""

    index: int
    epoch: int
    seed: int


def item_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one item's sampler draws: a hash of (seed, epoch, index),
    so an item's clips depend on nothing else (not the worker, not the order
    items are fetched in)."""
    digest = hashlib.blake2b(f"framefeed:{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # torch seeds are < 2**63 here


def describe_source(source: Any) -> str:
    """How messages and batches name a source: a path as given, else its kind."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<bytes ({memoryview(source).nbytes} bytes)>"
    if isinstance(source, Tensor):
        return f"<tensor ({source.numel()} bytes)>"
    name = getattr(source, "name", None)
    return name if isinstance(name, str) else f"<{type(source).__name__}>"


@dataclass
class DecodedClips:
    """One video's clips, decoded on the CPU.

    Attributes:
        index: the dataset index.
        source: the source's description.
        label: the item's label (None without labels).
        data: `(num_clips, T, C, H, W)` uint8 or float32 (or `(..., H, W, C)` for NHWC),
            after the dataset's transforms; a view of the buffer its batch was
            decoded into (`ClipDataset.__getitems__`).
        pts_seconds, duration_seconds: `(num_clips, T)` float64, seconds.
    """

    index: int
    source: str
    label: Any
    data: Tensor
    pts_seconds: Tensor
    duration_seconds: Tensor

    @property
    def num_clips(self) -> int:
        return int(self.data.shape[0])


@dataclass
class ShippedClips:
    """One video's clips as a plan plus packets, for a decoder elsewhere
    (`ClipLoader`'s `DecodePool`): everything here is CPU data.

    Attributes:
        index, source, label: as in `DecodedClips`.
        planned: the plan, its packet bundle and the clip and frame shapes.
    """

    index: int
    source: str
    label: Any
    planned: PlannedClips

    @property
    def num_clips(self) -> int:
        return self.planned.clip_shape[0]


@dataclass
class SkippedItem:
    """An item whose source failed with `on_error="skip"`: `error` is the
    exception's type and message."""

    index: int
    source: str
    label: Any
    error: str

    num_clips = 0
