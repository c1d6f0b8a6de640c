"""The backends every corpus test runs over, through one parametrisation
(`@pytest.mark.parametrize("kind", BACKENDS)`, as torchcodec's
`all_supported_devices()`):

- "cpu": `VideoDecoder(device="cpu")`.
- "emulated-nvdec": what `VideoDecoder(device="cuda")` builds, on an emulated
  H200 (`gpu_fixtures.emulated_runtime`): framefeed's real NVDEC routing,
  backend and packet feeding, with a CPU stand-in decoder and the torch
  reference colour conversion; frames stay on the CPU.
- "cuda": real NVDEC, marked `cuda`: skipped without a usable GPU, a failure
  instead when `FRAMEFEED_REQUIRE_CUDA=1` (see conftest.py).

A corpus file NVDEC cannot take is never skipped: on the NVDEC kinds it must
fall back to the CPU with the reason its corpus entry names
(`CorpusFile.nvdec_fallback`), and its frames are then checked as the CPU's.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch
from gpu_fixtures import emulated_nvdec_decoders

from corpus import CorpusFile
from framefeed import VideoDecoder
from framefeed.engine.backends.gpu_decode.backend import NvdecBackend
from framefeed.engine.backends.registry import BackendContext, BackendSelection, open_backend
from framefeed.engine.backends.status import CpuFallbackStatus
from framefeed.engine.packets import CodecParameters

BACKENDS = ["cpu", "emulated-nvdec", pytest.param("cuda", marks=pytest.mark.cuda)]
NVDEC_KINDS = ("emulated-nvdec", "cuda")
CUDA = torch.device("cuda", 0)

_emulated_owner = None


def emulated_owner() -> Any:
    """One emulated H200 per process, as `VideoDecoder` has one default owner
    per device: its cached decoders are reused (and flushed) across decoders."""
    global _emulated_owner
    if _emulated_owner is None:
        _emulated_owner = emulated_nvdec_decoders()
    return _emulated_owner


class EmulatedNvdecVideoDecoder(VideoDecoder):
    """`VideoDecoder(device="cuda")` on the emulated H200, frames on the CPU."""

    def __init__(self, source: Any, **kwargs: Any) -> None:
        super().__init__(source, device="cpu", **kwargs)

    def _open_backend(self, params: CodecParameters, context: BackendContext) -> BackendSelection:
        return open_backend(params, CUDA, dataclasses.replace(context, nvdec=emulated_owner()))


def open_decoder(kind: str, source: Any, **kwargs: Any) -> VideoDecoder:
    """A `VideoDecoder` decoding on backend `kind`."""
    if kind == "emulated-nvdec":
        return EmulatedNvdecVideoDecoder(source, **kwargs)
    return VideoDecoder(source, device="cuda" if kind == "cuda" else "cpu", **kwargs)


def open_selection(kind: str, params: CodecParameters, stream: Any = None) -> BackendSelection:
    """The backend (and fallback status) the registry gives `kind` for a
    stream, as `VideoDecoder` would get it; `stream` None for shipped packets."""
    if kind == "cpu":
        return open_backend(params, torch.device("cpu"), BackendContext(stream=stream))
    owner = emulated_owner() if kind == "emulated-nvdec" else None
    return open_backend(params, CUDA, BackendContext(stream=stream, nvdec=owner))


def on_hopper(kind: str) -> bool:
    """Whether the NVDEC of `kind` is Hopper's, whose routing the corpus states."""
    return kind == "emulated-nvdec" or (kind == "cuda" and torch.cuda.get_device_capability(CUDA) == (9, 0))


def check_routing(entry: CorpusFile, kind: str, backend: Any, status: CpuFallbackStatus) -> bool:
    """Asserts that `entry` went where its traits say for `kind`: NVDEC, or
    the CPU with the stated fallback reason. Returns whether NVDEC decodes it."""
    on_nvdec = isinstance(backend, NvdecBackend)
    if kind == "cpu":
        assert not status and not on_nvdec
    elif on_hopper(kind):
        if entry.nvdec_on_hopper:
            assert on_nvdec and not status, f"{entry.name} should decode on NVDEC: {status}"
        else:
            assert not on_nvdec and status, f"{entry.name} should fall back to the CPU"
            assert entry.nvdec_fallback in str(status), f"{entry.name}: {status}"
    else:  # another GPU generation (e.g. Ada decodes AV1): either way, said consistently
        assert on_nvdec != bool(status), str(status)
    return on_nvdec


def decoder_routing(entry: CorpusFile, kind: str, decoder: VideoDecoder) -> bool:
    return check_routing(entry, kind, decoder._backend, decoder.cpu_fallback)


def nvdec_pixel_error(entry: CorpusFile, got: torch.Tensor, expected: torch.Tensor) -> str:
    """"" when NVDEC output `got` is within its tolerance of swscale's
    `expected` (uint8 RGB, same shape), else what is wrong.

    8-bit and 4:4:4: within 2. 10-bit 4:2:0: `expected` comes from FFmpeg 8's
    frame API, whose 10-bit conversion rounds differently from the classic
    swscale that framefeed's CPU path and NVDEC kernel both reproduce (they
    agree exactly, see test_gpu_colour.py), so only the mean is held here, to
    the CPU path's own bound against the same reference."""
    if got.shape != expected.shape:
        return f"shape {tuple(got.shape)} != {tuple(expected.shape)}"
    if not got.numel():
        return ""
    diff = (got.cpu().int() - expected.cpu().int()).abs()
    worst, mean = int(diff.max()), float(diff.float().mean())
    if entry.ten_bit and entry.chroma == "420":
        return "" if mean <= 1.5 else f"mean |diff| {mean:.3f} (max {worst})"
    return "" if worst <= 2 else f"max |diff| {worst}, mean {mean:.3f}"


def cpu_pixel_error(entry: CorpusFile, got: np.ndarray, expected: np.ndarray) -> str:
    """"" when CPU output `got` equals PyAV's swscale conversion `expected`.

    10-bit input goes through swscale from the full-depth frame; FFmpeg 8's
    frame API and its classic API round differently, so a small mean is allowed."""
    if got.shape != expected.shape:
        return f"shape {got.shape} != {expected.shape}"
    diff = np.abs(got.astype(np.int16) - expected.astype(np.int16))
    if entry.ten_bit:
        return "" if diff.mean() <= 1.5 else f"mean |diff| {diff.mean():.2f}"
    return "" if not diff.any() else f"pixels differ (max {diff.max()}, {np.count_nonzero(diff)} values)"
