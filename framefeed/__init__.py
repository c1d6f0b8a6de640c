"""framefeed: frame-exact video decoding into PyTorch tensors.

Source-compatible with torchcodec's video API: `from framefeed.decoders import
VideoDecoder`, `from framefeed.samplers import clips_at_random_indices`, ...
"""

from framefeed.decoders import CpuFallbackStatus, VideoDecoder, VideoStreamMetadata
from framefeed.frames import Frame, FrameBatch
from framefeed.samplers import (
    clips_at_random_indices,
    clips_at_random_timestamps,
    clips_at_regular_indices,
    clips_at_regular_timestamps,
)

__version__ = "0.1.0"

__all__ = [
    "CpuFallbackStatus",
    "Frame",
    "FrameBatch",
    "VideoDecoder",
    "VideoStreamMetadata",
    "__version__",
    "clips_at_random_indices",
    "clips_at_random_timestamps",
    "clips_at_regular_indices",
    "clips_at_regular_timestamps",
]
