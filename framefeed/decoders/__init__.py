"""Decoders: `VideoDecoder`, its metadata and CPU-fallback status."""

from framefeed.decoders._cpu_fallback_status import CpuFallbackStatus
from framefeed.decoders._video_decoder import VideoDecoder
from framefeed.demux.metadata import VideoStreamMetadata

__all__ = ["CpuFallbackStatus", "VideoDecoder", "VideoStreamMetadata"]
