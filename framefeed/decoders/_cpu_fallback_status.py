"""`CpuFallbackStatus`: whether a CUDA decoder decodes on the CPU, and why."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CpuFallbackStatus:
    """Whether a decoder asked for a CUDA device decodes on the CPU instead.

    `bool(status)` is True when it fell back; `str(status)` gives the reason.
    A decoder created for the CPU never "falls back": its status is False.
    Decided at construction, never changes afterwards.
    """

    device: str
    is_fallback: bool = False
    reason: str = ""

    def __bool__(self) -> bool:
        return self.is_fallback

    def __str__(self) -> str:
        if self.is_fallback:
            return f"[{self.device}] Falling back to CPU decoding: {self.reason}"
        if self.device.startswith("cuda"):
            return f"[{self.device}] No fallback required: decoding on NVDEC"
        return f"[{self.device}] No fallback: CPU decoding was requested"
