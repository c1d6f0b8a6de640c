"""`VideoDecoder`: the public entry point (torchcodec-compatible).

A thin wrapper over the values of `framefeed.engine.opening` (demuxer, timeline,
codec parameters), a backend from the registry (`framefeed.engine.backends.registry`), and
the executor (`framefeed.engine.executor.DecodeSession`): each method turns its
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

from framefeed import _arguments as args
from framefeed import _ops
from framefeed.engine.backends import BackendContext, open_backend, resolve_device
from framefeed.engine.backends.ordering import producer_of, producing
from framefeed.engine.backends.registry import BackendSelection
from framefeed.engine.backends.status import CpuFallbackStatus
from framefeed.engine.demux.custom_frame_mappings import FrameMappings, resolve_seek_mode
from framefeed.engine.demux.demuxer import Demuxer
from framefeed.engine.demux.metadata import VideoStreamMetadata
from framefeed.engine.executor import DecodeSession, OutputBuffer
from framefeed.engine.frame_memory import empty_frames
from framefeed.engine.host_frames import take_frame_tensor
from framefeed.engine.opening import open_demuxed
from framefeed.engine.packets import CodecParameters
from framefeed.engine.plan import Target
from framefeed.engine.source import resolve_source
from framefeed.engine.timeline import ApproximateTimeline, ExactTimeline
from framefeed.errors import DecodingError, VideoOpenError, public_api
from framefeed.frames import Frame, FrameBatch
from framefeed.transforms import resolve_transforms

_DIMENSION_ORDERS = ("NCHW", "NHWC")


class VideoDecoder:
    """Decodes one video stream into RGB tensors (uint8, or float32 in [0, 1]).

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
            so index access is exact; "approximate" reads only the header;
            "custom_frame_mappings" (or leaving "exact") with
            `custom_frame_mappings` uses that table instead of the scan.
        transforms: a sequence of `framefeed.transforms.Resize`, `CenterCrop`,
            `RandomCrop` (or the torchvision v2 classes of those names),
            applied in order to every frame after rotation. `metadata` keeps
            the stream's size; frames have the transformed size.
        output_dtype: `torch.uint8` (values 0-255, the default), `torch.float32`
            (values in [0, 1]; on the CPU swscale's 16-bit RGB divided by 65535,
            as torchcodec 0.17 computes it; on NVDEC the colour kernel writes
            float32 directly, keeping 10- and 12-bit precision) or `"auto"`:
            float32 when the stream's pixel format has more than 8 bits per
            sample (HDR sources), else uint8.
        custom_frame_mappings: the stream's frame table as JSON (str, bytes or
            a file-like object), `{"frames": [{"pts", "duration",
            "key_frame"}, ...]}` as `ffprobe -show_frames -of json` prints it,
            in the stream's time base; exact mode without the scan.

    Raises:
        TypeError: unsupported source kind, text-mode file, wrong argument types.
        ValueError: invalid `dimension_order`, `seek_mode`, `num_ffmpeg_threads`,
            `output_dtype`, `device`, `stream_index`, `transforms` or
            `custom_frame_mappings` (also a table that contradicts the file).
        FileNotFoundError: a path that does not exist.
        VideoOpenError (a ValueError and RuntimeError): data FFmpeg cannot
            open, or no video stream.
        CudaUnavailableError (a RuntimeError): CUDA requested but unusable.
    """

    @public_api(VideoOpenError)
    def __init__(
        self,
        source: str | Path | bytes | Tensor | Any,
        *,
        stream_index: int | None = None,
        dimension_order: Literal["NCHW", "NHWC"] = "NCHW",
        num_ffmpeg_threads: int = 1,
        device: str | torch.device | None = None,
        seek_mode: Literal["exact", "approximate", "custom_frame_mappings"] = "exact",
        transforms: Sequence[Any] | None = None,
        output_dtype: torch.dtype | Literal["auto"] = torch.uint8,
        custom_frame_mappings: str | bytes | Any | None = None,
    ) -> None:
        # Checked in torchcodec's order, so a call with several mistakes reports the same one.
        seek_mode, mappings = resolve_seek_mode(seek_mode, custom_frame_mappings)
        if dimension_order not in _DIMENSION_ORDERS:
            raise ValueError(
                f"Invalid dimension order ({dimension_order}). "
                f"Supported values are {', '.join(_DIMENSION_ORDERS)}."
            )
        num_ffmpeg_threads = args.thread_count(num_ffmpeg_threads)
        requested_dtype = args.output_dtype(output_dtype)
        args.check_device_type(device)
        self._device = resolve_device(device)
        self._dimension_order = dimension_order
        self._seek_mode = seek_mode

        self._demuxer = Demuxer(resolve_source(source), stream_index)
        try:
            self._open(seek_mode, num_ffmpeg_threads, mappings, transforms, requested_dtype)
        except BaseException:
            self._demuxer.close()
            raise
        self._op_id = _ops.register(self)

    def _open(self, seek_mode: str, num_threads: int, mappings: FrameMappings | None, transforms: Any,
              requested_dtype: torch.dtype | str) -> None:
        demuxer = self._demuxer
        opened = open_demuxed(demuxer, seek_mode, num_threads, mappings)
        metadata = opened.metadata
        self._timeline: ExactTimeline | ApproximateTimeline = opened.timeline
        self.metadata: VideoStreamMetadata = metadata
        self.stream_index: int = demuxer.stream.index
        pipeline = resolve_transforms(transforms, int(metadata.height or 0), int(metadata.width or 0))
        selection = self._open_backend(opened.params, BackendContext(
            stream=demuxer.stream, num_threads=num_threads, transforms=pipeline))
        self._backend = selection.backend  # writes transformed frames (fused into NVDEC's kernel)
        self._cpu_fallback: CpuFallbackStatus = selection.status
        self._session = DecodeSession(demuxer, self._backend, self._timeline, facts=self._timeline.facts,
                                      disposable=opened.disposable)
        self._num_frames = int(metadata.num_frames or 0)
        self._begin = float(metadata.begin_stream_seconds or 0.0)
        self._end = float(metadata.end_stream_seconds or 0.0)
        self._height, self._width = pipeline.output_size  # the frames returned: transformed
        self._output_dtype = args.resolve_output_dtype(requested_dtype, opened.params.pixel_format)

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

    @public_api(DecodingError)
    def __getitem__(self, key: numbers.Integral | slice) -> Tensor:
        """`decoder[i]`: frame i's data; `decoder[a:b:c]`: stacked frames (Python
        slice semantics, empty slices give an empty batch).

        Raises:
            IndexError: an int index outside `[-len, len)`.
            TypeError: any other key type.
        """
        if torch.compiler.is_compiling():
            return _ops.getitem(self, key)
        if isinstance(key, numbers.Integral):
            position = args.check_frame_index(int(key), self._num_frames)
            return self._decode_one(self._timeline.targets_for_indices([position])[0])[0]
        if isinstance(key, slice):
            return self._frames_at_positions(list(range(*key.indices(self._num_frames)))).data
        raise TypeError(f"Unsupported key type: {type(key)}. Supported types are int and slice.")

    @public_api(DecodingError)
    def __iter__(self) -> Iterator[Tensor]:
        for index in range(self._num_frames):
            yield self[index]

    def _get_key_frame_indices(self) -> Tensor:
        """Indices of the frames decoded from keyframe packets, an int64 tensor in
        display order (torchcodec's private helper of the same name, which its
        users and tests call). Frames of discarded packets are not frames, so a
        discarded keyframe is not listed.

        Raises:
            RuntimeError: approximate mode (it has no frame index), with torchcodec's phrase.
        """
        if not self._timeline.exact:
            raise RuntimeError(
                "Must scan all streams to update metadata before calling getKeyFrameIndices: the frame index "
                "exists in seek_mode='exact' only"
            )
        return torch.from_numpy(np.flatnonzero(self._timeline.index.is_keyframe).astype(np.int64))

    # -- index-based access -------------------------------------------------------

    @public_api(DecodingError)
    def get_frame_at(self, index: int) -> Frame:
        """Frame at `index` (negative counts from the end); an int, or a
        one-element tensor holding a whole number.

        Raises:
            IndexError: `index` outside `[-len, len)`.
            TypeError: `index` is not an integer.
        """
        if torch.compiler.is_compiling():
            return _ops.frame_at(self, index)
        position = args.frame_index(index, self._num_frames)
        return Frame(*self._decode_one(self._timeline.targets_for_indices([position])[0]))

    @public_api(DecodingError)
    def get_frames_at(self, indices: Sequence[int] | Tensor) -> FrameBatch:
        """Frames at `indices`, in the order given; duplicates allowed.
        `indices`: a list of ints, or a tensor (or numpy array) of any integer
        or floating dtype holding whole numbers, read flattened.

        Raises:
            IndexError: an index outside `[-len, len)`.
            TypeError: indices that are not whole numbers.
        """
        if torch.compiler.is_compiling():
            return _ops.frames_at(self, indices)
        positions = args.frame_indices(indices, self._num_frames)
        return self._frames_at_positions(positions)

    @public_api(DecodingError)
    def get_frames_in_range(self, start: int | None, stop: int | None = None, step: int | None = 1) -> FrameBatch:
        """Frames `start, start+step, ...` before `stop` (half-open, Python
        slice semantics: None means the natural end, out-of-range bounds are
        clipped, never an error).

        Raises:
            ValueError: `step` is 0.
            TypeError: bounds that are not integers or None.
        """
        if torch.compiler.is_compiling():
            return _ops.frames_in_range(self, start, stop, step)
        return self._frames_at_positions(list(args.index_range(start, stop, step, self._num_frames)))

    @public_api(DecodingError)
    def get_all_frames(self, fps: float | None = None) -> FrameBatch:
        """Every frame of the stream; with `fps`, the stream resampled at that
        rate (as `get_frames_played_in_range(begin, end, fps)`)."""
        if torch.compiler.is_compiling():
            return _ops.all_frames(self, fps)
        if fps is None and self._timeline.exact:
            return self._frames_at_positions(list(range(self._num_frames)))
        return self.get_frames_played_in_range(self._begin, self._end, fps=fps)

    # -- time-based access ---------------------------------------------------------

    @public_api(DecodingError)
    def get_frame_played_at(self, seconds: float) -> Frame:
        """The frame displayed at `seconds`: `pts <= seconds < next pts`.

        Raises:
            IndexError: `seconds` outside `[begin_stream_seconds, end_stream_seconds)` (or NaN).
        """
        if torch.compiler.is_compiling():
            return _ops.frame_played_at(self, seconds)
        when = args.check_played_time(args.seconds_scalar(seconds, "seconds"), self._begin, self._end, batch=False)
        return Frame(*self._decode_one(self._timeline.targets_for_times([when])[0]))

    @public_api(DecodingError)
    def get_frames_played_at(self, seconds: Sequence[float] | Tensor) -> FrameBatch:
        """Frames displayed at each of `seconds` (a list, or a tensor of any
        numeric dtype read flattened), in the order given.

        Raises:
            FrameTimeOutOfRangeError (IndexError and RuntimeError): a time
                outside `[begin_stream_seconds, end_stream_seconds)`.
            TypeError and ValueError: values that are not numbers.
        """
        if torch.compiler.is_compiling():
            return _ops.frames_played_at(self, seconds)
        times = [args.check_played_time(t, self._begin, self._end, batch=True) for t in args.seconds_list(seconds)]
        return self._batch(self._decode(self._timeline.targets_for_times(times), len(times)))

    @public_api(DecodingError)
    def get_frames_played_in_range(
        self, start_seconds: float, stop_seconds: float, fps: float | None = None
    ) -> FrameBatch:
        """Every frame whose display interval `[pts_i, pts_{i+1})` intersects
        `[start_seconds, stop_seconds)`. With `fps`, the range resampled at
        that rate, as torchcodec does: `round((stop - start) * fps)` frames,
        the k-th being the frame displayed at `start + k / fps`, reported with
        that time as pts and `1 / fps` as duration.

        Raises:
            ValueError: `start_seconds > stop_seconds`, `start_seconds` outside
                `[begin, end)` or `stop_seconds > end` (unless start == stop), bad `fps`.
        """
        if torch.compiler.is_compiling():
            return _ops.frames_played_in_range(self, start_seconds, stop_seconds, fps)
        start = args.seconds_scalar(start_seconds, "start_seconds")
        stop = args.seconds_scalar(stop_seconds, "stop_seconds")
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
            rate = args.seconds_scalar(fps, "fps")
            if not 0 < rate < math.inf:
                raise args.ArgumentValueError(f"Invalid fps: fps must be positive, got {fps} (a finite rate above 0)")
            period = 1 / rate
            times = [start + k * period for k in range(round((stop - start) * rate))]
            batch = self._batch(self._decode(self._timeline.targets_for_times(times), len(times)))
            batch.pts_seconds.copy_(torch.tensor(times, dtype=torch.float64))
            batch.duration_seconds.fill_(period)
            return batch
        if self._timeline.exact:
            index = self._timeline.index
            first = max(index.index_played_at(start), 0)
            last = int(np.searchsorted(index.pts_seconds, stop, side="left"))  # frames with pts < stop
            return self._frames_at_positions(list(range(first, max(last, first + 1))))
        # Approximate mode: no index to count the frames, so decode to find them.
        with producing(producer_of(self._backend)) as production:
            out = self._session.decode_time_range(start, stop, self._allocate)
            production.hand_over(out.frames)
        return self._batch(out)

    # -- internals -------------------------------------------------------------------

    def _allocate(self, count: int) -> OutputBuffer:
        channels_first = self._backend.channels_first_output and self._dimension_order == "NCHW"
        return OutputBuffer.allocate(count, self._height, self._width, self._backend.output_device, channels_first,
                                     dtype=self._output_dtype)

    def _decode(self, targets: list[Target], count: int) -> OutputBuffer:
        """Decode `targets` into a new buffer of `count` slots (one batched call).
        On NVDEC the buffer is allocated and written on the decoder's stream and
        handed to the caller's (`gpu_decode.streams.producing`)."""
        with producing(producer_of(self._backend)) as production:
            out = self._allocate(count)
            if targets:
                self._session.decode(targets, out)
            production.hand_over(out.frames)
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
        device, dtype = self._backend.output_device, self._output_dtype
        producer = producer_of(self._backend)
        if producer is not None:  # NVDEC: on the decoder's stream, handed to the caller's
            with producing(producer) as production:
                if self._dimension_order == "NCHW":
                    data = torch.empty((3, self._height, self._width), dtype=dtype, device=device)
                    pts_seconds, duration = self._session.decode_one(target, data.permute(1, 2, 0))
                else:
                    data = torch.empty((self._height, self._width, 3), dtype=dtype, device=device)
                    pts_seconds, duration = self._session.decode_one(target, data)
                production.hand_over(data)
            return data, pts_seconds, duration
        if self._backend.channels_first_output and self._dimension_order == "NCHW":
            data = empty_frames((3, self._height, self._width), device, dtype)
            pts_seconds, duration = self._session.decode_one(target, data.permute(1, 2, 0))
        else:
            shape = (self._height, self._width, 3)
            if device.type == "cpu":
                # Reused frame memory: see framefeed.engine.host_frames for why.
                hwc = take_frame_tensor(shape, dtype)
            else:
                hwc = empty_frames(shape, device, dtype)
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


