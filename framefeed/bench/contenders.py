"""The decoders a benchmark compares: framefeed and its peers.

Each contender implements some workload methods (named as in
`workloads.WORKLOADS`); each method takes `(path, params)`, produces RGB
frames as the library would hand them to a training loop, and returns how
many. Peers are imported lazily: a missing one is reported, not fatal.

The benchmark runs every contender in a process of its own (`isolation`),
re-created there from its class, device and thread count; `plugin_contenders`
adds contenders from other modules (how the tests add peers that crash).
"""

from __future__ import annotations

import importlib
from fractions import Fraction
from typing import Any

import torch


class Contender:
    """Base: a name, a device, and the workload methods it implements.

    A workload method may also fill `counts` with counters of its last run
    (say `{"decoded": 260, "returned": 240}`); the benchmark reports them with
    the run.
    """

    library = "?"

    def __init__(self, device: str = "cpu", threads: int = 1) -> None:
        self.device = device
        self.threads = threads  # CPU decoding threads (0: the library chooses)
        self.counts: dict[str, int] = {}

    @property
    def name(self) -> str:
        return f"{self.library} ({self.device})"

    def unavailable_reason(self) -> str | None:
        """None when it can run here, else why not (shown as a note)."""
        return None

    def supports(self, workload: str) -> bool:
        return callable(getattr(self, workload, None))

    def run(self, workload: str, path: str, params: dict[str, Any]) -> int:
        produced = getattr(self, workload)(path, params)
        if self.device.startswith("cuda"):
            torch.cuda.synchronize(self.device)
        return produced


def _import_error(module: str) -> str | None:
    try:
        importlib.import_module(module)
    except Exception as error:  # ImportError, or a broken install raising anything
        return f"{module} not importable ({type(error).__name__}: {error})".splitlines()[0]
    return None


def _cuda_error(device: str) -> str | None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        return "no CUDA GPU visible to torch"
    return None


class _TorchcodecLike(Contender):
    """framefeed and torchcodec share the API, so one implementation serves both."""

    module = ""

    def _decoders(self) -> Any:
        return importlib.import_module(f"{self.module}.decoders")

    def _samplers(self) -> Any:
        return importlib.import_module(f"{self.module}.samplers")

    def _open(self, path: str, seek_mode: str = "exact") -> Any:
        return self._decoders().VideoDecoder(path, seek_mode=seek_mode, device=self.device,
                                             num_ffmpeg_threads=self.threads)

    def create_exact(self, path: str, params: dict) -> int:
        len(self._open(path, "exact"))
        return 0

    def create_approximate(self, path: str, params: dict) -> int:
        len(self._open(path, "approximate"))
        return 0

    def sequential(self, path: str, params: dict) -> int:
        count = 0
        for _frame in self._open(path):
            count += 1
        return count

    def random_access(self, path: str, params: dict) -> int:
        return len(self._open(path).get_frames_at(params["indices"]).data)

    def _sample(self, sampler: str, decoder: Any, params: dict) -> int:
        torch.manual_seed(params["seed"])
        kwargs = {k: v for k, v in params.items() if k not in ("seed", "seek_mode")}
        batch = getattr(self._samplers(), sampler)(decoder, **kwargs)
        return batch.data.shape[0] * batch.data.shape[1]

    def clips_at_random_indices(self, path: str, params: dict) -> int:
        return self._sample("clips_at_random_indices", self._open(path), params)

    def clips_at_regular_indices(self, path: str, params: dict) -> int:
        return self._sample("clips_at_regular_indices", self._open(path), params)

    def clips_at_random_timestamps(self, path: str, params: dict) -> int:
        return self._sample("clips_at_random_timestamps", self._open(path), params)

    def clips_at_regular_timestamps(self, path: str, params: dict) -> int:
        return self._sample("clips_at_regular_timestamps", self._open(path), params)

    def tutorial_exact(self, path: str, params: dict) -> int:
        return self._sample("clips_at_random_indices", self._open(path, "exact"), params)

    def tutorial_approximate(self, path: str, params: dict) -> int:
        return self._sample("clips_at_random_indices", self._open(path, "approximate"), params)


class Framefeed(_TorchcodecLike):
    library = "framefeed"
    module = "framefeed"

    def unavailable_reason(self) -> str | None:
        return _cuda_error(self.device)

    def supports(self, workload: str) -> bool:
        if workload.startswith(("clips_", "tutorial_")) and not hasattr(self._samplers(), "clips_at_random_indices"):
            return False
        return super().supports(workload)


class Torchcodec(_TorchcodecLike):
    library = "torchcodec"
    module = "torchcodec"

    def unavailable_reason(self) -> str | None:
        return _import_error("torchcodec.decoders") or _cuda_error(self.device)


class PyAV(Contender):
    """Plain PyAV, the way a user without a decoding library writes it: decode
    with FFmpeg, convert each frame to RGB24 with swscale, wrap in a tensor.
    Index access assumes a constant frame rate (PyAV has no frame index)."""

    library = "pyav"

    def unavailable_reason(self) -> str | None:
        return _import_error("av")

    @staticmethod
    def _rgb(frame: Any) -> torch.Tensor:
        return torch.from_numpy(frame.to_ndarray(format="rgb24", interpolation="BICUBIC"))

    def create_exact(self, path: str, params: dict) -> int:
        # The closest PyAV equivalent of an exact index: read every packet's timestamps.
        import av

        with av.open(path) as container:
            stream = container.streams.video[0]
            sorted(p.pts for p in container.demux(stream) if p.pts is not None)
        return 0

    def create_approximate(self, path: str, params: dict) -> int:
        import av

        with av.open(path) as container:
            container.streams.video[0].frames  # noqa: B018 - the header read is the work
        return 0

    def sequential(self, path: str, params: dict) -> int:
        import av

        count = 0
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_count = self.threads
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                self._rgb(frame)
                count += 1
        return count

    def _frames_at(self, path: str, indices: list[int]) -> int:
        """Frames at `indices` the way a careful PyAV user writes it: seek to the
        keyframe before a wanted frame, decode forward, and keep decoding (no
        new seek) while the next wanted frame is less than a second ahead."""
        import av

        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_count = self.threads
            stream.thread_type = "AUTO"
            rate = Fraction(stream.average_rate or stream.base_rate)
            start = stream.start_time or 0
            ticks_per_frame = 1 / (rate * stream.time_base)
            wanted = sorted({start + int(i * ticks_per_frame) for i in indices})
            one_second = int(1 / stream.time_base)
            produced = 0
            frames = None
            position = None
            for target in wanted:
                if position is None or target <= position or target - position > one_second:
                    container.seek(target, stream=stream, backward=True)
                    frames = container.decode(stream)
                for frame in frames:
                    position = frame.pts
                    if frame.pts is not None and frame.pts >= target:
                        self._rgb(frame)
                        produced += 1
                        break
            return produced

    def random_access(self, path: str, params: dict) -> int:
        return self._frames_at(path, params["indices"])

    def tutorial_exact(self, path: str, params: dict) -> int:
        return self._tutorial(path, params)

    def tutorial_approximate(self, path: str, params: dict) -> int:
        return self._tutorial(path, params)

    def _tutorial(self, path: str, params: dict) -> int:
        """The same clip starts as clips_at_random_indices draws, seek and decode."""
        import av

        with av.open(path) as container:
            stream = container.streams.video[0]
            count = stream.frames
        span = params["num_frames_per_clip"]
        torch.manual_seed(params["seed"])
        starts = torch.randint(0, max(count - span + 1, 1), (params["num_clips"],)).tolist()
        wanted = [s + k for s in starts for k in range(span)]
        self._frames_at(path, wanted)
        return len(wanted)


class Decord(Contender):
    library = "decord"

    def unavailable_reason(self) -> str | None:
        return _import_error("decord") or ("decord has no CUDA build here" if self.device != "cpu" else None)

    def _reader(self, path: str) -> Any:
        import decord

        return decord.VideoReader(path, ctx=decord.cpu(0), num_threads=self.threads)

    def create_approximate(self, path: str, params: dict) -> int:
        len(self._reader(path))
        return 0

    def sequential(self, path: str, params: dict) -> int:
        reader = self._reader(path)
        for i in range(len(reader)):
            torch.from_numpy(reader[i].asnumpy())
        return len(reader)

    def random_access(self, path: str, params: dict) -> int:
        return len(torch.from_numpy(self._reader(path).get_batch(params["indices"]).asnumpy()))


class PyNvSimpleDecoder(Contender):
    """PyNvVideoCodec's own high-level decoder (NV12 output, CUDA memory).

    Its frames are DLPack views of memory the decoder owns: each is copied out
    (what a user must do before the next batch overwrites it) and every frame
    object is dropped before the decoder is, or PyNvVideoCodec aborts the
    process with CUDA_ERROR_CONTEXT_IS_DESTROYED. Requests never go past the
    decoder's own frame count (it logs "INVALID INDEX" for each one that does).
    """

    library = "pynvvideocodec"
    batch = 32

    def __init__(self, device: str = "cuda", threads: int = 1) -> None:
        super().__init__(device, threads)

    def unavailable_reason(self) -> str | None:
        return _cuda_error(self.device) or _import_error("PyNvVideoCodec")

    def _decoder(self, path: str) -> Any:
        import PyNvVideoCodec as nvc

        gpu = torch.device(self.device).index or 0
        return nvc.SimpleDecoder(path, gpu_id=gpu, use_device_memory=True)

    @staticmethod
    def _consume(frames: list[Any]) -> int:
        """Copy every picture into memory torch owns, then release the frame objects."""
        count = len(frames)
        for frame in frames:
            torch.from_dlpack(frame).clone()
        frames.clear()
        return count

    def create_approximate(self, path: str, params: dict) -> int:
        decoder = self._decoder(path)
        len(decoder)
        del decoder
        return 0

    def sequential(self, path: str, params: dict) -> int:
        decoder = self._decoder(path)
        total, count = len(decoder), 0
        while count < total:  # sequential batches, never past the decoder's frame count
            frames = decoder.get_batch_frames(min(self.batch, total - count))
            if not frames:
                break
            count += self._consume(frames)
        torch.cuda.synchronize(self.device)  # copies done before the decoder goes
        del decoder
        return count

    def random_access(self, path: str, params: dict) -> int:
        decoder = self._decoder(path)
        total = len(decoder)
        indices = [i for i in params["indices"] if 0 <= i < total]
        produced = self._consume(list(decoder.get_batch_frames_by_index(indices))) if indices else 0
        torch.cuda.synchronize(self.device)
        del decoder
        return produced


BUILTIN_CONTENDERS: tuple[type[Contender], ...] = (Framefeed, Torchcodec, PyAV, Decord, PyNvSimpleDecoder)

# Extra contenders: modules named in this variable (comma-separated) or
# registered under this entry-point group, each with a function
# `bench_contenders(devices: list[str], threads: int) -> list[Contender]`.
PLUGIN_ENV = "FRAMEFEED_BENCH_CONTENDERS"
PLUGIN_ENTRY_POINTS = "framefeed.bench_contenders"


def all_contenders(devices: list[str], threads: int = 1) -> list[Contender]:
    """Every contender for the given devices, available or not: the built-in
    ones, then those of plugins (see `plugin_contenders`)."""
    found: list[Contender] = []
    for device in devices:
        found += [Framefeed(device, threads), Torchcodec(device, threads)]
        if device == "cpu":
            found += [PyAV("cpu", threads), Decord("cpu", threads)]
        else:
            found.append(PyNvSimpleDecoder(device, threads))
    return found + plugin_contenders(devices, threads)


def plugin_contenders(devices: list[str], threads: int = 1) -> list[Contender]:
    """Contenders from plugins: the modules named in `$FRAMEFEED_BENCH_CONTENDERS`
    (comma-separated, importable from the PYTHONPATH) and the entry points of
    group `framefeed.bench_contenders`. Each provides
    `bench_contenders(devices, threads) -> list[Contender]`.

    Contract: importing the module is cheap and safe (the library a contender
    measures is imported inside its methods); each contender is an instance of
    a module-level `Contender` subclass constructible as `cls(device, threads)`,
    because the benchmark re-creates it in a process of its own.

    Raises:
        ValueError: a named module cannot be imported or has no `bench_contenders`.
    """
    import os
    from importlib import metadata

    factories = []
    for name in filter(None, (part.strip() for part in os.environ.get(PLUGIN_ENV, "").split(","))):
        try:
            module = importlib.import_module(name)
        except Exception as error:
            raise ValueError(f"{PLUGIN_ENV} names {name!r}, which cannot be imported "
                             f"({type(error).__name__}: {error})") from None
        factory = getattr(module, "bench_contenders", None)
        if not callable(factory):
            raise ValueError(f"{PLUGIN_ENV} names {name!r}, which has no bench_contenders(devices, threads)")
        factories.append(factory)
    factories += [entry.load() for entry in metadata.entry_points(group=PLUGIN_ENTRY_POINTS)]
    found: list[Contender] = []
    for factory in factories:
        found += list(factory(list(devices), threads))
    return found
