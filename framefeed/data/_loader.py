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
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

from framefeed._validation import require_int
from framefeed._warnings import warn_user
from framefeed.data._batch import ClipBatch, ClipPart, WorkerBatch, collate_items, stack_clips
from framefeed.data._dataset import ClipDataset, skip_message
from framefeed.data._items import ShippedClips, SkippedItem, load_error
from framefeed.data._order import EpochOrder, KeyedBatches, forward_epoch
from framefeed.engine.backends.devices import resolve_device


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
            "forkserver") or context; None: torch's default.
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
        self._batches = KeyedBatches(self.sampler, batch_size, bool(drop_last), self.seed, lambda: self._epoch)
        options: dict[str, Any] = {}
        if num_workers > 0:
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

    # -- epochs ---------------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        """The epoch of the current (or last) iteration; -1 before the first."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch `epoch` (its order and its clips)."""
        self._epoch = require_int("epoch", epoch)
        self._epoch_set = True

    def __len__(self) -> int:
        """Batches per epoch (fewer when skipped items empty a batch)."""
        return len(self._batches)

    # -- iteration ------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[ClipBatch]:
        if not self._epoch_set:
            self._epoch += 1
        self._epoch_set = False
        forward_epoch(self.sampler, self._epoch)
        batches = iter(self._loader)  # workers start here, before any pool thread exists
        if not self._ships:
            return self._decoded(batches)
        return self._decoded_by_pool(batches, self._ensure_pool())

    def _decoded(self, batches: Iterator[WorkerBatch]) -> Iterator[ClipBatch]:
        for batch in batches:
            self._report(batch.skipped)
            if batch.clips is not None and len(batch.clips):
                yield batch.clips.to(self.device)

    def _decoded_by_pool(self, batches: Iterator[WorkerBatch], pool: Any) -> Iterator[ClipBatch]:
        pending: deque[list[tuple[ShippedClips, Future]]] = deque()
        exhausted = False
        try:
            while True:
                # Keep `prefetch` batches decoding beyond the one handed out next.
                while not exhausted and len(pending) <= self.prefetch:
                    batch = next(batches, None)
                    if batch is None:
                        exhausted = True
                        break
                    self._report(batch.skipped)
                    pending.append([(item, self._submit(pool, item)) for item in batch.shipped if item.num_clips])
                if not pending:
                    return
                gathered = self._gather(pending.popleft())
                if gathered is not None:
                    yield gathered
        finally:
            for entries in pending:
                for _, future in entries:
                    future.cancel()

    def _submit(self, pool: Any, item: ShippedClips) -> Future:
        planned = item.planned
        return pool.submit_plan(planned.plan, planned.bundle, frame_shape=planned.frame_shape,
                                transforms=planned.transforms, clip_shape=planned.clip_shape,
                                dimension_order=self.dataset.dimension_order, description=item.source,
                                output_dtype=self.dataset.output_dtype)

    def _gather(self, entries: list[tuple[ShippedClips, Future]]) -> ClipBatch | None:
        parts = []
        for item, future in entries:
            try:
                result = future.result()
            except Exception as error:
                if self.dataset.on_error == "raise":
                    raise load_error(item.source, item.index, error) from error
                self._report([SkippedItem(item.index, item.source, item.label, f"{type(error).__name__}: {error}")])
                continue
            parts.append(ClipPart(item.index, item.source, item.label, result.data, result.pts_seconds,
                                  result.duration_seconds))
        return stack_clips(parts) if parts else None

    def _report(self, skipped: list[SkippedItem]) -> None:
        for item in skipped:
            if item.source not in self._warned:
                self._warned.add(item.source)
                warn_user(skip_message(item))

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

