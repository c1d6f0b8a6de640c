"""Every source kind decodes the same frames."""

from __future__ import annotations

import io

import pytest
import torch

import corpus
from framefeed import VideoDecoder

ENTRIES = [corpus.BY_NAME[n] for n in ("h264_bframes_long_gop.mp4", "vp9.webm", "rotated_90.mp4")]


class Unseekable:
    """A file-like object that only has read/seek (no tell, no fileno)."""

    def __init__(self, data: bytes) -> None:
        self._buffer = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._buffer.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._buffer.seek(offset, whence)


def sources(path):
    data = path.read_bytes()
    yield "str", str(path)
    yield "Path", path
    yield "bytes", data
    yield "tensor", torch.frombuffer(bytearray(data), dtype=torch.uint8)
    yield "BytesIO", io.BytesIO(data)
    yield "read/seek object", Unseekable(data)
    yield "open file", open(path, "rb")  # noqa: SIM115 - closed below


@pytest.mark.parametrize("seek_mode", ["exact", "approximate"])
@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_every_source_kind_gives_the_same_frames(entry, seek_mode):
    reference = corpus.reference_frames(entry.name)
    picks = [0, len(reference) // 2, len(reference) - 1, 1]
    for kind, source in sources(entry.path):
        decoder = VideoDecoder(source, seek_mode=seek_mode, dimension_order="NHWC")
        assert len(decoder) == len(reference), kind
        batch = decoder.get_frames_at(picks)
        for slot, i in enumerate(picks):
            assert batch.pts_seconds[slot].item() == reference[i].seconds, kind
            assert torch.equal(batch.data[slot], torch.from_numpy(reference[i].rgb)), kind
        if hasattr(source, "close"):
            source.close()


def test_file_object_is_not_closed_by_the_decoder():
    entry = ENTRIES[0]
    with open(entry.path, "rb") as handle:
        decoder = VideoDecoder(handle)
        decoder[0]
        del decoder
        assert not handle.closed
