"""`ClipDataset`: a map-style torch `Dataset` whose item is one video's clips.

Made to run inside DataLoader workers of any start method: it holds only
picklable values, opens each source when its item is fetched and closes it
before the next, and never imports or initialises anything CUDA (nor
`framefeed.engine.backends.gpu_decode`), whatever `device` says.

Every item: open the source (`framefeed.engine.opening`), run the sampler on a
stand-in decoder that turns its frames into a plan (`_sampling`), then
- a CPU target decodes the plan from the open file (`_decoding`), a whole
  batch into one buffer (`__getitems__`; shared memory in a worker);
- a CUDA target reads the plan's compressed packets instead, and the main
  process decodes them (`ClipLoader`'s `DecodePool`).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.data import Dataset, get_worker_info

from framefeed import _arguments as args
from framefeed._validation import require_int
from framefeed._warnings import warn_user
from framefeed.data._decoding import decode_planned, frame_buffer
from framefeed.data._items import (
    DecodedClips,
    ItemKey,
    ShippedClips,
    SkippedItem,
    describe_source,
    item_seed,
    load_error,
)
from framefeed.data._sampling import PlanningVideo, resolve_sampler
from framefeed.engine.opening import open_stream
from framefeed.transforms import DecoderTransform, _as_decoder_transform, resolve_transforms

SEEK_MODES = ("exact", "approximate")
DIMENSION_ORDERS = ("NCHW", "NHWC")
ON_ERROR = ("raise", "skip")

Item = DecodedClips | ShippedClips | SkippedItem


class ClipDataset(Dataset):
    """Clips from a list of videos, one video per item.

    Args:
        sources: the videos: anything `VideoDecoder` opens (paths, bytes, ...).
        sampler: how clips are chosen from each video: "random_indices",
            "regular_indices", "random_timestamps", "regular_timestamps" (the
            `framefeed.samplers` functions of those names) or "all" (every
            frame, in consecutive clips of `num_frames_per_clip`, the last one
            completed by `policy`).
        labels: one label per source (any values; numbers become a tensor in
            `ClipLoader` batches), or None.
        seek_mode: "exact" or "approximate", as for `VideoDecoder`.
        dimension_order: "NCHW" (clips `(num_clips, T, C, H, W)`) or "NHWC".
        transforms: decoder transforms, as for `VideoDecoder`: a sequence of
            `framefeed.transforms.Resize`, `CenterCrop`, `RandomCrop` (or the
            torchvision v2 transforms of those names), applied by the decoder
            to every frame (on NVDEC, in the colour kernel). A RandomCrop
            window is drawn per item, before the clips, from the item's RNG
            (as `VideoDecoder` draws it at creation).
        on_error: "raise": a source that fails raises `ClipLoadError` naming it;
            "skip": the item becomes a `SkippedItem` and a warning (once per
            source per process, or once per source from `ClipLoader`) names it.
        device: where the clips are decoded. "cpu": `__getitem__` decodes and
            returns `DecodedClips`. "cuda"/"cuda:N": it returns `ShippedClips`
            (the plan and its packets, CPU data) for a `DecodePool` in the main
            process; nothing here touches CUDA, the device is only parsed.
        seed: None: `dataset[i]` draws clips from torch's global RNG, as calling
            the sampler would. An int: item i's clips are drawn with a seed
            derived from (seed, epoch, i) (`set_epoch`), whichever process
            fetches it. `ClipLoader` passes its own seed and epoch with each index.
        stream_index: the video stream, None for the best one.
        output_dtype: the clips' dtype, as for `VideoDecoder`: `torch.uint8`,
            `torch.float32` (values in [0, 1]) or `"auto"` (float32 for sources
            with more than 8 bits per sample; a batch mixing both raises, so
            batch such sources with one explicit dtype).
        num_ffmpeg_threads: FFmpeg threads per decoder (CPU target; 1 suits
            DataLoader workers, which are the parallelism).
        **sampler_args: the sampler's arguments (`num_clips`,
            `num_frames_per_clip`, `num_indices_between_frames`,
            `seconds_between_frames`, `seconds_between_clip_starts`,
            `sampling_range_start`, `sampling_range_end`, `policy`, as the
            sampler takes them). A short video gets what the sampler gives it
            (clips completed by `policy`, or the sampler's error).

    Raises (at construction):
        ValueError: unknown sampler, seek mode, dimension order, `on_error`,
            `output_dtype` or device type; labels whose number differs from the sources'; a
            transform that is not a decoder transform (sizes are checked
            against each video, as failures of its item).
        TypeError: arguments of the wrong type; a sampler argument the sampler
            does not take.

    `dataset[i]` raises IndexError outside `[0, len)` and `ClipLoadError` for a
    failing source under `on_error="raise"`.
    """

    def __init__(
        self,
        sources: Sequence[Any],
        *,
        sampler: Literal["random_indices", "regular_indices", "random_timestamps", "regular_timestamps",
                         "all"] = "random_indices",
        labels: Sequence[Any] | None = None,
        seek_mode: Literal["exact", "approximate"] = "exact",
        dimension_order: Literal["NCHW", "NHWC"] = "NCHW",
        transforms: Sequence[Any] | None = None,
        on_error: Literal["raise", "skip"] = "raise",
        device: str | torch.device = "cpu",
        seed: int | None = None,
        stream_index: int | None = None,
        num_ffmpeg_threads: int = 1,
        output_dtype: torch.dtype | Literal["auto"] = torch.uint8,
        **sampler_args: Any,
    ) -> None:
        if isinstance(sources, (str, bytes)) or not isinstance(sources, Sequence):
            raise TypeError(f"sources must be a sequence of videos (a list of paths, ...), got {type(sources).__name__}")
        self.sources = list(sources)
        if labels is not None:
            if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence | Tensor):
                raise TypeError(f"labels must be a sequence with one label per source, got {type(labels).__name__}")
            if len(labels) != len(self.sources):
                raise ValueError(f"labels has {len(labels)} entries for {len(self.sources)} sources: give one per source")
            labels = list(labels)
        self.labels = labels
        self.sampler_name = sampler
        self.sampler_args = dict(sampler_args)
        self._sampler = resolve_sampler(sampler, self.sampler_args)
        _check_choice("seek mode", seek_mode, SEEK_MODES)
        _check_choice("dimension order", dimension_order, DIMENSION_ORDERS)
        _check_choice("on_error", on_error, ON_ERROR)
        self.seek_mode = seek_mode
        self.dimension_order = dimension_order
        self.on_error = on_error
        self.transforms = _check_transforms(transforms)
        self.device = _parse_device(device)
        self.seed = None if seed is None else require_int("seed", seed)
        self.epoch = 0
        self.stream_index = None if stream_index is None else require_int("stream_index", stream_index)
        self.num_ffmpeg_threads = require_int("num_ffmpeg_threads", num_ffmpeg_threads)
        self.output_dtype = args.output_dtype(output_dtype)
        self._warn_skips = True
        self._warned: set[str] = set()

    # -- the Dataset protocol -------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, key: int | ItemKey) -> Item:
        """Item `key`: `DecodedClips` (CPU target), `ShippedClips` (CUDA
        target) or, for a failing source under `on_error="skip"`, `SkippedItem`.
        `key` is an index or an `ItemKey` (index, epoch, seed)."""
        return self._items([key])[0]

    def __getitems__(self, keys: Sequence[int | ItemKey]) -> list[Item]:
        """The items of `keys`, in order (torch's DataLoader fetches a batch
        with this, in its worker). A CPU target decodes them into one tensor
        (in shared memory inside a DataLoader worker),
        each item's clips a view of it, so batching them copies nothing.
        A subclass that overrides `__getitem__` gets `[self[k] for k in keys]`."""
        if type(self).__getitem__ is not ClipDataset.__getitem__:
            return [self[key] for key in keys]
        return self._items(list(keys))

    # -- configuration ----------------------------------------------------------------------------

    @property
    def ships_packets(self) -> bool:
        """Whether items are plans plus packets (a CUDA target) rather than decoded clips."""
        return self.device.type != "cpu"

    def set_epoch(self, epoch: int) -> None:
        """The epoch that, with `seed`, picks the clips of `dataset[i]` (seeded datasets only)."""
        self.epoch = require_int("epoch", epoch)

    def with_target(self, ships_packets: bool, *, warn_skips: bool = True) -> ClipDataset:
        """A shallow copy whose items are plans plus packets (True) or decoded
        clips (False); `warn_skips=False` leaves warning about skipped sources
        to the caller (`ClipLoader` warns once per source in its own process)."""
        twin = copy.copy(self)
        twin.device = torch.device("cuda") if ships_packets else torch.device("cpu")
        twin._warn_skips = warn_skips
        twin._warned = set()
        return twin

    def __repr__(self) -> str:
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.sampler_args.items())
        return (f"ClipDataset({len(self)} sources, sampler={self.sampler_name!r}"
                f"{', ' + arguments if arguments else ''}, device={str(self.device)!r})")

    # -- work ---------------------------------------------------------------------------------------

    def _resolve_key(self, key: Any) -> tuple[int, int, int | None]:
        if isinstance(key, ItemKey):
            index, epoch, seed = require_int("index", key.index), key.epoch, key.seed
        else:
            index, epoch, seed = require_int("index", key), self.epoch, self.seed
        if not 0 <= index < len(self.sources):
            raise IndexError(f"Invalid dataset index {index}: it must be in [0, {len(self.sources)})")
        return index, epoch, seed

    @staticmethod
    @contextlib.contextmanager
    def _rng(seed: int | None, epoch: int, index: int) -> Iterator[None]:
        """Seeded: torch's CPU RNG seeded for this item, restored afterwards
        (only the CPU generator: seeding CUDA's would touch the device)."""
        if seed is None:
            yield
            return
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(item_seed(seed, epoch, index))
            yield

    def _items(self, keys: list[Any]) -> list[Item]:
        resolved = [self._resolve_key(key) for key in keys]  # a bad index raises IndexError, never skipped
        batch = _BatchBuffer(len(resolved), get_worker_info() is not None) if not self.ships_packets else None
        items: list[Item] = []
        for index, epoch, seed in resolved:
            try:
                items.append(self._item(index, epoch, seed, batch))
            except Exception as error:
                items.append(self._failed(index, error))
        return items

    def _item(self, index: int, epoch: int, seed: int | None, batch: _BatchBuffer | None) -> Item:
        """One source opened, its clips sampled and planned, then decoded into
        `batch` (CPU target) or shipped as packets (`batch` None)."""
        source = self.sources[index]
        name, label = describe_source(source), self._label(index)
        opened = open_stream(source, self.stream_index, self.seek_mode, self.num_ffmpeg_threads)
        try:
            metadata = opened.metadata
            with self._rng(seed, epoch, index):  # crop windows first, then clips, as with a VideoDecoder
                pipeline = resolve_transforms(self.transforms, int(metadata.height or 0), int(metadata.width or 0))
                planned = self._sampler(PlanningVideo(opened, read_packets=batch is None), **self.sampler_args)
            planned.transforms = pipeline
            if batch is None:
                return ShippedClips(index, name, label, planned)
            dtype = args.resolve_output_dtype(self.output_dtype, opened.params.pixel_format)
            frames = batch.frames_for(planned.plan.slot_count, *pipeline.output_size, dtype)
            pts, durations = decode_planned(opened, planned, frames, self.num_ffmpeg_threads)
        finally:
            opened.demuxer.close()
        data = frames.permute(0, 3, 1, 2) if self.dimension_order == "NCHW" else frames
        shape = planned.clip_shape
        return DecodedClips(index, name, label, data.unflatten(0, shape), pts.unflatten(0, shape),
                            durations.unflatten(0, shape))

    def _label(self, index: int) -> Any:
        return None if self.labels is None else self.labels[index]

    def _failed(self, index: int, error: Exception) -> SkippedItem:
        """`on_error`: raise `ClipLoadError`, or a `SkippedItem` (warned once per source)."""
        name = describe_source(self.sources[index])
        if self.on_error == "raise":
            raise load_error(name, index, error) from error
        skipped = SkippedItem(index, name, self._label(index), f"{type(error).__name__}: {error}")
        if self._warn_skips and name not in self._warned:
            self._warned.add(name)
            warn_user(skip_message(skipped))
        return skipped


class _BatchBuffer:
    """Frame buffers for a batch of items: one tensor sized from the first
    item for all (items sampled alike need as many frames of one size), each
    item a slice of it; an item that does not fit gets its own."""

    def __init__(self, items: int, shared: bool) -> None:
        self._items = items
        self._shared = shared
        self._frames: Tensor | None = None
        self._used = 0

    def frames_for(self, count: int, height: int, width: int, dtype: torch.dtype = torch.uint8) -> Tensor:
        if self._frames is None:
            self._frames = frame_buffer(count * self._items, height, width, self._shared, dtype)
        frames = self._frames
        fits = tuple(frames.shape[1:3]) == (height, width) and frames.dtype == dtype
        if fits and self._used + count <= frames.shape[0]:
            self._used += count
            return frames[self._used - count:self._used]
        return frame_buffer(count, height, width, self._shared, dtype)


def skip_message(item: SkippedItem) -> str:
    return f"Skipping {item.source} (dataset item {item.index}) and its clips: {item.error}"


def _check_choice(what: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"Invalid {what} ({value!r}). Supported values are {', '.join(valid)}.")


def _check_transforms(transforms: Any) -> tuple[DecoderTransform, ...]:
    """The decoder transforms, converted from torchvision's where given (so
    workers never need torchvision). Sizes are checked against each video.

    Raises:
        TypeError: not a sequence.
        ValueError: a transform that is not a decoder transform.
    """
    if transforms is None:
        return ()
    if isinstance(transforms, (str, bytes)) or not isinstance(transforms, Sequence):
        raise TypeError(f"transforms must be a sequence of decoder transforms, got {type(transforms).__name__}")
    return tuple(_as_decoder_transform(transform) for transform in transforms)


def _parse_device(device: Any) -> torch.device:
    """The device's type and index, without asking CUDA anything (this runs in workers)."""
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a str or a torch.device, got {type(device).__name__}")
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"Invalid device {device!r}: expected 'cpu', 'cuda' or 'cuda:N'") from error
    if parsed.type not in ("cpu", "cuda"):
        raise ValueError(f"Invalid device {device!r}: framefeed decodes on 'cpu' or 'cuda[:N]'")
    return parsed
