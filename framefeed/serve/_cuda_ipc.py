"""Device frames through CUDA IPC: one device slab, exported once, slots leased.

Why not torch's own tensor sharing: it exports whole caching-allocator
blocks per tensor and leaks them when a consumer dies. Instead (as vLLM
moves tensors between its processes) the server allocates one block with
plain `cudaMalloc` (CuPy's runtime binding, outside any memory pool),
exports it once with `cudaIpcGetMemHandle`, and each client opens it once
with `cudaIpcOpenMemHandle`. Requests then only name an offset in it.

Ordering, without a copy through the host (issue 22, item 8):
- server: a pool batch is complete when its future resolves (the session
  waited for its producer's event), so the copy into the slot needs no
  wait on any other stream; it runs on a copy stream the slab owns (an
  `OwnedStream`, not one of torch's shared pool) and records an
  interprocess CUDA event there. The reply names the event (opened once per
  client and index). An event belongs to one lease until that lease
  returns, so it is never re-recorded while a client may still wait on it.
- client: before the future resolves, the gRPC callback thread waits for
  that event on the host, so the frames are complete for *every* stream
  of the client, not just the one current at submit.
- client -> server: a slot is released from the client's release thread
  after events recorded there on every stream the batch was used on (the
  stream current at submit, plus any given to `ServiceBatch.record_stream`)
  have completed. Finalizers only queue the release: no CUDA call runs in a
  finalizer, and none at interpreter shutdown (`atexit=False`).

Lifetimes: a client closes its mapping (`cudaIpcCloseMemHandle`) once it
is closed and its last leased tensor is gone. The server never frees the
slab while a client session that may map it is alive: it is freed at close
only when no session is left, otherwise the process exit releases it.
Leases return on release, when the client's tensors are freed, or when its
heartbeat stops (the client died): the slab itself is never re-exported.
"""

from __future__ import annotations

import logging
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
        from framefeed.engine.backends.gpu_decode.streams import OwnedStream, cupy_cuda_calls

        self._memory = _DeviceMemory(self._pointer, size)
        self.tensor = torch.as_tensor(self._memory, device=device)
        self._copy = OwnedStream(cupy_cuda_calls(), index)  # its own stream, not one of torch's shared pool
        self.copy_stream = cupy_cuda_calls().torch_stream(index, self._copy.handle)
        self.events = EventPool(device)
        self.closed = False

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "handle": self.handle, "size": self.size, "uuid": self.uuid}

    def view(self, offset: int, nbytes: int) -> torch.Tensor:
        return self.tensor[offset:offset + nbytes]

    def fill(self, slot: torch.Tensor, dense: torch.Tensor) -> tuple[int, bytes]:
        """Copy `dense` (a pool batch on this device, complete: its session
        waited for it) into `slot` on the copy stream; the lent event's
        (index, handle), recorded after the copy."""
        index, event, handle = self.events.acquire()
        with torch.cuda.stream(self.copy_stream):
            slot.view(dense.shape).copy_(dense, non_blocking=True)
            dense.record_stream(self.copy_stream)  # the pool's buffer stays until the copy is done
            event.record(self.copy_stream)
        return index, handle

    def close(self, clients_may_map: bool = False) -> None:
        """Stop using the slab. Its memory is freed only when no client may
        still map it (`clients_may_map` False: no session is left); otherwise
        it stays until this process exits, which releases it."""
        import cupy

        if self.closed:
            return
        self.closed = True
        self._copy.finish()
        self._copy.close()
        if clients_may_map:
            logging.getLogger("framefeed.serve").info(
                "framefeed serve: the CUDA slab on %s stays allocated until exit: clients may still map it",
                self.device)
            return
        self.tensor = None
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
        self._index = device.index if device.index is not None else 0
        with cupy.cuda.Device(self._index):
            self._pointer = int(cupy.cuda.runtime.ipcOpenMemHandle(describe["handle"]))
        self._events: dict[int, tuple[bytes, Any]] = {}
        self._lock = threading.Lock()
        self.closed = False

    def wait_event(self, index: int, handle: bytes) -> None:
        """Wait on the host (GIL released) for the server's copy into the
        slot (event `index`): the frames are then complete for every stream."""
        with self._lock:
            cached = self._events.get(index)
            if cached is None or cached[0] != handle:
                cached = (handle, torch.cuda.Event.from_ipc_handle(self.device, handle))
                self._events[index] = cached
        cached[1].synchronize()

    def close(self) -> None:
        """Unmap the slab (`cudaIpcCloseMemHandle`) and drop the opened events.
        Call once no tensor views it any more. Idempotent."""
        import cupy

        with self._lock:
            if self.closed:
                return
            self.closed = True
            self._events.clear()
        with cupy.cuda.Device(self._index):
            cupy.cuda.runtime.ipcCloseMemHandle(self._pointer)

    def lease_tensor(self, offset: int, nbytes: int, shape: list[int], strides: list[int],
                     on_free: Callable[[], None], dtype: torch.dtype = torch.uint8,
                     ) -> tuple[torch.Tensor, weakref.finalize]:
        if not (0 <= offset and nbytes >= 0 and offset + nbytes <= self.size):
            raise ValueError(f"slot [{offset}, {offset + nbytes}) outside the slab of {self.size} bytes")
        if self.closed:
            raise RuntimeError("this client's CUDA slab view is closed")
        memory = _DeviceMemory(self._pointer + offset, nbytes)
        finalizer = weakref.finalize(memory, on_free)
        finalizer.atexit = False  # at interpreter exit the process unmaps everything: no CUDA call then
        return torch.as_tensor(memory, device=self.device).view(dtype).as_strided(shape, strides), finalizer


def client_device_for(uuid: str | None) -> torch.device | None:
    """This process's CUDA device with that UUID, or None."""
    if uuid is None or not torch.cuda.is_available():
        return None
    for index in range(torch.cuda.device_count()):
        if device_uuid(index) == uuid:
            return torch.device("cuda", index)
    return None
