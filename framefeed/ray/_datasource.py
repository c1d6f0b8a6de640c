"""The read stage of `read_clips`: a Ray Data `Datasource` whose read tasks
open videos, run the sampler, plan its clips and demux their packets.

Read tasks never decode a picture (and never touch CUDA): each emits packet
rows (`PACKET_SCHEMA`), one per `ClipGroup`, as its own block, so
the decode stage can spread the groups of one long video over several tasks
or actors. The files are split into contiguous runs of about equal weight,
one per read task: their sizes (from the listing) when every frame is read,
their count when a few clips are sampled from each (then opening and
indexing a file is the work, about the same for every file).
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import torch
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from framefeed.data._items import item_seed
from framefeed.data._sampling import resolve_sampler
from framefeed.engine.opening import open_stream
from framefeed.ray._decode import packet_rows, read_error, record_skip
from framefeed.ray._planning import GroupPlanningVideo
from framefeed.ray._sources import VideoFile, close_opened
from framefeed.transforms import DecoderTransform, resolve_transforms

PACKET_SCHEMA = pa.schema([
    ("video_index", pa.int64()),
    ("first_clip", pa.int64()),
    ("num_clips", pa.int64()),
    ("num_frames", pa.int64()),
    ("packet_bytes", pa.int64()),
    ("planned", pa.binary()),
])


@dataclass
class ReadConfig:
    """What every read task needs besides its files.

    Attributes:
        sampler: the sampler's name (`framefeed.data.ClipDataset`'s names).
        sampler_args: its keyword arguments.
        seek_mode: "exact" or "approximate".
        stream_index: the video stream, None for the best one.
        seed: with `epoch`, the seed of every video's clips (`item_seed`);
            None: fresh draws each time the dataset is executed.
        epoch: see `seed`.
        max_frames_per_group: frames (slots) one packet row may plan.
        on_error: "raise" or "skip".
        ledger: the skip ledger actor, or None.
        transforms: the decoder transforms (checked), resolved per video.
    """

    sampler: str
    sampler_args: dict[str, Any]
    seek_mode: str
    stream_index: int | None
    seed: int | None
    epoch: int
    max_frames_per_group: int
    on_error: str
    ledger: Any = None
    transforms: tuple[DecoderTransform, ...] = ()


class ClipPacketsDatasource(Datasource):
    """Packet rows for `files[start:]` (see the module docstring): the files
    before `start` are neither opened nor read, and the others keep their
    listing positions (`video_index`, and the seed of their clips)."""

    def __init__(self, files: list[VideoFile], config: ReadConfig, start: int = 0) -> None:
        super().__init__()
        self._files = files[start:]
        self._start = start
        self._config = config

    def get_name(self) -> str:
        return "ClipPackets"

    def estimate_inmemory_data_size(self) -> int | None:
        if self._config.sampler != "all":
            return None  # a few clips per file: a small, unknown share of each
        return sum(max(f.size, 0) for f in self._files) or None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: Any = None) -> list[ReadTask]:
        weights = [max(f.size, 1) if self._config.sampler == "all" else 1 for f in self._files]
        tasks = []
        for first, stop in balanced_runs(weights, parallelism):
            files = self._files[first:stop]
            estimate = sum(max(f.size, 0) for f in files) if self._config.sampler == "all" else None
            metadata = BlockMetadata(num_rows=None, size_bytes=estimate, exec_stats=None,
                                     input_files=[f.name for f in files])
            positions = list(range(self._start + first, self._start + stop))
            read = functools.partial(read_packet_blocks, positions, files, self._config)
            tasks.append(ReadTask(read, metadata, schema=PACKET_SCHEMA, per_task_row_limit=per_task_row_limit))
        return tasks


def balanced_runs(weights: list[int], parallelism: int) -> list[tuple[int, int]]:
    """Contiguous `[first, stop)` runs covering `weights`: `min(parallelism,
    len(weights))` of them (at least one), none empty, run k ending where
    the running total first reaches k / runs of the whole."""
    count = len(weights)
    parts = max(min(int(parallelism), count), 1)
    totals = list(itertools.accumulate(weights))
    whole = totals[-1] if totals else 0
    cuts = [0]
    for k in range(1, parts):
        stop = bisect.bisect_left(totals, whole * k / parts) + 1
        stop = min(max(stop, cuts[-1] + 1), count - (parts - k))  # a file for this run and each later one
        cuts.append(stop)
    cuts.append(count)
    return list(itertools.pairwise(cuts))


def read_packet_blocks(positions: list[int], files: list[VideoFile], config: ReadConfig) -> Iterator[pa.Table]:
    """A read task: packet rows for each file, one block per row. A file that
    fails raises `ClipLoadError` naming it, or is skipped and recorded."""
    sampler = resolve_sampler(config.sampler, config.sampler_args)
    for position, file in zip(positions, files, strict=True):
        try:
            groups = plan_file(file, position, sampler, config)
        except Exception as error:
            if config.on_error == "raise":
                raise read_error(file.name, position, error) from error
            record_skip(config.ledger, file.name, error)
            continue
        rows = packet_rows(position, groups)
        for i in range(len(groups)):
            yield pa.Table.from_pydict({k: v[i:i + 1] for k, v in rows.items()}, schema=PACKET_SCHEMA)


def plan_file(file: VideoFile, position: int, sampler: Any, config: ReadConfig) -> list[Any]:
    """Open `file`, resolve the transforms and draw its clips (in this order,
    from the video's RNG, as `ClipDataset` does for item `position`), and plan
    them into `ClipGroup`s (packets read), each carrying the resolved pipeline.

    Raises:
        ValueError: transform sizes that do not fit the video; what opening,
            sampling and demuxing raise.
    """
    source = file.open()
    try:
        opened = open_stream(source, config.stream_index, config.seek_mode)
        try:
            metadata = opened.metadata
            with _seeded(config.seed, config.epoch, position):  # crop windows first, then clips
                pipeline = resolve_transforms(config.transforms, int(metadata.height or 0), int(metadata.width or 0))
                groups = sampler(GroupPlanningVideo(opened, config.max_frames_per_group), **config.sampler_args)
            for group in groups:
                group.planned.transforms = pipeline
            return groups
        finally:
            opened.demuxer.close()
    finally:
        close_opened(source)


@contextlib.contextmanager
def _seeded(seed: int | None, epoch: int, position: int) -> Iterator[None]:
    """torch's CPU RNG seeded for one video as `ClipDataset` seeds item
    `position` (fresh OS entropy without a seed), restored afterwards."""
    value = item_seed(seed, epoch, position) if seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(value)
        yield
