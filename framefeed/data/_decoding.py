"""A CPU target's decoding: planned clips decoded from their open files into
buffers the dataset provides, so that a DataLoader worker decodes a whole
batch straight into one shared-memory tensor (handing it to the main
process then copies nothing; torch's default collate copies every item once
more into shared memory).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from framefeed.data._sampling import PlannedClips
from framefeed.engine.backends.registry import BackendContext, open_backend
from framefeed.engine.executor import OutputBuffer, execute_plan
from framefeed.engine.frame_memory import empty_frames
from framefeed.engine.opening import OpenedStream

CPU = torch.device("cpu")


def frame_buffer(count: int, height: int, width: int, shared: bool, dtype: torch.dtype = torch.uint8) -> Tensor:
    """An uninitialised `(count, height, width, 3)` tensor of `dtype` (uint8 or
    float32), in shared memory when `shared` (allocated there: `share_memory_()` would copy)."""
    if not shared:
        return empty_frames((count, height, width, 3), dtype=dtype)
    storage = torch.UntypedStorage._new_shared(count * height * width * 3 * dtype.itemsize)
    return torch.empty(0, dtype=dtype).set_(storage).view(count, height, width, 3)


def decode_planned(opened: OpenedStream, planned: PlannedClips, frames: Tensor,
                   num_threads: int) -> tuple[Tensor, Tensor]:
    """Decode `planned` (its plan only, through its transforms) from `opened`
    into `frames`, a contiguous `(slots, H, W, 3)` tensor of the transformed
    size; the pts and durations in seconds, `(slots,)` float64 each.

    Raises what decoding raises (`DecodingError` for a damaged stream).
    """
    context = BackendContext(stream=opened.demuxer.stream, num_threads=num_threads, transforms=planned.transforms)
    selection = open_backend(opened.params, CPU, context)
    backend = selection.backend
    count = planned.plan.slot_count
    out = OutputBuffer(frames, np.zeros(count, dtype=np.float64), np.zeros(count, dtype=np.float64), False)
    try:
        if count:
            execute_plan(planned.plan, opened.demuxer, backend, out, disposable=opened.disposable)
    finally:
        backend.close()
    return torch.from_numpy(out.pts_seconds), torch.from_numpy(out.duration_seconds)
