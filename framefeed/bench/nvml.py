"""NVDEC utilisation from NVML, sampled while a measurement runs.

`nvmlDeviceGetDecoderUtilization` reports the percentage of time the GPU's
video decoders were busy over its last sampling period (NVML chooses the
period, typically 1/6 s). A `DecoderUtilisation` samples it from a thread
while a timed run is in progress and reports the mean, so a throughput
figure comes with how far it is from the hardware's ceiling.

NVML comes from the `nvidia-ml-py` package (module `pynvml`), imported only
when a sampler is created; without it, or without an NVIDIA driver, the
sampler is inert and reports None ("-" in tables), never an exception.
"""

from __future__ import annotations

import threading
from typing import Any

# Poll often enough to get several samples from short runs; NVML itself
# averages over its own sampling period.
POLL_SECONDS = 0.02

_init_lock = threading.Lock()
_nvml: Any = None
_nvml_reason: str | None = None


def load_nvml() -> tuple[Any, str | None]:
    """(pynvml module initialised, None) or (None, why not)."""
    global _nvml, _nvml_reason
    with _init_lock:
        if _nvml is None and _nvml_reason is None:
            try:
                import pynvml

                pynvml.nvmlInit()
                _nvml = pynvml
            except Exception as error:  # ImportError, or NVMLError without a driver
                _nvml_reason = f"NVML unavailable ({type(error).__name__}: {error})".splitlines()[0]
        return _nvml, _nvml_reason


def device_handle(nvml: Any, device_index: int) -> Any:
    """The NVML handle of torch's CUDA device `device_index` (matched by UUID
    when torch reports one, since CUDA_VISIBLE_DEVICES may renumber devices)."""
    try:
        import torch

        uuid = str(torch.cuda.get_device_properties(device_index).uuid)
        return nvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
    except Exception:  # no torch/CUDA or no UUID: fall back to the index
        return nvml.nvmlDeviceGetHandleByIndex(device_index)


class DecoderUtilisation:
    """Samples NVDEC utilisation of one GPU between `start()` and `stop()`.

    Usage: `sampler.start(); ...timed work...; percent = sampler.stop()`.
    `stop()` returns the mean utilisation (percent) over the samples taken,
    or None when NVML is unavailable or no sample could be read.
    """

    def __init__(self, device_index: int = 0) -> None:
        nvml, self.unavailable_reason = load_nvml()
        self._nvml = nvml
        self._handle = None
        if nvml is not None:
            try:
                self._handle = device_handle(nvml, device_index)
            except Exception as error:  # NVMLError: no such device
                self.unavailable_reason = f"NVML has no handle for device {device_index} ({error})"
        self._samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def available(self) -> bool:
        return self._handle is not None

    def _read(self) -> None:
        try:
            utilisation, _period_us = self._nvml.nvmlDeviceGetDecoderUtilization(self._handle)
        except Exception:  # a failed read is a missing sample, not an error
            return
        self._samples.append(float(utilisation))

    def _poll(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self._read()

    def start(self) -> None:
        self._samples = []
        if not self.available:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, name="nvml-decoder-utilisation", daemon=True)
        self._thread.start()

    def stop(self) -> float | None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self._read()  # the period ending now covers the end of a short run
        if not self._samples:
            return None
        return sum(self._samples) / len(self._samples)
