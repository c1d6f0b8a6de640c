"""`CpuFallbackStatus`: whether a CUDA decoder decodes on the CPU, and why."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CpuFallbackStatus:
    """Whether a decoder asked for a CUDA device decodes on the CPU instead.

    `bool(status)` is True when it fell back; `str(status)` gives the status in
    torchcodec's words ("[CUDA] Fallback status: Falling back due to: ...",
    "... No fallback required") with framefeed's reason. A decoder created for
    the CPU never "falls back": its status is False. Decided at construction,
    so `status_known` is always True for a decoder's status (torchcodec only
    knows it after the first decoded frame on some backends).
    """

    device: str = "cpu"
    is_fallback: bool = False
    reason: str = ""
    status_known: bool = field(default=True, kw_only=True)

    def __bool__(self) -> bool:
        return self.status_known and self.is_fallback

    @property
    def _backend(self) -> str:
        return "CUDA" if self.device.startswith("cuda") else "CPU"

    def __str__(self) -> str:
        prefix = f"[{self._backend}] Fallback status:"
        if not self.status_known:
            return f"{prefix} Unknown"
        if self.is_fallback:
            return f"{prefix} Falling back due to: {self.reason} ({self.device} requested; decoding on the CPU)"
        if self.device.startswith("cuda"):
            return f"{prefix} No fallback required (decoding on NVDEC, {self.device})"
        return f"{prefix} No fallback required (CPU decoding was requested)"
