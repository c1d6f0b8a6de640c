"""The device a user asked for (`resolve_device`): validated once, before
any backend is opened (`registry.open_backend` then picks what decodes for it:
NVDEC on CUDA when it can decode the stream exactly, else the CPU backend with
frames uploaded and the reason in `CpuFallbackStatus`).
"""

from __future__ import annotations

from typing import Any

import torch

from framefeed.errors import CudaUnavailableError

__all__ = ["resolve_device", "worker_start_method"]


def resolve_device(device: Any) -> torch.device:
    """`None` -> torch's default device; strings and `torch.device`s validated.

    Raises:
        ValueError: not a CPU or CUDA device.
        TypeError: not a str, torch.device or None.
        CudaUnavailableError: a CUDA device while torch sees no usable GPU.
    """
    if device is None:
        device = torch.get_default_device()
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be None, a str or a torch.device, got {type(device).__name__}")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"Invalid device {device!r}: expected 'cpu', 'cuda' or 'cuda:N'") from error
    if resolved.type == "cpu":
        return torch.device("cpu")
    if resolved.type != "cuda":
        raise ValueError(f"Invalid device {device!r}: framefeed decodes on 'cpu' or 'cuda[:N]'")
    if not torch.cuda.is_available():
        raise CudaUnavailableError(
            f"device={str(device)!r} was requested but torch sees no usable CUDA GPU "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); use device='cpu'"
        )
    index = resolved.index if resolved.index is not None else torch.cuda.current_device()
    if not 0 <= index < torch.cuda.device_count():
        raise ValueError(
            f"Invalid device {device!r}: there are {torch.cuda.device_count()} CUDA devices "
            f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})"
        )
    return torch.device("cuda", index)


def worker_start_method(device: torch.device, requested: Any) -> Any:
    """The start method for DataLoader workers of a process that decodes on
    `device` with a `DecodePool` of its own.

    Such a process holds a CUDA context and the pool's threads (demux
    threads inside FFmpeg, sessions inside NVDEC calls) from the first
    epoch on. `fork` copies it with whatever locks those threads held, into
    a child whose CUDA state is unusable (PyTorch's "CUDA in multiprocessing"
    notes: use spawn or forkserver), so workers would hang or fail from the
    second epoch. On CUDA the default is "forkserver" (workers fork from a
    clean server process started before any of this), or "spawn" where
    forkserver does not exist; the dataset and `worker_init_fn` must then be
    picklable, as with spawn.

    Raises:
        ValueError: "fork" (or a fork context) requested for a CUDA device.
    """
    if device.type != "cuda":
        return requested
    if requested is None:
        import multiprocessing

        return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    method = requested if isinstance(requested, str) else getattr(requested, "get_start_method", lambda: None)()
    if method == "fork":
        raise ValueError(
            f"multiprocessing_context='fork' cannot be used on {device}: this process decodes with a DecodePool "
            "that holds a CUDA context and threads, and a forked worker inherits them in an unusable state; "
            "use 'forkserver' (the default) or 'spawn'"
        )
    return requested
