"""Importable by `spawn`/`forkserver` DataLoader workers for tests/test_data.py:
a dataset that reports, from inside the worker, which CUDA modules are
imported there and whether CUDA is initialised."""

from __future__ import annotations

import dataclasses
import os
import sys

import torch

from framefeed.data import ClipDataset

CUDA_MODULES = ("framefeed.engine.backends.gpu_decode", "cupy", "PyNvVideoCodec")


class ReportingDataset(ClipDataset):
    """Each item's label becomes `(pid, CUDA modules imported, CUDA initialised)`,
    taken in the process that made the item, after making it."""

    def __getitem__(self, key):
        item = super().__getitem__(key)
        found = tuple(name for name in CUDA_MODULES if name in sys.modules)
        return dataclasses.replace(item, label=(os.getpid(), found, torch.cuda.is_initialized()))

