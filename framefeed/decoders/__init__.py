"""Decoders: `VideoDecoder`, its metadata and CPU-fallback status."""

from framefeed.decoders._video_decoder import VideoDecoder
from framefeed.engine.backends.status import CpuFallbackStatus
from framefeed.engine.demux.metadata import VideoStreamMetadata

__all__ = ["CpuFallbackStatus", "VideoDecoder", "VideoStreamMetadata"]
