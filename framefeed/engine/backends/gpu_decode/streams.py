"""CUDA streams and events framefeed owns, and the ordering rules between them.

Every NVDEC decoder gets a stream of its own (`OwnedStream`), created once
when the decoder is created and kept with it until the decoder is destroyed.
The stream is made with `cudaStreamCreateWithFlags(cudaStreamNonBlocking)`,
not taken from `torch.cuda.Stream()`: torch hands its streams out
round-robin from a pool of 32 per device and priority
(pytorch/pytorch `c10/cuda/CUDAStream.cpp`: `kStreamsPerPool = 1 << 5`,
`getStreamFromPool`), so 21 sessions and their decoders would share streams
and serialise behind each other's work. Each stream also owns the two CUDA
events its ordering needs, created once with it (never one per frame:
`torch.cuda.Stream.wait_stream` makes a new event on every call).

The rules (checked on CPU by the recording CUDA stand-in of the tests,
`tests/gpu_fixtures.py`):

- A decoder's pictures are written on its stream (the stream given to
  `CreateDecoder`; PyNvVideoCodec 2.2.4's `__cuda_array_interface__`
  reports the constant 2, the per-thread default stream, instead: see
  `surfaces.py`). Everything that reads them (colour conversion, copies)
  runs on that same stream, so FIFO order needs no wait.
- Outputs are allocated on the producer's stream
  (`framefeed.engine.backends.ordering.producing`): the
  producer never waits on the stream of whoever asked, in particular never
  on the legacy default stream, which every thread of a process shares.
- A consumer waits on the producer's event (`OwnedStream.signal`), or the
  producer's thread waits for it on the host (`OwnedStream.finish`, which
  releases the GIL), and the output is recorded for the consumer's stream
  so the caching allocator does not reuse it under the consumer's kernels.

`CudaCalls` is the seam to the CUDA runtime: `CupyCudaCalls` on a GPU
(CuPy's runtime bindings, `cupy_backends/cuda/api/runtime.pyx`), a
recording stand-in in the tests.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Protocol

import torch

# Stream handles that name a default stream rather than one framefeed owns:
# 0 (the legacy default stream of a process without per-thread defaults),
# cudaStreamLegacy (0x1) and cudaStreamPerThread (0x2) (CUDA runtime API,
# driver_types.h).
DEFAULT_STREAM_HANDLES = (0, 1, 2)


class CudaCalls(Protocol):
    """The CUDA runtime calls framefeed's stream ordering makes.

    Handles are plain ints (`cudaStream_t`, `cudaEvent_t`); `stream` objects
    are torch streams (anything with `cuda_stream`).
    """

    def create_stream(self, device_index: int) -> int:
        """A new non-blocking stream on the device."""

    def destroy_stream(self, device_index: int, handle: int) -> None: ...

    def create_event(self, device_index: int) -> int:
        """A new event without timing (`cudaEventDisableTiming`)."""

    def destroy_event(self, device_index: int, handle: int) -> None: ...

    def record(self, device_index: int, event: int, stream: int) -> None:
        """`cudaEventRecord(event, stream)`."""

    def wait(self, device_index: int, stream: int, event: int) -> None:
        """`cudaStreamWaitEvent(stream, event)`: later work on `stream` follows the event."""

    def synchronize(self, device_index: int, event: int) -> None:
        """The calling thread waits for the event (without holding the GIL)."""

    def current_stream(self, device_index: int) -> Any:
        """torch's current stream on the device (has `cuda_stream`)."""

    def stream_scope(self, device_index: int, handle: int) -> contextlib.AbstractContextManager[Any]:
        """Makes `handle` torch's current stream (allocations and torch ops go there)."""

    def record_stream(self, tensor: torch.Tensor, stream: Any) -> None:
        """`tensor.record_stream(stream)`: its memory is not reused before
        work queued on `stream` so far is done."""

    def copy_bytes(self, device_index: int, address: int, size: int, stream: int) -> torch.Tensor:
        """An owned copy of `size` bytes at a device address, made on `stream`
        (allocated there too)."""


class CupyCudaCalls:
    """`CudaCalls` on a GPU: CuPy's runtime bindings plus torch's streams.

    CuPy's `eventSynchronize` releases the GIL (`with nogil`, in
    `cupy_backends/cuda/api/runtime.pyx`), so a thread waiting for its
    stream does not stop the others.
    """

    def __init__(self) -> None:
        import cupy  # lazy: the gpu extra

        self._cupy = cupy
        self._runtime = cupy.cuda.runtime
        self._external: dict[tuple[int, int], Any] = {}
        self._lock = threading.Lock()

    def _device(self, device_index: int) -> Any:
        return self._cupy.cuda.Device(device_index)

    def create_stream(self, device_index: int) -> int:
        with self._device(device_index):
            return int(self._runtime.streamCreateWithFlags(self._runtime.streamNonBlocking))

    def destroy_stream(self, device_index: int, handle: int) -> None:
        with self._lock:
            self._external.pop((device_index, handle), None)
        with self._device(device_index):
            self._runtime.streamDestroy(handle)

    def create_event(self, device_index: int) -> int:
        with self._device(device_index):
            return int(self._runtime.eventCreateWithFlags(self._runtime.eventDisableTiming))

    def destroy_event(self, device_index: int, handle: int) -> None:
        with self._device(device_index):
            self._runtime.eventDestroy(handle)

    def record(self, device_index: int, event: int, stream: int) -> None:
        with self._device(device_index):
            self._runtime.eventRecord(event, stream)

    def wait(self, device_index: int, stream: int, event: int) -> None:
        with self._device(device_index):
            self._runtime.streamWaitEvent(stream, event)

    def synchronize(self, device_index: int, event: int) -> None:
        with self._device(device_index):
            self._runtime.eventSynchronize(event)

    def current_stream(self, device_index: int) -> Any:
        return torch.cuda.current_stream(device_index)

    def torch_stream(self, device_index: int, handle: int) -> Any:
        """A torch view of a stream framefeed owns (torch never destroys an
        `ExternalStream`: pytorch `torch/cuda/streams.py`)."""
        key = (device_index, handle)
        with self._lock:
            stream = self._external.get(key)
            if stream is None:
                stream = self._external[key] = torch.cuda.ExternalStream(handle, device=torch.device("cuda",
                                                                                                     device_index))
            return stream

    def stream_scope(self, device_index: int, handle: int) -> contextlib.AbstractContextManager[Any]:
        return torch.cuda.stream(self.torch_stream(device_index, handle))

    def record_stream(self, tensor: torch.Tensor, stream: Any) -> None:
        tensor.record_stream(stream)

    def copy_bytes(self, device_index: int, address: int, size: int, stream: int) -> torch.Tensor:
        from framefeed.engine.backends.gpu_decode.surfaces import device_bytes

        device = torch.device("cuda", device_index)
        with self.stream_scope(device_index, stream):
            owned = torch.empty(size, dtype=torch.uint8, device=device)
            owned.copy_(device_bytes(address, size, device), non_blocking=True)
        return owned


class TorchCudaCalls(CupyCudaCalls):
    """`CudaCalls` through torch alone, for a CUDA process without CuPy (then
    NVDEC is unusable and only the uploads of CPU-decoded frames need a
    stream). torch cannot make a stream outside its pool, so streams here
    are pooled ones (`torch.cuda.Stream`); NVDEC decoding always has CuPy
    and `CupyCudaCalls`."""

    def __init__(self) -> None:  # no CuPy
        self._external: dict[tuple[int, int], Any] = {}
        self._lock = threading.Lock()
        self._events: dict[int, Any] = {}

    def create_stream(self, device_index: int) -> int:
        stream = torch.cuda.Stream(device_index)
        with self._lock:
            self._external[(device_index, stream.cuda_stream)] = stream
        return int(stream.cuda_stream)

    def destroy_stream(self, device_index: int, handle: int) -> None:
        with self._lock:
            self._external.pop((device_index, handle), None)

    def create_event(self, device_index: int) -> int:
        event = torch.cuda.Event()
        with self._lock:
            self._events[id(event)] = event
        return id(event)

    def destroy_event(self, device_index: int, handle: int) -> None:
        with self._lock:
            self._events.pop(handle, None)

    def record(self, device_index: int, event: int, stream: int) -> None:
        self._events[event].record(self.torch_stream(device_index, stream))

    def wait(self, device_index: int, stream: int, event: int) -> None:
        self._events[event].wait(self.torch_stream(device_index, stream))

    def synchronize(self, device_index: int, event: int) -> None:
        self._events[event].synchronize()

    def torch_stream(self, device_index: int, handle: int) -> Any:
        with self._lock:
            stream = self._external.get((device_index, handle))
        if stream is not None:
            return stream
        if handle == 0:
            return torch.cuda.default_stream(device_index)
        return torch.cuda.ExternalStream(handle, device=torch.device("cuda", device_index))


_calls: dict[str, CupyCudaCalls] = {}
_calls_lock = threading.Lock()


def cupy_cuda_calls() -> CupyCudaCalls:
    """The process's `CupyCudaCalls` (created on first use).

    Raises:
        ImportError: CuPy is not installed.
    """
    with _calls_lock:
        if "cupy" not in _calls:
            _calls["cupy"] = CupyCudaCalls()
        return _calls["cupy"]


def cuda_calls() -> CupyCudaCalls:
    """`cupy_cuda_calls()`, or `TorchCudaCalls` where CuPy cannot be imported."""
    try:
        return cupy_cuda_calls()
    except ImportError:
        with _calls_lock:
            if "torch" not in _calls:
                _calls["torch"] = TorchCudaCalls()
            return _calls["torch"]


class OwnedStream:
    """A non-blocking CUDA stream created for one owner (a decoder, a
    session's uploads, a copy engine) and kept with it, plus the two events
    its ordering needs, created once.

    Used by one thread at a time (its owner's); `close` destroys the events
    and the stream once nothing will be queued on it again.
    """

    def __init__(self, calls: CudaCalls, device_index: int) -> None:
        self.calls = calls
        self.device_index = device_index
        self.handle = calls.create_stream(device_index)
        try:
            self._ready = calls.create_event(device_index)  # recorded here, waited on by consumers
            self._follow = calls.create_event(device_index)  # recorded on a stream this one must follow
        except BaseException:
            calls.destroy_stream(device_index, self.handle)
            raise
        self.closed = False

    def __repr__(self) -> str:
        return f"OwnedStream(0x{self.handle:x}, device {self.device_index}{', closed' if self.closed else ''})"

    def signal(self, consumer: int) -> None:
        """Make stream `consumer` wait for the work queued here so far."""
        if consumer == self.handle:
            return
        self.calls.record(self.device_index, self._ready, self.handle)
        self.calls.wait(self.device_index, consumer, self._ready)

    def follow(self, producer: int) -> None:
        """Make this stream wait for the work queued on stream `producer` so far."""
        if producer == self.handle:
            return
        self.calls.record(self.device_index, self._follow, producer)
        self.calls.wait(self.device_index, self.handle, self._follow)

    def finish(self) -> None:
        """Wait on the host (GIL released) for the work queued here so far."""
        self.calls.record(self.device_index, self._ready, self.handle)
        self.calls.synchronize(self.device_index, self._ready)

    def scope(self) -> contextlib.AbstractContextManager[Any]:
        """Make this torch's current stream: allocations and torch ops go here."""
        return self.calls.stream_scope(self.device_index, self.handle)

    def close(self) -> None:
        """Destroy the events and the stream (idempotent). Work already
        queued completes first (CUDA defers the release)."""
        if self.closed:
            return
        self.closed = True
        self.calls.destroy_event(self.device_index, self._ready)
        self.calls.destroy_event(self.device_index, self._follow)
        self.calls.destroy_stream(self.device_index, self.handle)
