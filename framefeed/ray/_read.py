"""`read_clips`: the Ray Data pipeline, read stage -> decode stage.

    driver                read tasks (CPU)                decode stage
    list files  ------->  open, sample, plan,  --packet-->  cpu: Ray tasks, FFmpeg
    (sizes from           demux the clips'     rows         cuda: Ray actors, each a
     the listing)         packets                            DecodePool on its GPU
                                                             --> clip rows

Only compressed packets cross from the read stage to the decode stage (a
packet row weighs what its keyframe intervals weigh in the file, roughly a
hundredth of the decoded frames). Skipped videos (`on_error="skip"`) are
counted by a small ledger actor and reported by the dataset's `stats()`.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal, NoReturn

import ray
from ray.data import Dataset
from ray.exceptions import RayTaskError

from framefeed import _arguments as args
from framefeed._validation import require_int
from framefeed._warnings import warn_user
from framefeed.data import ClipLoadError
from framefeed.data._dataset import _check_choice, _check_transforms
from framefeed.data._sampling import resolve_sampler
from framefeed.ray._datasource import ClipPacketsDatasource, ReadConfig
from framefeed.ray._decode import DecodeConfig, NvdecClipDecoder, decode_packet_batch
from framefeed.ray._sources import VIDEO_EXTENSIONS, expand_sources

SAMPLER_NAMES = ("random_indices", "regular_indices", "random_timestamps", "regular_timestamps", "all")
# Frames one packet row plans at most: bounds a decoded block and lets a long
# video decode in several tasks at once (128 frames of 1080p RGB: 0.75 GiB).
MAX_FRAMES_PER_GROUP = 128
# Packet rows a CUDA decode actor works on at once (each call on its own thread,
# all feeding the actor's DecodePool): about two per NVDEC engine of an H100/H200.
CALLS_PER_ACTOR = 16


def read_clips(
    sources: Any,
    *,
    sampler: Literal["random_indices", "regular_indices", "random_timestamps", "regular_timestamps",
                     "all"] = "random_indices",
    labels: Sequence[Any] | None = None,
    seed: int | None = None,
    epoch: int = 0,
    start: int = 0,
    seek_mode: Literal["exact", "approximate"] = "exact",
    dimension_order: Literal["NCHW", "NHWC"] = "NCHW",
    transforms: Sequence[Any] | None = None,
    decode: Literal["cpu", "cuda"] = "cpu",
    on_error: Literal["raise", "skip"] = "raise",
    concurrency: int | tuple[int, int] | None = None,
    num_gpus_per_actor: float = 1.0,
    num_ffmpeg_threads: int = 1,
    pool_options: dict[str, Any] | None = None,
    filesystem: Any = None,
    file_extensions: Sequence[str] | None = VIDEO_EXTENSIONS,
    include_paths: bool = False,
    stream_index: int | None = None,
    override_num_blocks: int | None = None,
    max_frames_per_group: int = MAX_FRAMES_PER_GROUP,
    output_dtype: Any = "uint8",
    **sampler_args: Any,
) -> VideoClips:
    """A Ray Dataset of clips sampled from videos, one row per clip.

    Args:
        sources: a path, directory, glob pattern (`**` spans directories) or
            URI `pyarrow.fs` opens (`s3://...`, `gs://...`, `file://...`), or
            a list of them. Directories and patterns keep files whose
            extension is in `file_extensions` (None: every file).
        sampler: how clips are chosen from each video, as in
            `framefeed.data.ClipDataset`: "random_indices", "regular_indices",
            "random_timestamps", "regular_timestamps", or "all" (every frame,
            in consecutive clips of `num_frames_per_clip`).
        labels: one label per entry of `sources` (every file of a directory
            or pattern gets its entry's label), or None.
        seed: the clips of video i (in listing order) are drawn as
            `ClipDataset(..., seed=seed)` draws item i in epoch `epoch`, so the
            dataset gives the same clips on every execution. None: fresh
            random clips on every execution (each epoch).
        epoch: see `seed`.
        start: videos already consumed, in listing order: videos
            `[0, start)` are left out without being opened or read, and the
            others keep their `video_index` and their clips (with a `seed`,
            a restarted job that passes the `epoch` and the count it had
            consumed reads exactly the rest of that epoch). 0 to
            `len(ds.sources)`.
        seek_mode, dimension_order, stream_index: as for `ClipDataset`.
        output_dtype: the frames' dtype, as for `VideoDecoder`: `torch.uint8`
            (or "uint8", the default), `torch.float32` (or "float32"; values in
            [0, 1]) or "auto" (float32 for sources with more than 8 bits per sample).
        transforms: decoder transforms, as for `ClipDataset` and
            `VideoDecoder`: a sequence of `framefeed.transforms.Resize`,
            `CenterCrop`, `RandomCrop` (or the torchvision v2 transforms of
            those names). Resolved per video in the read stage exactly as
            `ClipDataset` resolves an item (a RandomCrop window drawn from the
            video's RNG before its clips), then applied by the decoder to every
            frame: FFmpeg plus torch with `decode="cpu"`, fused into NVDEC's
            colour kernel with `decode="cuda"`. Sizes that do not fit a video
            are failures of that video (`on_error`).
        decode: "cpu": Ray tasks decode with FFmpeg. "cuda": Ray actors
            (`num_gpus_per_actor` each) decode with a `DecodePool` on their GPU.
        on_error: "raise": a video that cannot be read or decoded fails the
            dataset with `framefeed.data.ClipLoadError` naming it. "skip": it is left out
            (a logged warning names it) and `stats()` counts it.
        concurrency: decode tasks running at once (cpu), or the number of
            actors (cuda: an int, or `(min, max)` to autoscale); None: Ray decides.
        num_gpus_per_actor: GPUs per decode actor (0.5: two actors share one).
        num_ffmpeg_threads: FFmpeg threads per decode task (`decode="cpu"`).
            1 holds each task to the one CPU Ray reserves for it (Ray runs as
            many tasks as there are CPUs); 0 lets FFmpeg decide, as decord in
            `ray.data.read_videos` does, which helps only when fewer groups are
            ready than there are idle cores.
        pool_options: keyword arguments of each actor's `DecodePool` (its
            `device` is the GPU Ray gave the actor unless given here).
        filesystem: a `pyarrow.fs.FileSystem` in which every source is a path.
        file_extensions: see `sources`.
        include_paths: add a `source` column, the video's path or URI (as in
            Ray's readers, off by default: `iter_torch_batches` converts every
            column to a tensor and refuses strings; `ds.sources[video_index]`
            names a row's video either way).
        override_num_blocks: read tasks (None: Ray decides from the cluster).
        max_frames_per_group: frames one read row plans and one decode step
            produces at most (whole clips; at least one clip).
        **sampler_args: the sampler's arguments (`num_clips`,
            `num_frames_per_clip`, `num_indices_between_frames`,
            `seconds_between_frames`, `seconds_between_clip_starts`,
            `sampling_range_start`, `sampling_range_end`, `policy`).

    Returns:
        A `ray.data.Dataset` (`VideoClips`) with columns `frames` (uint8 or
        float32 per `output_dtype`, `(T, C, H, W)` or `(T, H, W, C)`), `pts_seconds` and `duration_seconds`
        (float64 `(T,)`), `video_index` (the video's position in the listing,
        `ds.sources`), `clip_index` (the clip's position among its video's
        clips), with `labels` a `label` column, and with `include_paths` a
        `source` column. Frames of different sizes make ragged batches: give
        a resizing transform to batch videos of mixed sizes.

    Raises:
        TypeError, ValueError: bad arguments (checked here, before any read),
            among them a transform that is not a decoder transform.
        FileNotFoundError: an entry names nothing, or matches no video file
            (with `on_error="skip"`: a warning, and `skipped()` names it).
        ValueError: `start` outside `[0, number of videos]`.
        ClipLoadError (from iteration): a video that cannot be read, with
            `on_error="raise"`. The consuming methods of the returned dataset
            (`iter_batches`, `iter_rows`, `iter_torch_batches`, `take*`,
            `materialize`, ...) raise it with framefeed's message, the Ray task
            error as its `__cause__`; datasets derived from it (`map`,
            `streaming_split`, Ray Train shards) raise Ray's task error, which
            is also a `ClipLoadError`.
    """
    _check_choice("sampler", sampler, SAMPLER_NAMES)
    resolve_sampler(sampler, sampler_args)
    _check_choice("seek mode", seek_mode, ("exact", "approximate"))
    _check_choice("dimension order", dimension_order, ("NCHW", "NHWC"))
    _check_choice("decode", decode, ("cpu", "cuda"))
    _check_choice("on_error", on_error, ("raise", "skip"))
    checked_transforms = _check_transforms(transforms)
    checked_dtype = args.output_dtype_from_name(output_dtype)
    seed = None if seed is None else require_int("seed", seed)
    epoch = require_int("epoch", epoch)
    max_frames_per_group = require_int("max_frames_per_group", max_frames_per_group)
    if max_frames_per_group < 1:
        raise ValueError(f"max_frames_per_group ({max_frames_per_group}) must be at least 1")
    if not num_gpus_per_actor > 0:
        raise ValueError(f"num_gpus_per_actor ({num_gpus_per_actor}) must be > 0")
    extensions = None if file_extensions is None else tuple(file_extensions)
    compute = _task_pool(concurrency) if decode == "cpu" else _actor_pool(concurrency)

    start = require_int("start", start)
    missing: list[tuple[str, FileNotFoundError]] = []
    files = expand_sources(sources, filesystem, extensions,
                           on_missing=(lambda entry, error: missing.append((entry, error)))
                           if on_error == "skip" else None)
    if not 0 <= start <= len(files):
        raise ValueError(f"start ({start}) must be in [0, {len(files)}]: the videos already consumed, of the "
                         f"{len(files)} listed")
    entry_labels = _entry_labels(sources, labels)
    ledger = None
    if on_error == "skip":
        ledger = SkipLedger.options(num_cpus=0).remote(len(files) - start + len(missing))  # type: ignore[attr-defined]
        for entry, error in missing:  # skipped at listing time, as ClipLoader skips a missing file: one warning
            warn_user(f"framefeed.ray.read_clips: skipping {entry}: {type(error).__name__}: {error}")
            ray.get(ledger.record.remote(entry, f"{type(error).__name__}: {error}"))

    read_config = ReadConfig(sampler, dict(sampler_args), seek_mode, stream_index, seed, epoch,
                             max_frames_per_group, on_error, ledger, checked_transforms)
    decode_config = DecodeConfig(
        names=[f.name for f in files],
        labels=None if entry_labels is None else [entry_labels[f.entry] for f in files],
        include_paths=bool(include_paths),
        dimension_order=dimension_order, on_error=on_error,
        num_ffmpeg_threads=require_int("num_ffmpeg_threads", num_ffmpeg_threads), ledger=ledger,
        pool_options=dict(pool_options or {}), output_dtype=checked_dtype)

    packets = ray.data.read_datasource(ClipPacketsDatasource(files, read_config, start),
                                       override_num_blocks=override_num_blocks)
    # One packet row per call: each is a decode unit (a group of whole clips).
    if decode == "cpu":
        clips = packets.map_batches(decode_packet_batch, fn_args=(decode_config,), batch_size=1,
                                    batch_format="pyarrow", compute=compute, num_cpus=1)
    else:
        clips = packets.map_batches(NvdecClipDecoder, fn_constructor_args=(decode_config,), batch_size=1,
                                    batch_format="pyarrow", compute=compute, num_gpus=num_gpus_per_actor)
    return VideoClips.wrap(clips, ledger, [f.name for f in files])


def _task_pool(concurrency: Any) -> Any:
    if concurrency is not None and (not isinstance(concurrency, int) or isinstance(concurrency, bool)
                                    or concurrency < 1):
        raise ValueError(f"Invalid concurrency ({concurrency!r}) for decode='cpu': the most decode tasks "
                         "to run at once, an int >= 1, or None")
    return ray.data.TaskPoolStrategy(size=concurrency)


def _actor_pool(concurrency: Any) -> Any:
    """Decode actors: a fixed count, `(min, max)` to autoscale, or None (1 to as many as fit).
    Each runs `CALLS_PER_ACTOR` calls at once on threads, so that many packet rows
    are in its `DecodePool` together (the pool's own cap bounds their memory)."""
    calls = dict(max_concurrent_calls_per_actor=CALLS_PER_ACTOR, max_tasks_in_flight_per_actor=CALLS_PER_ACTOR,
                 enable_true_multi_threading=True)
    if concurrency is None:
        return ray.data.ActorPoolStrategy(min_size=1, max_size=None, **calls)
    if isinstance(concurrency, int) and not isinstance(concurrency, bool) and concurrency >= 1:
        return ray.data.ActorPoolStrategy(size=concurrency, **calls)
    if (isinstance(concurrency, tuple) and len(concurrency) == 2
            and all(isinstance(c, int) and c >= 1 for c in concurrency) and concurrency[0] <= concurrency[1]):
        return ray.data.ActorPoolStrategy(min_size=concurrency[0], max_size=concurrency[1], **calls)
    raise ValueError(f"Invalid concurrency ({concurrency!r}) for decode='cuda': the number of decode actors "
                     "(an int >= 1), a (min, max) pair to autoscale, or None")


def _entry_labels(sources: Any, labels: Sequence[Any] | None) -> list[Any] | None:
    if labels is None:
        return None
    entries = 1 if isinstance(sources, str) or hasattr(sources, "__fspath__") else len(list(sources))
    if isinstance(labels, (str, bytes)) or not hasattr(labels, "__len__"):
        raise TypeError(f"labels must be a sequence with one label per source entry, got {type(labels).__name__}")
    if len(labels) != entries:
        raise ValueError(f"labels has {len(labels)} entries for {entries} source entries: give one per entry "
                         "(every file of a directory or pattern gets its entry's label)")
    return list(labels)


@ray.remote
class SkipLedger:
    """Counts the videos a `read_clips` dataset skipped, over all its executions."""

    def __init__(self, total: int) -> None:
        self._total = total
        self._errors: dict[str, str] = {}
        self._events = 0
        self._lock = threading.Lock()

    def record(self, name: str, error: str) -> None:
        with self._lock:
            self._errors.setdefault(name, error)
            self._events += 1

    def summary(self) -> tuple[int, int, dict[str, str]]:
        with self._lock:
            return self._total, self._events, dict(self._errors)


def driver_error(error: BaseException) -> ClipLoadError | None:
    """The `ClipLoadError` a read or decode task raised, as its task wrote it
    (without Ray's retry advice), for `error` (a Ray task error); None for
    any other error."""
    cause = getattr(error, "cause", None)
    if not isinstance(error, RayTaskError) or not isinstance(cause, ClipLoadError):
        return None
    message = getattr(cause, "framefeed_message", None) or str(cause.args[0] if cause.args else cause)
    return ClipLoadError(message, getattr(cause, "source", None), getattr(cause, "index", None))


def _raise_for_driver(error: BaseException) -> NoReturn:
    replacement = driver_error(error)
    if replacement is None:
        raise error
    raise replacement from error


class _DriverErrors:
    """An iterable whose iterators raise `driver_error`'s ClipLoadError."""

    def __init__(self, iterable: Iterable[Any]) -> None:
        self._iterable = iterable

    def __iter__(self) -> Iterator[Any]:
        try:
            yield from self._iterable
        except RayTaskError as error:
            _raise_for_driver(error)


def _with_driver_errors(method: Callable[..., Any], lazy: bool) -> Callable[..., Any]:
    @functools.wraps(method)
    def consume(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            result = method(self, *args, **kwargs)
        except RayTaskError as error:
            _raise_for_driver(error)
        return _DriverErrors(result) if lazy else result

    return consume


class VideoClips(Dataset):
    """The `ray.data.Dataset` that `read_clips` returns: a plain Dataset plus
    `sources` (the videos in listing order: row `video_index` names one),
    `skip_summary()` (how many videos `on_error="skip"` left out), a
    `stats()` that adds it with each skipped video, and `skipped()` (which,
    and why). Its consuming methods raise a failing video's `ClipLoadError`
    with framefeed's message first (the Ray task error chained as its
    cause). Transformations return plain Datasets."""

    _framefeed_ledger: Any = None
    _framefeed_sources: tuple[str, ...] = ()

    @classmethod
    def wrap(cls, dataset: Dataset, ledger: Any, sources: list[str]) -> VideoClips:
        dataset.__class__ = cls  # Ray builds Datasets itself; only the class changes
        dataset._framefeed_ledger = ledger  # type: ignore[attr-defined]
        dataset._framefeed_sources = tuple(sources)  # type: ignore[attr-defined]
        return dataset  # type: ignore[return-value]

    @property
    def sources(self) -> tuple[str, ...]:
        """Every video read, in listing order (paths, or URIs as given and expanded)."""
        return self._framefeed_sources

    def skipped(self) -> dict[str, str]:
        """Videos skipped so far (over every execution): name -> "Error: message".
        An entry that named nothing at listing time is named as given."""
        if self._framefeed_ledger is None:
            return {}
        return ray.get(self._framefeed_ledger.summary.remote())[2]

    def skip_summary(self) -> str:
        """One line: how many videos were skipped so far, over every execution,
        e.g. "framefeed read_clips: 1 of 16 videos skipped (on_error='skip'),
        2 skip events over all executions" (a video skipped in two epochs is
        one video, two events). With `on_error="raise"` nothing is skipped."""
        if self._framefeed_ledger is None:
            return f"framefeed read_clips: {len(self.sources)} videos, none skipped (on_error='raise')"
        total, events, errors = ray.get(self._framefeed_ledger.summary.remote())
        return (f"framefeed read_clips: {len(errors)} of {total} videos skipped (on_error='skip'), "
                f"{events} skip events over all executions")

    def stats(self) -> str:
        """Ray's execution statistics, then (with `on_error="skip"`) `skip_summary()`
        and one line per skipped video."""
        base = super().stats()
        if self._framefeed_ledger is None:
            return base
        lines = [self.skip_summary()]
        lines += [f"* skipped {name}: {error}" for name, error in sorted(self.skipped().items())]
        return (base + "\n" if base else "") + "\n".join(lines)


# Dataset methods that execute the dataset here, on the driver: their Ray task
# errors become framefeed's ClipLoadError (lazy: they return an iterable).
_CONSUMERS = {"iter_rows": True, "iter_batches": True, "iter_torch_batches": True, "iter_tf_batches": True,
              "take": False, "take_all": False, "take_batch": False, "show": False, "count": False,
              "materialize": False, "to_pandas": False}
for _name, _lazy in _CONSUMERS.items():
    setattr(VideoClips, _name, _with_driver_errors(getattr(Dataset, _name), _lazy))
