"""Handing frames a backend produced on its own CUDA stream to the caller's stream.

`producing(producer)` is what every GPU mode wraps a decode call in
(`VideoDecoder`; `DecodePool` sessions use the same stream rules through
`pool._hardware.StreamedRuntime`). The producer is a backend's `producer`
(`gpu_decode.streams.OwnedStream`, the NVDEC decoder's own stream) or None
for CPU backends. This module imports nothing from the GPU backend, so
CUDA-free processes (DataLoader workers) can import the decoders.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch


class Production:
    """What `producing` yields: call `hand_over(tensor)` for each output the
    caller will use, so it is recorded for the caller's stream at the end."""

    def __init__(self) -> None:
        self.outputs: list[torch.Tensor] = []

    def hand_over(self, tensor: torch.Tensor) -> torch.Tensor:
        self.outputs.append(tensor)
        return tensor


@contextlib.contextmanager
def producing(producer: Any) -> Iterator[Production]:
    """Run a decode call on `producer`'s stream and hand its outputs to the
    caller's stream.

    Inside, `producer` is torch's current stream, so the outputs are
    allocated and written there and the producer never waits on the caller's
    stream. On a normal exit the caller's stream (current when entering)
    waits on the producer's event, and every handed-over tensor is recorded
    for the caller's stream. With `producer` None (a CPU backend) nothing
    changes.
    """
    production = Production()
    if producer is None:
        yield production
        return
    calls, index = producer.calls, producer.device_index
    caller = calls.current_stream(index)
    with producer.scope():
        yield production
    producer.signal(int(caller.cuda_stream))
    for tensor in production.outputs:
        if tensor.numel():
            calls.record_stream(tensor, caller)


def producer_of(backend: Any) -> Any:
    """The stream a backend produces its frames on (None for CPU backends)."""
    return getattr(backend, "producer", None)
