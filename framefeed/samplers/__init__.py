"""Clip samplers (torchcodec-compatible): several clips of frames from one
video, as a 5-D `FrameBatch` `(num_clips, num_frames_per_clip, ...)`.

- by index: `clips_at_random_indices`, `clips_at_regular_indices`;
- by display time: `clips_at_random_timestamps`, `clips_at_regular_timestamps`.

Randomness comes only from torch's global RNG, with the same calls as
torchcodec, so `torch.manual_seed(s)` reproduces torchcodec's clips. Each call
decodes all its clips with one batched decoder call, so a frame shared by
overlapping clips is decoded once.
"""

from framefeed.samplers._index_based import clips_at_random_indices, clips_at_regular_indices
from framefeed.samplers._time_based import clips_at_random_timestamps, clips_at_regular_timestamps

__all__ = [
    "clips_at_random_indices",
    "clips_at_random_timestamps",
    "clips_at_regular_indices",
    "clips_at_regular_timestamps",
]
