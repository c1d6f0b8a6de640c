"""Shared fixtures: the generated corpus and its PyAV ground truth."""

from __future__ import annotations

import pytest

import corpus


@pytest.fixture(scope="session")
def corpus_files():
    """Generate (or reuse) every corpus file once per session."""
    return {entry.name: entry.path for entry in corpus.FILES}


def pytest_collection_modifyitems(config, items):
    """`cuda` tests need an NVIDIA GPU plus PyNvVideoCodec; skip cleanly without."""
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch import problems surface elsewhere
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
