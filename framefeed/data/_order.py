"""The order `ClipLoader` visits items in, batched, each index paired with
the seed and epoch its clips are drawn with (`ItemKey`).

Runs in the main process only (torch's DataLoader iterates batch samplers
there), so the epoch read at the start of an iteration reaches every worker
with the keys, persistent workers included.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sized
from typing import Any

import torch
from torch.utils.data import Sampler

from framefeed.data._items import ItemKey, item_seed


class EpochOrder(Sampler[int]):
    """`range(length)`, or with `shuffle` a permutation drawn from (seed, epoch)."""

    def __init__(self, length: int, shuffle: bool, seed: int) -> None:
        self.length = length
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.length))
        generator = torch.Generator()
        generator.manual_seed(item_seed(self.seed, self.epoch, -1))  # index -1: the order, no item
        return iter(torch.randperm(self.length, generator=generator).tolist())


class KeyedBatches(Sampler[list[ItemKey]]):
    """Batches of `ItemKey`s: indices from `sampler` (or, for a re-sharded
    epoch, the list `begin` gives), the first `start` of them left out,
    grouped by `batch_size` (the last smaller batch dropped with
    `drop_last`), with `seed` and the epoch `begin` set."""

    def __init__(self, sampler: Iterable[int], batch_size: int, drop_last: bool, seed: int) -> None:
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.seed = seed
        self._epoch = 0
        self._order: list[int] | None = None
        self._start = 0

    def begin(self, epoch: int, order: list[int] | None = None, start: int = 0) -> None:
        """What the next iteration walks: `epoch`'s keys, from `order` (None:
        the sampler's), from its `start`-th index on (indices before it are
        passed over, never fetched)."""
        self._epoch, self._order, self._start = epoch, order, start

    def __len__(self) -> int:
        if not isinstance(self.sampler, Sized):
            raise TypeError("the sampler has no len()")
        count = len(self.sampler)
        return count // self.batch_size if self.drop_last else -(-count // self.batch_size)

    def __iter__(self) -> Iterator[list[ItemKey]]:
        # Read the plan now, not at the first next(): it belongs to the iteration that asked.
        indices = iter(self._order if self._order is not None else self.sampler)
        return self._batches(itertools.islice(indices, self._start, None), self._epoch)

    def _batches(self, indices: Iterator[int], epoch: int) -> Iterator[list[ItemKey]]:
        batch: list[ItemKey] = []
        for index in indices:
            batch.append(ItemKey(int(index), epoch, self.seed))
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch


def forward_epoch(sampler: Any, epoch: int) -> None:
    """`sampler.set_epoch(epoch)` when it has one (DistributedSampler does)."""
    set_epoch = getattr(sampler, "set_epoch", None)
    if callable(set_epoch):
        set_epoch(epoch)
