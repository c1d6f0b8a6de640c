"""Decoders: `VideoDecoder`, its metadata and CPU-fallback status, and
torchcodec's `set_cuda_backend` (accepted; see `_cuda_backend`)."""

from framefeed.decoders._cuda_backend import set_cuda_backend
from framefeed.decoders._video_decoder import VideoDecoder
from framefeed.engine.backends.status import CpuFallbackStatus
from framefeed.engine.demux.metadata import VideoStreamMetadata

SimpleVideoDecoder = VideoDecoder  # torchcodec's old name, still exported by torchcodec 0.17

__all__ = ["CpuFallbackStatus", "SimpleVideoDecoder", "VideoDecoder", "VideoStreamMetadata", "set_cuda_backend"]
