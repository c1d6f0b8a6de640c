"""`ClipLoader`: batches of clips for a training loop, from a `ClipDataset`.

    main process                                 DataLoader workers (CPU only)
    KeyedBatches --[ItemKey(index, epoch, seed)]--> ClipDataset.__getitems__
                                                    open, sample, then either
      CPU target  <----------- decoded clips ------ decode, a batch into one buffer
      CUDA target <----------- plan + packets ----- plan + read packets
      DecodePool (NVDEC) decodes, `prefetch` batches ahead of the training step

Workers never import `framefeed.engine.backends.gpu_decode`, CuPy or PyNvVideoCodec and never
initialise CUDA: the CUDA target's decoding happens in this process, in a
`DecodePool` whose threads work while the caller trains on the previous
batch. Clips depend only on (seed, epoch, index), never on which worker
fetched an item, so any `num_workers` and start method gives the same batches.

Checkpoints (`state_dict` / `load_state_dict`, as torchdata's
`StatefulDataLoader`): the loader counts the items behind each batch it
hands out (not those its workers or pool have fetched ahead), and a resumed
loader walks the epoch's order from there without fetching what lies before
(`framefeed.data._resume`).
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sized
from concurrent.futures import Future
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

from framefeed._validation import require_int
from framefeed._warnings import warn_user
from framefeed.data._batch import ClipBatch, ClipPart, WorkerBatch, collate_items, stack_clips
from framefeed.data._dataset import ClipDataset, skip_message
from framefeed.data._items import ShippedClips, SkippedItem, describe_source, load_error
from framefeed.data._order import EpochOrder, KeyedBatches, forward_epoch
from framefeed.data._resume import (
    EpochCursor,
    current_order,
    cursor_from_state,
    dataset_identity,
    describe_order,
    rank_state,
)
from framefeed.engine.backends.devices import resolve_device, worker_start_method
from framefeed.fork_safety import parent_garbage_kept_from_children


class ClipLoader:
    """Iterates `ClipBatch`es of a `ClipDataset` on `device`.

    Args:
        dataset: the `ClipDataset` (its own `device` is ignored: the loader's decides).
        batch_size: videos (dataset items) per batch; a batch holds all their
            clips, `(batch_size * num_clips, T, C, H, W)`.
        device: "cpu": workers decode. "cuda"/"cuda:N": workers plan and read
            packets; a `DecodePool` on the device decodes them in this process.
            None: `pool`'s device, else torch's default device.
        num_workers: DataLoader worker processes (0: in this process).
        shuffle: visit items in a new random order each epoch (from `seed`).
        seed: the seed of the order and of every item's clips; None: drawn
            once from torch's global RNG when the loader is made (give one
            explicitly with a `DistributedSampler`: every rank needs the same).
        sampler: the order of dataset indices instead of `shuffle` (e.g. a
            `DistributedSampler`: its `set_epoch` is called with the loader's).
        drop_last: drop the last batch when it has fewer than `batch_size` items.
        prefetch: CUDA target: batches handed to the pool ahead of the one
            being consumed (decoding overlaps the training step).
        multiprocessing_context: the workers' start method ("fork", "spawn",
            "forkserver") or context; None: torch's default on the CPU, and
            "forkserver" on CUDA, where "fork" is refused (ValueError): the
            process holds CUDA and pool threads (`worker_start_method`).
        persistent_workers, prefetch_factor, timeout, worker_init_fn: as for
            torch's `DataLoader`.
        pool: an open `DecodePool` to decode with (then the items are plans
            plus packets whatever its device); the caller keeps ownership.
            None: one is made on a CUDA `device` and closed by `close()`.
        pool_options: keyword arguments for the `DecodePool` the loader makes.

    Epochs: each iteration uses the epoch given by `set_epoch(e)` if it was
    called since the last iteration began, else the last epoch + 1 (the first
    is 0). With a fixed seed the n-th epoch's batches are the same for any
    `num_workers` and start method.

    Errors: a failing source raises `ClipLoadError` naming it
    (`on_error="raise"`), or is left out of its batch with one warning per
    source (`on_error="skip"`; a batch left with no clips is not yielded).

    Checkpoints: `state_dict()` says where the loader stands in its epoch;
    a loader made with the same dataset and arguments and given it by
    `load_state_dict` yields the batches the original would have yielded
    next, without fetching the items before them (see `state_dict`).

    Raises (at construction):
        TypeError: `dataset` is not a `ClipDataset`; wrong argument types.
        ValueError: `batch_size` or `prefetch` below 1, `shuffle` with `sampler`,
            a bad device; `pool` on another device than `device`.
        CudaUnavailableError: a CUDA device while torch sees none.
    """

    def __init__(
        self,
        dataset: ClipDataset,
        batch_size: int = 1,
        *,
        device: str | torch.device | None = None,
        num_workers: int = 0,
        shuffle: bool = False,
        seed: int | None = None,
        sampler: Sampler[int] | None = None,
        drop_last: bool = False,
        prefetch: int = 2,
        multiprocessing_context: Any = None,
        persistent_workers: bool = False,
        prefetch_factor: int | None = None,
        timeout: float = 0,
        worker_init_fn: Callable[[int], None] | None = None,
        pool: Any = None,
        pool_options: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(dataset, ClipDataset):
            raise TypeError(f"dataset must be a framefeed.data.ClipDataset, got {type(dataset).__name__}")
        batch_size = require_int("batch_size", batch_size)
        self.prefetch = require_int("prefetch", prefetch)
        if batch_size < 1 or self.prefetch < 1:
            raise ValueError(f"batch_size ({batch_size}) and prefetch ({self.prefetch}) must be at least 1")
        if sampler is not None and shuffle:
            raise ValueError("sampler and shuffle are mutually exclusive: shuffle with the sampler itself")
        if pool is not None:
            self.device = pool.device if device is None else resolve_device(device)
            if self.device != pool.device:
                raise ValueError(f"pool decodes on {pool.device}, but device is {self.device}")
        else:
            self.device = resolve_device(device)
        self.seed = int(torch.randint(0, 2**62, ()).item()) if seed is None else require_int("seed", seed)
        self.batch_size = batch_size
        self._ships = pool is not None or self.device.type == "cuda"
        self.dataset = dataset.with_target(self._ships, warn_skips=False)  # warned here, once per source
        self.sampler = sampler if sampler is not None else EpochOrder(len(dataset), bool(shuffle), self.seed)
        self.drop_last = bool(drop_last)
        self._batches = KeyedBatches(self.sampler, batch_size, self.drop_last, self.seed)
        options: dict[str, Any] = {}
        if num_workers > 0:
            if self._ships:  # this process will hold CUDA and pool threads: never fork it
                multiprocessing_context = worker_start_method(self.device, multiprocessing_context)
            options.update(multiprocessing_context=multiprocessing_context, persistent_workers=persistent_workers,
                           prefetch_factor=prefetch_factor, timeout=timeout, worker_init_fn=worker_init_fn)
        self._loader = DataLoader(self.dataset, batch_sampler=self._batches, num_workers=num_workers,
                                  collate_fn=collate_items, **options)
        self._pool = pool
        self._owns_pool = False
        self._pool_options = dict(pool_options or {})
        self._epoch = -1
        self._epoch_set = False
        self._warned: set[str] = set()
        self._cursor: EpochCursor | None = None  # the current (or last) iteration's place
        self._resume: EpochCursor | None = None  # a loaded state, for the next iteration
        self._identity: dict[str, Any] | None = None

    # -- epochs ---------------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        """The epoch of the current (or last) iteration; -1 before the first."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch `epoch` (its order and its clips).
        After `load_state_dict`, the state's own epoch continues where the
        state stood; another epoch starts from its beginning."""
        self._epoch = require_int("epoch", epoch)
        self._epoch_set = True

    def __len__(self) -> int:
        """Batches per epoch (fewer when skipped items empty a batch)."""
        return len(self._batches)

    # -- iteration ------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[ClipBatch]:
        cursor = self._upcoming()
        self._resume = None
        self._epoch, self._epoch_set = cursor.epoch, False
        order = current_order(cursor, self.seed)
        length = len(order) if order is not None else len(self.sampler) if isinstance(self.sampler, Sized) else None
        if length is not None:  # the items this epoch's batches will cover: `drop_last` drops a short tail
            tail = (length - cursor.position) % self.batch_size if self.drop_last else 0
            cursor.covered = length - tail
        self._cursor = cursor
        forward_epoch(self.sampler, cursor.epoch)
        self._batches.begin(cursor.epoch, order, cursor.position)
        # Workers start here, before any pool thread exists; forked ones must not finalize our objects.
        with parent_garbage_kept_from_children() if self._loader.num_workers else contextlib.nullcontext():
            batches = iter(self._loader)
        if not self._ships:
            return self._decoded(batches, cursor)
        return self._decoded_by_pool(batches, self._ensure_pool(), cursor)

    def _upcoming(self) -> EpochCursor:
        """Where the next iteration starts: a loaded state's place when its
        epoch is the next one, else the start of the next epoch."""
        resume = self._resume
        if self._epoch_set:
            return resume if resume is not None and resume.epoch == self._epoch else EpochCursor(self._epoch)
        if resume is not None and not resume.done:
            return resume
        return EpochCursor(self._epoch + 1)

    def _decoded(self, batches: Iterator[WorkerBatch], cursor: EpochCursor) -> Iterator[ClipBatch]:
        for batch in batches:
            cursor.position += batch.items
            self._report(batch.skipped, cursor)
            if batch.clips is not None and len(batch.clips):
                cursor.batches += 1
                yield batch.clips.to(self.device)
        cursor.finished = True

    def _decoded_by_pool(self, batches: Iterator[WorkerBatch], pool: Any, cursor: EpochCursor) -> Iterator[ClipBatch]:
        # Each pending batch: its item count, the items its worker skipped, its items' decodes.
        pending: deque[tuple[int, list[SkippedItem], list[tuple[ShippedClips, Future]]]] = deque()
        exhausted = False
        try:
            while True:
                # Keep `prefetch` batches decoding beyond the one handed out next.
                while not exhausted and len(pending) <= self.prefetch:
                    batch = next(batches, None)
                    if batch is None:
                        exhausted = True
                        break
                    pending.append((batch.items, batch.skipped,
                                    [(item, self._submit(pool, item)) for item in batch.shipped if item.num_clips]))
                if not pending:
                    cursor.finished = True
                    return
                # Only a batch handed out (or skipped whole) moves the cursor, never one in flight.
                items, skipped, entries = pending.popleft()
                gathered = self._gather(entries, cursor)
                cursor.position += items
                self._report(skipped, cursor)
                if gathered is not None:
                    cursor.batches += 1
                    yield gathered
        finally:
            for _, _, entries in pending:
                for _, future in entries:
                    future.cancel()

    def _submit(self, pool: Any, item: ShippedClips) -> Future:
        planned = item.planned
        return pool.submit_plan(planned.plan, planned.bundle, frame_shape=planned.frame_shape,
                                transforms=planned.transforms, clip_shape=planned.clip_shape,
                                dimension_order=self.dataset.dimension_order, description=item.source,
                                output_dtype=self.dataset.output_dtype)

    def _gather(self, entries: list[tuple[ShippedClips, Future]], cursor: EpochCursor) -> ClipBatch | None:
        parts = []
        for item, future in entries:
            try:
                result = future.result()
            except Exception as error:
                if self.dataset.on_error == "raise":
                    raise load_error(item.source, item.index, error) from error
                self._report([SkippedItem(item.index, item.source, item.label, f"{type(error).__name__}: {error}")],
                             cursor)
                continue
            parts.append(ClipPart(item.index, item.source, item.label, result.data, result.pts_seconds,
                                  result.duration_seconds))
        return stack_clips(parts) if parts else None

    def _report(self, skipped: list[SkippedItem], cursor: EpochCursor) -> None:
        for item in skipped:
            cursor.skipped.append(item.index)
            if item.source not in self._warned:
                self._warned.add(item.source)
                warn_user(skip_message(item))

    # -- checkpoints --------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Where the loader stands, as a plain JSON-serialisable dict (the
        protocol of torchdata's `StatefulDataLoader`: save it with the model's
        checkpoint, give it to `load_state_dict` of a loader made with the
        same dataset and arguments).

        It holds the format `version`, the dataset's identity (`dataset`:
        its item count and digests of its sources, labels and sampling
        settings), the `seed`, the `epoch`, the `position` (items of this
        rank's order for the epoch behind the last batch handed to the
        caller: batches prefetched by workers or decoding in the pool do not
        count), `batches` handed out, whether the epoch is `finished`, the
        dataset indices `skipped` so far in the epoch, and the sampler's
        description (`order`: the loader's own, or a `DistributedSampler`'s
        rank, world size, shuffle, seed and drop_last).

        Taken during an iteration, it is the place after the last batch
        handed out; between iterations, the place the next iteration starts
        from (after `set_epoch(e)`: epoch e from its start; after
        `load_state_dict`: the loaded place).
        """
        if self._cursor is None or self._resume is not None or self._epoch_set:
            cursor = self._upcoming()
        else:
            cursor = self._cursor
        return rank_state(cursor, self._dataset_identity(), self.seed, describe_order(self.sampler),
                          self.batch_size, self.drop_last)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from `state` at the next iteration: a state from
        `state_dict()` (of this rank), or one `merge_states` made from every
        rank's states (then this loader takes its rank's share of the epoch's
        remaining items). An empty dict does nothing.

        The next iteration continues the state's epoch from its place,
        whether `set_epoch` is called first with that epoch or not at all:
        items before the place are neither fetched nor decoded, and the
        batches, clips, labels and skips are those the saved loader would
        have yielded next. A state taken after the last batch of an epoch
        continues with the next epoch (`set_epoch` with the state's epoch
        then gives an empty iteration: that epoch is over). `set_epoch` with
        another epoch forgets the loaded place. With another `batch_size`
        the same items follow, batched by the new size.

        Raises:
            ValueError: not a ClipLoader state, an unknown format version, a
                state of another dataset (item count, sources, labels or
                sampling settings: the message says which), of another seed,
                or of another sampler or rank (merge the ranks' states with
                `framefeed.data.merge_states` to change the number of ranks).
        """
        if isinstance(state, Mapping) and not state:
            return
        cursor = cursor_from_state(state, self._dataset_identity(), self.seed, describe_order(self.sampler))
        self._resume = cursor
        self._epoch, self._epoch_set = cursor.epoch, False
        for index in cursor.skipped:  # already warned about by the saved loader
            self._warned.add(describe_source(self.dataset.sources[index]))

    def _dataset_identity(self) -> dict[str, Any]:
        if self._identity is None:
            self._identity = dataset_identity(self.dataset)
        return self._identity

    # -- the pool ---------------------------------------------------------------------------------

    def _ensure_pool(self) -> Any:
        if self._pool is None:
            from framefeed.pool import DecodePool  # here: workers never import the pool (nor CUDA)

            self._pool = DecodePool(self.device, **self._pool_options)
            self._owns_pool = True
        return self._pool

    @property
    def pool(self) -> Any:
        """The `DecodePool` decoding a CUDA target's clips (None before the first iteration or on the CPU)."""
        return self._pool

    def close(self) -> None:
        """Close the pool the loader made (a pool dropped without `close()` is
        closed when collected; persistent workers end with the loader)."""
        if self._owns_pool and self._pool is not None:
            self._pool.close(cancel_pending=True)
            self._pool = None
            self._owns_pool = False

    def __enter__(self) -> ClipLoader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = "pool" if self._ships else "workers"
        return (f"ClipLoader({len(self.dataset)} videos, batch_size={self.batch_size}, device={self.device}, "
                f"decoded in {where}, num_workers={self._loader.num_workers})")

