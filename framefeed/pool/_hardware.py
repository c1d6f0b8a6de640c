"""What the pool asks of the machine: default sizes from the hardware, and
how a session uses its device (streams, handing results over, NVML).

Defaults (each can be overridden on `DecodePool`):
- sessions: on CUDA the NVDEC engine count (`GetDecoderCaps`'
  `num_decoder_engines`, 7 on an H100/H200), on the CPU (or on CUDA without
  usable NVDEC, when every stream decodes on the CPU) the cores this process
  may run on;
- demux threads: 1 for up to 2 sessions, 2 up to 7, then 3 (SPDL found that
  more than 2-3 demuxing threads contend on FFmpeg's locks);
- bytes in flight: a quarter of the device's memory (host RAM on the CPU),
  at most 8 GiB.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any

import torch

# Sessions on CUDA when the engine count is unknown (no caps answer).
FALLBACK_CUDA_SESSIONS = 4
_MAX_DEFAULT_BYTES = 8 << 30


def cpu_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_demux_threads(sessions: int) -> int:
    return 1 if sessions <= 2 else 2 if sessions <= 7 else 3


def nvdec_caps(nvdec_runtime: Any = None) -> Any:
    """A `GetDecoderCaps` answer cache for NVDEC through `nvdec_runtime` (None:
    the real PyNvVideoCodec), or None when NVDEC is unusable in this process."""
    from framefeed.engine.backends.gpu_decode.capabilities import (
        DecoderCapsCache,
        pynvvideocodec_caps_query,
    )
    from framefeed.engine.backends.gpu_decode.owner import (
        cuda_runtime,  # lazy: optional GPU libraries
    )

    runtime = nvdec_runtime if nvdec_runtime is not None else cuda_runtime()[0]
    if runtime is None:
        return None
    return DecoderCapsCache(pynvvideocodec_caps_query(runtime.nvc))


def nvdec_engines(device: torch.device, caps: Any) -> int | None:
    """NVDEC engines of a CUDA device (`num_decoder_engines` for 8-bit 4:2:0
    H.264, which every NVDEC generation decodes); None when unknown."""
    if caps is None:
        return None
    try:
        count = int(caps.get(device.index or 0, "h264", "420", 8).get("num_decoder_engines", 0))
    except Exception:  # a failing query or a driver without the field: unknown, not fatal
        return None
    return count if count > 0 else None


def default_sessions(device: torch.device, caps: Any = None) -> int:
    """On CUDA: the NVDEC engine count (CPU cores when NVDEC is unusable and
    every stream decodes on the CPU). On the CPU: the cores."""
    if device.type == "cuda" and caps is not None:
        return nvdec_engines(device, caps) or FALLBACK_CUDA_SESSIONS
    return cpu_cores()


class HostRuntime:
    """Sessions that decode into host memory: no streams, nothing to wait for.

    `result_device` is where batches end up (the CPU).
    """

    def __init__(self, result_device: torch.device | None = None) -> None:
        self.result_device = result_device or torch.device("cpu")

    def new_stream(self) -> Any:
        return None

    def close_stream(self, stream: Any) -> None:
        """Destroy a session's stream once the session has stopped."""

    def stream_scope(self, stream: Any) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def consumer_stream(self) -> Any:
        return None

    def hand_over(self, stream: Any, data: torch.Tensor, consumer: Any) -> None:
        """Make `data` safe for the consumer (nothing to do on the host)."""

    def release_memory(self) -> None:
        """Give cached memory back after the pool closes."""

    def default_max_bytes(self) -> int:
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):
            total = 16 << 30
        return min(total // 4, _MAX_DEFAULT_BYTES)

    def decoder_utilisation(self) -> float | None:
        return None


class StreamedRuntime(HostRuntime):
    """Sessions that decode on CUDA streams framefeed owns (`gpu_decode.streams`).

    A request runs on its producer's stream: the NVDEC decoder's own, or for
    a stream decoded on the CPU (a fallback) the session's own stream, where
    the upload is queued. No pool work is queued on the legacy default
    stream or on a stream of torch's shared pool. Before the batch is handed
    over the session thread waits for the producer's event on the host
    (GIL released), so the batch is complete whatever stream reads it; and
    it is recorded for the stream that was current when the request was
    submitted, so the caching allocator does not give its memory to a later
    request while the consumer's kernels may still read it.
    """

    def __init__(self, device: torch.device, calls: Any, result_device: torch.device | None = None) -> None:
        super().__init__(result_device or device)
        self.device = device
        self.calls = calls

    def new_stream(self) -> Any:
        from framefeed.engine.backends.gpu_decode.streams import OwnedStream

        return OwnedStream(self.calls, self.device.index or 0)

    def close_stream(self, stream: Any) -> None:
        if stream is not None:
            stream.finish()
            stream.close()

    def stream_scope(self, stream: Any) -> contextlib.AbstractContextManager[Any]:
        return stream.scope() if stream is not None else contextlib.nullcontext()

    def consumer_stream(self) -> Any:
        return self.calls.current_stream(self.device.index or 0)

    def hand_over(self, stream: Any, data: torch.Tensor, consumer: Any) -> None:
        if stream is not None:
            stream.finish()
        if consumer is not None and data.numel():
            self.calls.record_stream(data, consumer)


class CudaRuntime(StreamedRuntime):
    """`StreamedRuntime` on a real CUDA device (its memory, NVML)."""

    def __init__(self, device: torch.device, calls: Any = None) -> None:
        if calls is None:
            from framefeed.engine.backends.gpu_decode.streams import cuda_calls

            calls = cuda_calls()  # CuPy's; torch's where CuPy is missing (then nothing decodes on NVDEC)
        super().__init__(device, calls)
        self._nvml: Any = None
        self._nvml_handle: Any = None
        self._nvml_lock = threading.Lock()

    def release_memory(self) -> None:
        torch.cuda.empty_cache()

    def default_max_bytes(self) -> int:
        total = torch.cuda.get_device_properties(self.device).total_memory
        return min(total // 4, _MAX_DEFAULT_BYTES)

    def decoder_utilisation(self) -> float | None:
        """NVDEC utilisation in percent over NVML's last sampling period, None
        without nvidia-ml-py (`pip install nvidia-ml-py`) or NVML."""
        with self._nvml_lock:
            if self._nvml is None:
                self._nvml, self._nvml_handle = _open_nvml(self.device)
            if self._nvml is False:
                return None
            try:
                utilisation, _period_us = self._nvml.nvmlDeviceGetDecoderUtilization(self._nvml_handle)
            except Exception:  # NVML errors: report unknown, never fail stats()
                return None
            return float(utilisation)


def _open_nvml(device: torch.device) -> tuple[Any, Any]:
    """(pynvml, handle of `device`) or (False, None)."""
    try:
        import pynvml  # nvidia-ml-py, imported lazily: optional
    except ImportError:
        return False, None
    try:
        pynvml.nvmlInit()
        index = device.index if device.index is not None else torch.cuda.current_device()
        uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
        if uuid is not None:  # CUDA and NVML number devices differently under CUDA_VISIBLE_DEVICES
            try:
                return pynvml, pynvml.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}")
            except Exception:
                pass
        return pynvml, pynvml.nvmlDeviceGetHandleByIndex(index)
    except Exception:
        return False, None


def runtime_for(device: torch.device, nvdec_runtime: Any = None) -> HostRuntime:
    """How sessions use `device`. An NVDEC runtime that decodes into host
    memory (the emulated one of the tests) makes a host runtime, on its
    recording CUDA calls when it has them."""
    if device.type != "cuda":
        return HostRuntime()
    if nvdec_runtime is not None:
        output = nvdec_runtime.output_device(device.index or 0)
        if output.type != "cuda":
            calls = getattr(nvdec_runtime, "calls", None)
            return StreamedRuntime(device, calls, output) if calls is not None else HostRuntime(output)
        return CudaRuntime(device, getattr(nvdec_runtime, "calls", None))
    return CudaRuntime(device)
