"""The decode pipeline on any backend, without `VideoDecoder`: opened stream
(`framefeed.opening`) -> plan -> packet source -> executor -> caller's slots.

`BACKENDS` names the backends every corpus test runs over: "cpu", the
emulated NVDEC decoder of `gpu_fixtures` (real `NvdecBackend`, CPU stand-in
decoder, torch reference colour conversion) and real NVDEC ("cuda", marked
`cuda`: skipped without a GPU). `open_backend_kind` opens one for a stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch
from gpu_fixtures import emulated_nvdec_decoders

from framefeed.backends import BackendContext, open_backend
from framefeed.opening import OpenedStream, open_stream
from framefeed.packets import CodecParameters
from framefeed.plan import time_range_plan
from framefeed.session import DecodeSession, OutputBuffer

BACKENDS = ["cpu", "emulated-nvdec", pytest.param("cuda", marks=pytest.mark.cuda)]


def open_backend_kind(kind: str, params: CodecParameters, stream: Any = None) -> tuple[Any, str]:
    """(backend, "") or (None, why `kind` cannot decode this stream)."""
    if kind == "cpu":
        return open_backend(params, torch.device("cpu"), BackendContext(stream=stream)).backend, ""
    if kind == "emulated-nvdec":
        return emulated_nvdec_decoders().open_backend(params, stream=stream)
    from framefeed.gpu_decode import open_nvdec_backend

    return open_nvdec_backend(params, torch.device("cuda", 0), stream=stream)


@dataclass
class Batch:
    data: torch.Tensor  # (N, H, W, 3) on the CPU
    pts_seconds: list[float]
    duration_seconds: list[float]


class Pipeline:
    """`VideoDecoder`'s index and time methods over an explicit backend."""

    def __init__(self, path: Any, seek_mode: str, kind: str) -> None:
        self.opened: OpenedStream = open_stream(str(path), seek_mode=seek_mode)
        self.backend, self.reason = open_backend_kind(kind, self.opened.params, self.opened.demuxer.stream)
        if self.backend is None:
            self.opened.demuxer.close()
            pytest.skip(f"{kind} cannot decode {path}: {self.reason}")
        self.timeline = self.opened.timeline
        self.session = DecodeSession(self.opened.demuxer, self.backend, self.timeline, facts=self.timeline.facts,
                                     disposable=self.opened.disposable)
        meta = self.opened.metadata
        self.height, self.width = int(meta.height), int(meta.width)

    def __len__(self) -> int:
        return int(self.opened.metadata.num_frames or 0)

    def close(self) -> None:
        self.session.close()
        self.backend.close()
        self.opened.demuxer.close()

    def allocate(self, count: int) -> OutputBuffer:
        return OutputBuffer.allocate(count, self.height, self.width, self.backend.output_device)

    def _run(self, targets: list[Any], count: int) -> Batch:
        out = self.allocate(count)
        self.session.decode(targets, out)  # planned from the decoder's position, as VideoDecoder does
        return _batch(out)

    def get_frames_at(self, indices: list[int]) -> Batch:
        return self._run(self.timeline.targets_for_indices(indices), len(indices))

    def get_frame_at(self, index: int) -> Batch:
        return self.get_frames_at([index])

    def get_frames_played_at(self, seconds: list[float]) -> Batch:
        return self._run(self.timeline.targets_for_times(seconds), len(seconds))

    def get_frames_played_in_range(self, start: float, stop: float) -> Batch:
        if self.timeline.exact:
            index = self.timeline.index
            first = max(index.index_played_at(start), 0)
            last = int((index.pts_seconds < stop).sum())
            return self.get_frames_at(list(range(first, max(last, first + 1))))
        return _batch(self.session.execute(time_range_plan(start, stop, self.timeline), allocate=self.allocate))


def _batch(out: OutputBuffer) -> Batch:
    return Batch(out.frames.cpu(), out.pts_seconds.tolist(), out.duration_seconds.tolist())
