"""The order `ClipLoader` visits items in, batched, each index paired with
the seed and epoch its clips are drawn with (`ItemKey`).

Runs in the main process only (torch's DataLoader iterates batch samplers
there), so the epoch read at the start of an iteration reaches every worker
with the keys, persistent workers included.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sized
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
    """Batches of `ItemKey`s: indices from `sampler`, grouped by `batch_size`
    (the last smaller batch dropped with `drop_last`), with `seed` and the
    epoch `epoch_of()` gives when an iteration starts."""

    def __init__(self, sampler: Iterable[int], batch_size: int, drop_last: bool, seed: int,
                 epoch_of: Callable[[], int]) -> None:
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.seed = seed
        self._epoch_of = epoch_of

    def __len__(self) -> int:
        if not isinstance(self.sampler, Sized):
            raise TypeError("the sampler has no len()")
        count = len(self.sampler)
        return count // self.batch_size if self.drop_last else -(-count // self.batch_size)

    def __iter__(self) -> Iterator[list[ItemKey]]:
        epoch = self._epoch_of()
        batch: list[ItemKey] = []
        for index in self.sampler:
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
