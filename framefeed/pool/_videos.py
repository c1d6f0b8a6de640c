"""Sampler targets: `pool.videos(sources)` passed to any of the four samplers.

`clips_at_random_indices(pool.videos(paths), num_clips=8, ...)` samples clips
from every source in one call and returns one future per source, in order.
Each source gets exactly the clips that the same sampler called on its own
`VideoDecoder` would give: the sampler runs on this (the caller's) thread,
source after source, and draws from torch's global RNG exactly as a loop of
per-decoder calls does (a `RandomCrop` transform's window first, as
`VideoDecoder(source, transforms=...)` draws it, then the clip starts). A source that cannot be opened, or whose sampler call
raises, draws nothing (as the per-decoder call would raise before drawing)
and fails its own future. Meanwhile the demux threads open the next sources
ahead and the sessions decode the clips already drawn.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any

from framefeed.engine.demux.metadata import VideoStreamMetadata
from framefeed.pool._adapter import OpenedVideo, resolve_pipeline
from framefeed.pool._engine import Engine, Job, public_error
from framefeed.pool._request import DecodeRequest
from framefeed.transforms import TransformPipeline


class PooledVideos:
    """Sources for the samplers, decoded by a pool (see the module docstring).

    Made by `DecodePool.videos`; the samplers call `sample_each`.
    """

    def __init__(self, engine: Engine, sources: Iterable[Any], template: DecodeRequest, lookahead: int) -> None:
        self._engine = engine
        self._sources = list(sources)
        self._template = template
        self._lookahead = max(int(lookahead), 1)

    def __len__(self) -> int:
        return len(self._sources)

    def __repr__(self) -> str:
        return f"PooledVideos({len(self._sources)} sources, {self._template.seek_mode})"

    def sample_each(self, sampler: Callable[..., Any], kwargs: dict[str, Any]) -> list[Future]:
        """Run `sampler(video, **kwargs)` for each source in order; one future each."""
        self._engine.check_open()
        opening: deque[tuple[Any, Future]] = deque()
        upcoming = iter(self._sources)
        results: list[Future] = []
        try:
            for _ in self._sources:
                while len(opening) < self._lookahead:
                    source = next(upcoming, _END)
                    if source is _END:
                        break
                    request = dataclasses.replace(self._template, source=source)
                    opening.append((source, self._engine.submit(Job(request, Future(), open_only=True))))
                video_source, opened = opening.popleft()
                try:
                    video = opened.result()
                except Exception as error:
                    results.append(_failed(error))
                    continue
                request = dataclasses.replace(self._template, source=video_source)
                try:
                    # Here, on the caller's thread, where VideoDecoder(...) would draw its crop windows.
                    pipeline = resolve_pipeline(video, request)
                except Exception as error:
                    video.close()
                    results.append(_failed(public_error(error, request, opening=True)))
                    continue
                view = _VideoView(self._engine, video, request, pipeline)
                try:
                    results.append(sampler(view, **kwargs))
                except Exception as error:
                    results.append(_failed(error))
                finally:
                    if not view.submitted:
                        video.close()
        except BaseException:
            for _, pending in opening:  # opened ahead but never sampled: close when they arrive
                pending.add_done_callback(_close_opened)
            raise
        return results


_END = object()


def _close_opened(future: Future) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().close()


def _failed(error: BaseException) -> Future:
    future: Future = Future()
    future.set_exception(error)
    return future


class _VideoView:
    """One opened source as the samplers see a decoder: its length and
    metadata, and a `submit_clips` that sends the sampler's frames to the pool."""

    def __init__(self, engine: Engine, video: OpenedVideo, template: DecodeRequest,
                 pipeline: TransformPipeline) -> None:
        self._engine = engine
        self._video = video
        self._template = template
        self._pipeline = pipeline
        self.submitted = False

    @property
    def metadata(self) -> VideoStreamMetadata:
        return self._video.metadata

    def __len__(self) -> int:
        return self._video.num_frames

    def get_frames_at(self, indices: list[int]) -> Future:
        return self._submit({"indices": indices}, None)

    def get_frames_played_at(self, seconds: list[float]) -> Future:
        return self._submit({"seconds": seconds}, None)

    def submit_clips(self, method: str, values: list[Any], clip_shape: tuple[int, int]) -> Future:
        """Decode the sampler's flat list of frames, reshaped to `clip_shape` clips."""
        kind = {"get_frames_at": "indices", "get_frames_played_at": "seconds"}[method]
        return self._submit({kind: values}, clip_shape)

    def _submit(self, what: dict[str, Any], clip_shape: tuple[int, int] | None) -> Future:
        if self.submitted:
            raise RuntimeError("a pooled video takes one request per sampler call")
        request = dataclasses.replace(self._template, **what)
        future = self._engine.submit(Job(request, Future(), opened=self._video, clip_shape=clip_shape,
                                         pipeline=self._pipeline))
        self.submitted = True  # the pool closes the video from now on
        return future
