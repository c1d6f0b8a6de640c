"""Batches of clips: `ClipBatch` (what `ClipLoader` yields) and the collate
function its DataLoader workers run (CUDA-free, like the dataset).

A batch holds every clip of its items, item after item: with `batch_size`
items of `num_clips` clips each, `data` is `(batch_size * num_clips, T, C, H, W)`.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import get_worker_info

from framefeed.data._items import DecodedClips, ShippedClips, SkippedItem


@dataclass
class ClipBatch:
    """Clips from several videos, stacked.

    Attributes:
        data: `(N, T, C, H, W)` uint8 or float32 (the dataset's `output_dtype`; `(N, T, H, W, C)` for NHWC) on the
            loader's device: N clips of T frames. Decoded on the CPU, the
            channels are innermost in memory whatever the order (a permuted
            view, as `VideoDecoder` returns frames); `.contiguous()` makes
            NCHW memory when a model needs it.
        pts_seconds, duration_seconds: `(N, T)` float64 on the CPU, seconds.
        labels: one label per clip: a tensor `(N,)` when the labels are numbers
            (or a stacked tensor when they are tensors), else a list; None when
            the dataset has no labels.
        sources: the source of each clip (its path, or its kind).
        indices: `(N,)` int64, the dataset index of each clip's video.
    """

    data: Tensor
    pts_seconds: Tensor
    duration_seconds: Tensor
    labels: Tensor | list[Any] | None
    sources: list[str]
    indices: Tensor

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def to(self, device: Any, non_blocking: bool = False) -> ClipBatch:
        """The same batch with `data` on `device` (timestamps stay on the CPU)."""
        return ClipBatch(self.data.to(device, non_blocking=non_blocking), self.pts_seconds, self.duration_seconds,
                         self.labels, self.sources, self.indices)

    def pin_memory(self) -> ClipBatch:
        """`data` in page-locked memory (called by torch's DataLoader with `pin_memory=True`)."""
        return ClipBatch(self.data.pin_memory(), self.pts_seconds, self.duration_seconds, self.labels,
                         self.sources, self.indices)

    def __repr__(self) -> str:
        return (f"ClipBatch(data={tuple(self.data.shape)} {self.data.dtype} on {self.data.device}, "
                f"{len(set(self.indices.tolist()))} videos)")


@dataclass
class WorkerBatch:
    """What a DataLoader worker hands the main process for one batch.

    Attributes:
        clips: a CPU target's decoded clips, stacked (None when no item gave any).
        shipped: a CUDA target's items: plans plus packets, in order.
        skipped: items whose source failed (`on_error="skip"`).
        items: dataset items the batch was made from (what `ClipLoader`
            counts to know its place in the epoch).
    """

    clips: ClipBatch | None = None
    shipped: list[ShippedClips] = field(default_factory=list)
    skipped: list[SkippedItem] = field(default_factory=list)
    items: int = 0


def collate_items(items: Sequence[DecodedClips | ShippedClips | SkippedItem]) -> WorkerBatch:
    """A batch of dataset items as one `WorkerBatch` (the DataLoader's collate_fn).

    Raises:
        ValueError: decoded clips of different frame sizes (resize them in
            the dataset's `transforms`, e.g. `Resize`), naming the sources and sizes.
    """
    batch = WorkerBatch(items=len(items))
    decoded: list[ClipPart] = []
    for item in items:
        if isinstance(item, SkippedItem):
            batch.skipped.append(item)
        elif isinstance(item, ShippedClips):
            batch.shipped.append(item)
        elif item.num_clips:
            decoded.append(ClipPart(item.index, item.source, item.label, item.data, item.pts_seconds,
                                    item.duration_seconds))
    if decoded:
        batch.clips = stack_clips(decoded)
    return batch


@dataclass
class ClipPart:
    """One item's clips on their way into a batch."""

    index: int
    source: str
    label: Any
    data: Tensor
    pts_seconds: Tensor
    duration_seconds: Tensor


def stack_clips(parts: Sequence[ClipPart]) -> ClipBatch:
    """Concatenate items' clips (non-empty `parts`) into one batch.

    Raises:
        ValueError: clips whose frames differ in size or dtype.
    """
    dtypes = {part.data.dtype for part in parts}
    if len(dtypes) > 1:
        kinds = ", ".join(f"{part.source}: {part.data.dtype}" for part in parts)
        raise ValueError(f"Clips in one batch must have the same dtype, got {kinds}. output_dtype='auto' gives "
                         "uint8 for 8-bit sources and float32 for HDR ones: give the dataset one output_dtype "
                         "(torch.float32 keeps the HDR sources' precision).")
    shapes = {tuple(part.data.shape[1:]) for part in parts}
    if len(shapes) > 1:
        sizes = ", ".join(f"{part.source}: {tuple(part.data.shape[2:])}" for part in parts)
        raise ValueError(f"Clips in one batch must have the same frame size, got {sizes}. Resize them with the "
                         "dataset's transforms (framefeed.transforms.Resize), or batch videos of one size together.")
    counts = [int(part.data.shape[0]) for part in parts]
    data = _concatenate([part.data for part in parts])
    pts = torch.cat([part.pts_seconds for part in parts])
    durations = torch.cat([part.duration_seconds for part in parts])
    sources = [part.source for part, count in zip(parts, counts, strict=True) for _ in range(count)]
    indices = torch.tensor([part.index for part, count in zip(parts, counts, strict=True) for _ in range(count)],
                           dtype=torch.int64)
    labels = _stack_labels([part.label for part, count in zip(parts, counts, strict=True) for _ in range(count)])
    return ClipBatch(data, pts, durations, labels, sources, indices)


def _concatenate(tensors: list[Tensor]) -> Tensor:
    """`torch.cat(tensors)` along dim 0, in the memory layout of the first.
    Items decoded into one buffer (`ClipDataset.__getitems__`) are adjacent
    views of it: joined without a copy. Otherwise, in a DataLoader worker,
    the copy goes straight into shared memory (as torch's default collate
    does), so handing the batch to the main process copies nothing more."""
    joined = _joined_view(tensors)
    if joined is not None:
        return joined
    in_worker = get_worker_info() is not None
    if len(tensors) == 1 and not in_worker:
        return tensors[0]
    first = tensors[0]
    order = sorted(range(first.ndim), key=lambda d: -first.stride(d))  # dims from outermost in memory
    if order[0] != 0 or not all(t.permute(order).is_contiguous() for t in tensors):
        order = list(range(first.ndim))
    parts = [t.permute(order) for t in tensors]
    shape = (sum(int(p.shape[0]) for p in parts), *parts[0].shape[1:])
    if in_worker:
        count = 1
        for size in shape:
            count *= int(size)
        storage = torch.UntypedStorage._new_shared(count * first.element_size())
        out = torch.empty(0, dtype=first.dtype).set_(storage).view(shape)
    else:
        out = torch.empty(shape, dtype=first.dtype)
    torch.cat(parts, out=out)
    return out.permute([order.index(d) for d in range(first.ndim)])


def _joined_view(tensors: list[Tensor]) -> Tensor | None:
    """One view covering `tensors` when each starts where the previous ends
    in the same storage, with the same strides and trailing shape; else None."""
    first = tensors[0]
    storage = first.untyped_storage().data_ptr()
    offset = first.storage_offset()
    for tensor in tensors:
        if (tensor.untyped_storage().data_ptr() != storage or tensor.stride() != first.stride()
                or tensor.shape[1:] != first.shape[1:] or tensor.storage_offset() != offset):
            return None
        offset += int(tensor.shape[0]) * tensor.stride(0)
    total = sum(int(tensor.shape[0]) for tensor in tensors)
    return first.as_strided((total, *first.shape[1:]), first.stride(), first.storage_offset())


def _stack_labels(labels: list[Any]) -> Tensor | list[Any] | None:
    if all(label is None for label in labels):
        return None
    if all(isinstance(label, Tensor) for label in labels):
        return torch.stack(labels)
    if all(isinstance(label, numbers.Number) for label in labels):
        return torch.tensor(labels)
    return labels
