"""`VideoDecoder`: the public entry point (torchcodec-compatible).

A thin wrapper over the values of `framefeed.opening` (demuxer, timeline,
codec parameters), a backend from the registry (`framefeed.backends`), and
the executor (`framefeed.session.DecodeSession`): each method turns its
request into targets, and the session plans and executes them into output
tensors this class sizes and allocates.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from framefeed._validation import require_int, require_seconds
from framefeed.backend_selection import BackendContext, open_backend, resolve_device
from framefeed.backends import BackendSelection
from framefeed.decoders._cpu_fallback_status import CpuFallbackStatus
from framefeed.demux.demuxer import Demuxer
from framefeed.demux.metadata import VideoStreamMetadata
from framefeed.errors import FrameTimeOutOfRangeError
from framefeed.frames import Frame, FrameBatch
from framefeed.opening import open_demuxed
from framefeed.packets import CodecParameters
from framefeed.plan import Target
from framefeed.session import DecodeSession, OutputBuffer
from framefeed.source import resolve_source
from framefeed.timeline import ApproximateTimeline, ExactTimeline

_SEEK_MODES = ("exact", "approximate")
_DIMENSION_ORDERS = ("NCHW", "NHWC")


class VideoDecoder:
    """Decodes one video stream into uint8 RGB tensors.

    Args:
        source: a path or URL (`str`), `pathlib.Path`, `bytes`, a contiguous
            uint8 CPU tensor of file bytes, or a binary file-like object with
            `read` and `seek`.
        stream_index: absolute index of the video stream; None picks the best one.
        dimension_order: "NCHW" (frames `(C, H, W)`) or "NHWC" (`(H, W, C)`).
        num_ffmpeg_threads: CPU decoding threads; 0 lets FFmpeg choose. No
            effect on NVDEC.
        device: None (torch's default device), "cpu", "cuda", "cuda:N" or a
            `torch.device`.
        seek_mode: "exact" indexes every packet at construction (no decoding)
            so index access is exact; "approximate" reads only the header.

    Raises:
        TypeError: unsupported source kind, text-mode file, wrong argument types.
        ValueError: invalid `dimension_order`, `seek_mode`, `num_ffmpeg_threads`,
            `device` or `stream_index`.
        FileNotFoundError: a path that does not exist.
        VideoOpenError (a ValueError and RuntimeError): data FFmpeg cannot
            open, or no video stream.
        CudaUnavailableError (a RuntimeError): CUDA requested but unusable.
    """

    def __init__(
        self,
        source: str | Path | bytes | Tensor | Any,
        *,
        stream_index: int | None = None,
        dimension_order: Literal["NCHW", "NHWC"] = "NCHW",
        num_ffmpeg_threads: int = 1,
        device: str | torch.device | None = None,
        seek_mode: Literal["exact", "approximate"] = "exact",
    ) -> None:
        if seek_mode not in _SEEK_MODES:
            raise ValueError(f"Invalid seek mode ({seek_mode!r}). Supported values are {', '.join(_SEEK_MODES)}.")
        if dimension_order not in _DIMENSION_ORDERS:
            raise ValueError(
                f"Invalid dimension order ({dimension_order!r}). "
                f"Supported values are {', '.join(_DIMENSION_ORDERS)}."
            )
        num_ffmpeg_threads = require_int("num_ffmpeg_threads", num_ffmpeg_threads)
        if num_ffmpeg_threads < 0:
            raise ValueError(f"Invalid num_ffmpeg_threads ({num_ffmpeg_threads}): use 0 (FFmpeg chooses) or more")
        self._device = resolve_device(device)
        self._dimension_order = dimension_order
        self._seek_mode = seek_mode

        self._demuxer = Demuxer(resolve_source(source), stream_index)
        try:
            self._open(seek_mode, num_ffmpeg_threads)
        except BaseException:
            self._demuxer.close()
            raise

    def _open(self, seek_mode: str, num_threads: int) -> None:
        demuxer = self._demuxer
        opened = open_demuxed(demuxer, seek_mode, num_threads)
        metadata = opened.metadata
        self._timeline: ExactTimeline | ApproximateTimeline = opened.timeline
        self.metadata: VideoStreamMetadata = metadata
        self.stream_index: int = demuxer.stream.index
        selection = self._open_backend(opened.params, BackendContext(stream=demuxer.stream, num_threads=num_threads))
        self._backend = selection.backend
        self._cpu_fallback: CpuFallbackStatus = selection.status
        self._session = DecodeSession(demuxer, self._backend, self._timeline, facts=self._timeline.facts,
                                      disposable=opened.disposable)
        self._num_frames = int(metadata.num_frames or 0)
        self._begin = float(metadata.begin_stream_seconds or 0.0)
        self._end = float(metadata.end_stream_seconds or 0.0)
        self._height = int(metadata.height or 0)
        self._width = int(metadata.width or 0)

    def _open_backend(self, params: CodecParameters, context: BackendContext) -> BackendSelection:
        """The backend for this decoder's device, from the registry. (A seam:
        the tests' emulated-NVDEC decoder overrides it to pass its own owner.)"""
        return open_backend(params, self._device, context)

    # -- lifetime -------------------------------------------------------------

    def close(self) -> None:
        """Release the file and the decoder (an NVDEC decoder goes back to its
        cache). Also happens when the decoder is garbage-collected; later
        decoding calls raise RuntimeError."""
        self._session.close()
        self._backend.close()
        self._demuxer.close()

    def __enter__(self) -> VideoDecoder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- attributes -----------------------------------------------------------

    @property
    def cpu_fallback(self) -> CpuFallbackStatus:
        """Whether this decoder decodes on the CPU although a CUDA device was asked for."""
        return self._cpu_fallback

    def __len__(self) -> int:
        return self._num_frames

    def __getitem__(self, key: numbers.Integral | slice) -> Tensor:
        """`decoder[i]`: frame i's data; `decoder[a:b:c]`: stacked frames (Python
        slice semantics, empty slices give an empty batch).

        Raises:
            IndexError: an int index outside `[-len, len)`.
            TypeError: any other key type.
        """
        if isinstance(key, numbers.Integral) and not isinstance(key, bool):
            return self._decode_one(self._timeline.targets_for_indices([self._check_index(key)])[0])[0]
        if isinstance(key, slice):
            return self.get_frames_in_range(*key.indices(self._num_frames)).data
        raise TypeError(f"Unsupported key type: {type(key).__name__}. Supported types are int and slice.")

    def __iter__(self) -> Iterator[Tensor]:
        for index in range(self._num_frames):
            yield self[index]

    # -- index-based access -------------------------------------------------------

    def get_frame_at(self, index: int) -> Frame:
        """Frame at `index` (negative counts from the end).

        Raises:
            IndexError: `index` outside `[-len, len)`.
        """
        position = self._check_index(index)
        return Frame(*self._decode_one(self._timeline.targets_for_indices([position])[0]))

    def get_frames_at(self, indices: Sequence[int] | Tensor) -> FrameBatch:
        """Frames at `indices`, in the order given; duplicates allowed.

        Raises:
            IndexError: an index outside `[-len, len)`.
            TypeError: indices that are not integers.
        """
        positions = [self._check_index(i) for i in _as_int_list(indices, "indices")]
        return self._batch(self._decode(self._timeline.targets_for_indices(positions), len(positions)))

    def get_frames_in_range(self, start: int, stop: int, step: int = 1) -> FrameBatch:
        """Frames `start, start+step, ...` before `stop` (half-open, Python
        slice clamping, so out-of-range bounds are clipped, never an error).

        Raises:
            ValueError: `step` is 0.
            TypeError: non-integer bounds.
        """
        bounds = slice(require_int("start", start), require_int("stop", stop), require_int("step", step))
        if bounds.step == 0:
            raise ValueError("Invalid step 0: step must be a non-zero int")
        return self._frames_at_positions(list(range(*bounds.indices(self._num_frames))))

    def get_all_frames(self, fps: float | None = None) -> FrameBatch:
        """Every frame of the stream (at `fps` if given: the frames displayed at
        `begin + k / fps`)."""
        if fps is None and self._timeline.exact:
            return self._frames_at_positions(list(range(self._num_frames)))
        return self.get_frames_played_in_range(self._begin, self._end, fps=fps)

    # -- time-based access ---------------------------------------------------------

    def get_frame_played_at(self, seconds: float) -> Frame:
        """The frame displayed at `seconds`: `pts <= seconds < next pts`.

        Raises:
            IndexError: `seconds` outside `[begin_stream_seconds, end_stream_seconds)`.
        """
        when = self._check_played_time(_as_seconds(seconds, "seconds"), IndexError)
        return Frame(*self._decode_one(self._timeline.targets_for_times([when])[0]))

    def get_frames_played_at(self, seconds: Sequence[float] | Tensor) -> FrameBatch:
        """Frames displayed at each of `seconds`, in the order given.

        Raises:
            FrameTimeOutOfRangeError (IndexError and RuntimeError): a time
                outside `[begin_stream_seconds, end_stream_seconds)`.
        """
        times = [self._check_played_time(t, FrameTimeOutOfRangeError) for t in _as_float_list(seconds, "seconds")]
        return self._batch(self._decode(self._timeline.targets_for_times(times), len(times)))

    def get_frames_played_in_range(
        self, start_seconds: float, stop_seconds: float, fps: float | None = None
    ) -> FrameBatch:
        """Every frame whose display interval `[pts_i, pts_{i+1})` intersects
        `[start_seconds, stop_seconds)`; with `fps`, the frames displayed at
        `start_seconds + k / fps` before `stop_seconds` instead.

        Raises:
            ValueError: `start_seconds > stop_seconds`, `start_seconds` outside
                `[begin, end)` or `stop_seconds > end` (unless start == stop), bad `fps`.
        """
        start = _as_seconds(start_seconds, "start_seconds")
        stop = _as_seconds(stop_seconds, "stop_seconds")
        if not start <= stop:
            raise ValueError(
                f"Invalid start seconds: {start_seconds}. It must be less than or equal to stop seconds ({stop_seconds})."
            )
        if start == stop:
            return self._batch(self._allocate(0))
        if not self._begin <= start < self._end:
            raise ValueError(
                f"Invalid start seconds: {start_seconds}. It must be greater than or equal to "
                f"{self._begin} and less than {self._end}."
            )
        if not stop <= self._end:
            raise ValueError(f"Invalid stop seconds: {stop_seconds}. It must be less than or equal to {self._end}.")
        if fps is not None:
            rate = _as_seconds(fps, "fps")
            if not rate > 0:
                raise ValueError(f"Invalid fps {fps}: it must be positive")
            count = max(math.ceil((stop - start) * rate - 1e-9), 0)
            times = [t for t in (start + k / rate for k in range(count)) if t < stop]
            return self._batch(self._decode(self._timeline.targets_for_times(times), len(times)))
        if self._timeline.exact:
            index = self._timeline.index
            first = max(index.index_played_at(start), 0)
            last = int(np.searchsorted(index.pts_seconds, stop, side="left"))  # frames with pts < stop
            return self._frames_at_positions(list(range(first, max(last, first + 1))))
        # Approximate mode: no index to count the frames, so decode to find them.
        return self._batch(self._session.decode_time_range(start, stop, self._allocate))

    # -- internals -------------------------------------------------------------------

    def _check_index(self, index: Any) -> int:
        if isinstance(index, bool) or not isinstance(index, numbers.Integral):
            if isinstance(index, Tensor) and index.numel() == 1 and not index.is_floating_point():
                index = int(index.item())
            else:
                raise TypeError(f"Frame indices must be ints, got {index!r}")
        position = int(index)
        if position < 0:
            position += self._num_frames
        if not 0 <= position < self._num_frames:
            raise IndexError(
                f"Invalid frame index={index}: it must be in [-{self._num_frames}, {self._num_frames}) "
                f"(the stream has {self._num_frames} frames)"
            )
        return position

    def _allocate(self, count: int) -> OutputBuffer:
        channels_first = self._backend.channels_first_output and self._dimension_order == "NCHW"
        return OutputBuffer.allocate(count, self._height, self._width, self._backend.output_device, channels_first)

    def _check_played_time(self, when: float, error: type[Exception]) -> float:
        if not self._begin <= when < self._end:
            raise error(
                f"Invalid pts in seconds: {when}. It must be greater than or equal to "
                f"{self._begin} and less than {self._end}."
            )
        return when

    def _decode(self, targets: list[Target], count: int) -> OutputBuffer:
        """Decode `targets` into a new buffer of `count` slots (one batched call)."""
        out = self._allocate(count)
        if targets:
            self._session.decode(targets, out)
        return out

    def _frames_at_positions(self, positions: list[int]) -> FrameBatch:
        return self._batch(self._decode(self._timeline.targets_for_indices(positions), len(positions)))

    def _pixels(self, out: OutputBuffer) -> Tensor:
        frames = out.as_order(self._dimension_order)
        if frames.device != self._device:
            frames = frames.to(self._device, non_blocking=True)
        return frames

    def _decode_one(self, target: Target) -> tuple[Tensor, float, float]:
        """One frame straight into its own tensor: the path of `decoder[i]`."""
        device = self._backend.output_device
        if self._backend.channels_first_output and self._dimension_order == "NCHW":
            data = torch.empty((3, self._height, self._width), dtype=torch.uint8, device=device)
            pts_seconds, duration = self._session.decode_one(target, data.permute(1, 2, 0))
        else:
            hwc = torch.empty((self._height, self._width, 3), dtype=torch.uint8, device=device)
            pts_seconds, duration = self._session.decode_one(target, hwc)
            data = hwc.permute(2, 0, 1) if self._dimension_order == "NCHW" else hwc
        if data.device != self._device:
            data = data.to(self._device, non_blocking=True)
        return data, pts_seconds, duration

    def _batch(self, out: OutputBuffer) -> FrameBatch:
        return FrameBatch(self._pixels(out), torch.from_numpy(out.pts_seconds), torch.from_numpy(out.duration_seconds))

    def __repr__(self) -> str:
        return (
            f"VideoDecoder({self._demuxer.source.description}, stream {self.stream_index}, "
            f"{self._num_frames} frames, {self._seek_mode}, device={self._device})"
        )


def _as_int_list(values: Any, name: str) -> list[int]:
    if isinstance(values, Tensor):
        if values.is_floating_point() or values.is_complex() or values.dtype == torch.bool:
            raise TypeError(f"{name} must hold integers, got a tensor of {values.dtype}")
        return [int(v) for v in values.reshape(-1).tolist()]
    if isinstance(values, np.ndarray):
        if not np.issubdtype(values.dtype, np.integer):
            raise TypeError(f"{name} must hold integers, got an array of {values.dtype}")
        return [int(v) for v in values.reshape(-1)]
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a list of ints or an integer tensor, got {type(values).__name__}")
    return [require_int(name, v) for v in values]


def _as_float_list(values: Any, name: str) -> list[float]:
    if isinstance(values, Tensor):
        return [float(v) for v in values.reshape(-1).tolist()]
    if isinstance(values, np.ndarray):
        return [float(v) for v in values.reshape(-1)]
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a list of floats or a tensor, got {type(values).__name__}")
    return [_as_seconds(v, name) for v in values]


def _as_seconds(value: Any, name: str) -> float:
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    return require_seconds(name, value)
