"""What a pool reports: `PoolStats` from `DecodePool.stats()`, per-session
`SessionStats`, and `DecodeInfo` on every batch it returns."""

from __future__ import annotations

from dataclasses import dataclass

from framefeed.engine.backends.status import CpuFallbackStatus
from framefeed.frames import FrameBatch


@dataclass(frozen=True)
class DecodeInfo:
    """How one request was decoded.

    Attributes:
        source: the video's description (path or kind of source).
        session: index of the decode session that ran it.
        cpu_fallback: whether a CUDA pool decoded this stream on the CPU (and
            uploaded the frames), and why; `bool()` is False when it did not.
        decoder_reused: an NVDEC decoder from an earlier video served it.
        frames_decoded: frames the decoder produced for this request (frames
            returned can be fewer: only keyframe intervals holding targets are
            decoded, but references before a target are decoded too; or more:
            duplicates are decoded once).
    """

    source: str
    session: int
    cpu_fallback: CpuFallbackStatus
    decoder_reused: bool
    frames_decoded: int


@dataclass(repr=False)
class PoolBatch(FrameBatch):
    """A `FrameBatch` from a `DecodePool`, with `info` on how it was decoded."""

    info: DecodeInfo | None = None

    @property
    def cpu_fallback(self) -> CpuFallbackStatus | None:
        """`info.cpu_fallback`: whether this stream was decoded on the CPU in a CUDA pool."""
        return None if self.info is None else self.info.cpu_fallback


@dataclass(frozen=True)
class SessionStats:
    """One decode session.

    Attributes:
        index: the session's number.
        busy_seconds: wall time spent on requests (opening decoders, decoding,
            converting, handing over), summed.
        requests: requests it ran, failed ones included.
        frames_decoded, frames_returned: as in `PoolStats`.
        decoders_created: NVDEC decoders it created.
        decoders_reused: requests served by one of its NVDEC decoders reused
            from an earlier video.
        decoders_idle: NVDEC decoders now waiting in its cache.
        cpu_decoders_opened: FFmpeg decoders it opened (one per request
            decoded on the CPU: opening one costs microseconds, so they are
            not kept).
    """

    index: int
    busy_seconds: float
    requests: int
    frames_decoded: int
    frames_returned: int
    decoders_created: int
    decoders_reused: int
    decoders_idle: int
    cpu_decoders_opened: int


@dataclass(frozen=True)
class PoolStats:
    """A snapshot of a pool's work since it started.

    Attributes:
        device: the pool's device.
        uptime_seconds: since the pool was created.
        sessions: per-session figures.
        demux_threads: threads opening and planning.
        demux_busy_seconds: their summed busy time.
        submitted, completed, failed, cancelled: requests.
        frames_decoded: frames the decoders produced (references included).
        frames_returned: frames in the batches handed out.
        cpu_fallbacks: requests a CUDA pool decoded on the CPU.
        decoders_created, decoders_reused, cpu_decoders_opened: summed over sessions.
        frames_in_flight, bytes_in_flight: admitted and not yet handed out.
        peak_frames_in_flight, peak_bytes_in_flight: the largest such totals.
        max_frames_in_flight, max_bytes_in_flight: the caps (None: no cap).
        nvdec_utilisation_percent: NVML's decoder utilisation of the pool's
            GPU now (None on the CPU or without nvidia-ml-py).
    """

    device: str
    uptime_seconds: float
    sessions: tuple[SessionStats, ...]
    demux_threads: int
    demux_busy_seconds: float
    submitted: int
    completed: int
    failed: int
    cancelled: int
    frames_decoded: int
    frames_returned: int
    cpu_fallbacks: int
    decoders_created: int
    decoders_reused: int
    cpu_decoders_opened: int
    frames_in_flight: int
    bytes_in_flight: int
    peak_frames_in_flight: int
    peak_bytes_in_flight: int
    max_frames_in_flight: int | None
    max_bytes_in_flight: int | None
    nvdec_utilisation_percent: float | None
