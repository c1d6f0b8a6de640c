"""Training loops: `ClipDataset` and `ClipLoader`.

```python
from framefeed.data import ClipDataset, ClipLoader

dataset = ClipDataset(paths, labels=labels, sampler="random_indices", num_clips=2, num_frames_per_clip=8)
loader = ClipLoader(dataset, batch_size=8, device="cuda", num_workers=4, shuffle=True, seed=0)
for epoch in range(epochs):
    loader.set_epoch(epoch)
    for batch in loader:          # batch.data: (16, 8, 3, H, W) uint8 on cuda
        train_step(batch.data, batch.labels)
```

With `device="cpu"` the DataLoader workers decode. With a CUDA device the
workers only plan each item and read its compressed packets (CPU work, small
picklable values, no CUDA in any worker) and a `DecodePool` in the main
process decodes them on NVDEC while the training step runs.

`ClipLoader.state_dict()` / `load_state_dict()` checkpoint and resume an
epoch mid-way; `merge_states` turns every rank's state into one that
resumes the epoch on another number of ranks.
"""

from framefeed.data._batch import ClipBatch
from framefeed.data._dataset import ClipDataset
from framefeed.data._items import ClipLoadError, DecodedClips, ItemKey, ShippedClips, SkippedItem
from framefeed.data._loader import ClipLoader
from framefeed.data._resume import merge_states
from framefeed.data._sampling import PlannedClips, clips_of_all_frames

__all__ = [
    "ClipBatch",
    "ClipDataset",
    "ClipLoadError",
    "ClipLoader",
    "DecodedClips",
    "ItemKey",
    "PlannedClips",
    "ShippedClips",
    "SkippedItem",
    "clips_of_all_frames",
    "merge_states",
]
