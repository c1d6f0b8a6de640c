"""Device frames through CUDA IPC: one device slab, exported once, slots leased.

Why not torch's own tensor sharing: it exports whole caching-allocator
blocks per tensor and leaks them when a consumer dies. Instead (as vLLM
moves tensors between its processes) the server allocates one block with
plain `cudaMalloc` (CuPy's runtime binding, outside any memory pool),
exports it once with `cudaIpcGetMemHandle`, and each client opens it once
with `cudaIpcOpenMemHandle`. Requests then only name an offset in it.

Ordering, without a copy through the host:
- server -> client: the server copies a batch into its slot on a copy
  stream and records an interprocess CUDA event there; the reply names the
  event (opened once per client and index) and the client makes the stream
  current at submit wait on it before anything reads the frames. An event
  belongs to one lease until that lease returns, so it is never re-recorded
  while a client may still be waiting on it.
- client -> server: before a slot is released the client waits (on its
  release thread, not the caller's) for an event recorded on that stream,
  so the server never overwrites frames a kernel may still read.

Leases return on release, when the client's tensors are freed, or when its
heartbeat stops (the client died): the slab itself is never re-exported.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

import torch


class _DeviceMemory:
    """A raw device pointer exposed through `__cuda_array_interface__`, so
    `torch.as_tensor` views it without copying (and keeps this object alive
    as long as the tensor's storage: a finalizer on it tells when the
    storage is gone)."""

    def __init__(self, pointer: int, nbytes: int) -> None:
        self.__cuda_array_interface__ = {
            "shape": (nbytes,), "typestr": "|u1", "data": (pointer, False), "version": 3,
            "strides": None, "stream": None,  # ordering is by the lease's IPC event
        }


def device_uuid(index: int) -> str | None:
    """The GPU's UUID as a string, the same in every process whatever
    CUDA_VISIBLE_DEVICES numbers it."""
    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    return None if uuid is None else str(uuid)


class EventPool:
    """Interprocess CUDA events, each lent to one lease at a time."""

    def __init__(self, device: torch.device) -> None:
        self._device = device
        self._events: list[Any] = []
        self._handles: list[bytes] = []
        self._free: list[int] = []
        self._lock = threading.Lock()

    def acquire(self) -> tuple[int, Any, bytes]:
        with self._lock:
            if self._free:
                index = self._free.pop()
                return index, self._events[index], self._handles[index]
            with torch.cuda.device(self._device):
                event = torch.cuda.Event(enable_timing=False, blocking=False, interprocess=True)
                event.record()  # a handle needs the event created on the device
                handle = bytes(event.ipc_handle())
            self._events.append(event)
            self._handles.append(handle)
            return len(self._events) - 1, event, handle

    def release(self, index: int) -> None:
        with self._lock:
            self._free.append(index)


class DeviceSlab:
    """Server side: `size` bytes of device memory from `cudaMalloc`, exported once.

    Raises (constructor):
        ImportError: CuPy is missing (`pip install 'framefeed[gpu]'`).
        MemoryError: the device cannot hold `size` bytes.
    """

    kind = "cuda"

    def __init__(self, device: torch.device, size: int) -> None:
        import cupy  # lazy: the gpu extra

        self.device = device
        self.size = size
        index = device.index if device.index is not None else torch.cuda.current_device()
        self.uuid = device_uuid(index)
        with cupy.cuda.Device(index):
            try:
                self._pointer = int(cupy.cuda.runtime.malloc(size))
            except cupy.cuda.runtime.CUDARuntimeError as error:
                raise MemoryError(f"cannot allocate a {size}-byte slab on {device}: {error}; "
                                  "give a smaller --memory-budget") from None
            self.handle = bytes(cupy.cuda.runtime.ipcGetMemHandle(self._pointer))
        self._memory = _DeviceMemory(self._pointer, size)
        self.tensor = torch.as_tensor(self._memory, device=device)
        self.copy_stream = torch.cuda.Stream(device)
        self.events = EventPool(device)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "handle": self.handle, "size": self.size, "uuid": self.uuid}

    def view(self, offset: int, nbytes: int) -> torch.Tensor:
        return self.tensor[offset:offset + nbytes]

    def fill(self, slot: torch.Tensor, dense: torch.Tensor) -> tuple[int, bytes]:
        """Copy `dense` (on this device) into `slot` on the copy stream; the
        lent event's (index, handle), recorded after the copy."""
        index, event, handle = self.events.acquire()
        with torch.cuda.stream(self.copy_stream):
            self.copy_stream.wait_stream(torch.cuda.current_stream(self.device))
            slot.view(dense.shape).copy_(dense, non_blocking=True)
            dense.record_stream(self.copy_stream)  # the pool's buffer stays until the copy is done
            event.record(self.copy_stream)
        return index, handle

    def close(self) -> None:
        import cupy

        torch.cuda.synchronize(self.device)
        cupy.cuda.runtime.free(self._pointer)


class DeviceSlabView:
    """Client side: a server's device slab opened in this process.

    Raises (constructor):
        ImportError: CuPy is missing.
        RuntimeError: the handle cannot be opened (another host, another
            IPC namespace, or a GPU this process does not see).
    """

    def __init__(self, describe: dict[str, Any], device: torch.device) -> None:
        import cupy

        self.device = device
        self.size = int(describe["size"])
        index = device.index if device.index is not None else 0
        with cupy.cuda.Device(index):
            self._pointer = int(cupy.cuda.runtime.ipcOpenMemHandle(describe["handle"]))
        self._events: dict[int, tuple[bytes, Any]] = {}

    def wait_event(self, index: int, handle: bytes, stream: Any) -> None:
        """Make `stream` wait for the server's copy into the slot (event `index`)."""
        cached = self._events.get(index)
        if cached is None or cached[0] != handle:
            cached = (handle, torch.cuda.Event.from_ipc_handle(self.device, handle))
            self._events[index] = cached
        cached[1].wait(stream)

    def lease_tensor(self, offset: int, nbytes: int, shape: list[int], strides: list[int],
                     on_free: Callable[[], None], dtype: torch.dtype = torch.uint8,
                     ) -> tuple[torch.Tensor, weakref.finalize]:
        if not (0 <= offset and nbytes >= 0 and offset + nbytes <= self.size):
            raise ValueError(f"slot [{offset}, {offset + nbytes}) outside the slab of {self.size} bytes")
        memory = _DeviceMemory(self._pointer + offset, nbytes)
        finalizer = weakref.finalize(memory, on_free)
        return torch.as_tensor(memory, device=self.device).view(dtype).as_strided(shape, strides), finalizer


def client_device_for(uuid: str | None) -> torch.device | None:
    """This process's CUDA device with that UUID, or None."""
    if uuid is None or not torch.cuda.is_available():
        return None
    for index in range(torch.cuda.device_count()):
        if device_uuid(index) == uuid:
            return torch.device("cuda", index)
    return None
