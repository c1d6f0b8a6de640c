"""Ray Data: `read_clips`, a `ray.data.Dataset` of clips from many videos.

```python
import framefeed.ray

ds = framefeed.ray.read_clips("s3://bucket/videos/", sampler="random_indices", num_clips=2,
                              num_frames_per_clip=8, seed=0, decode="cuda")
for batch in ds.iter_torch_batches(batch_size=16):
    batch["frames"]          # (16, 8, 3, H, W) uint8
```

CPU read tasks open each video, draw its clips and demux their packets;
only the compressed packets travel to the decode stage (Ray tasks with
FFmpeg, or GPU actors each holding a `DecodePool`). Needs the `[ray]` extra
(`pip install "framefeed[ray]"`); see the README for running on a cluster.
"""

try:
    import ray as _ray  # noqa: F401
    import ray.data as _ray_data  # noqa: F401
except ImportError as _error:  # pragma: no cover - exercised without Ray installed
    raise ImportError(
        "framefeed.ray needs Ray Data: pip install 'framefeed[ray]' (or pip install 'ray[data]')"
    ) from _error

from framefeed.data import ClipLoadError
from framefeed.ray._read import VideoClips, read_clips
from framefeed.ray._sources import VIDEO_EXTENSIONS

__all__ = ["VIDEO_EXTENSIONS", "ClipLoadError", "VideoClips", "read_clips"]
