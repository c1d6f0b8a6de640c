"""Sampler targets through the service: `client.videos(paths)` passed to a sampler.

Like `DecodePool.videos`: the sampler runs on the caller's thread, source
after source, drawing from this process's torch RNG exactly as a loop of
per-decoder calls would, so each source gets the clips the same sampler
gives on `VideoDecoder(path)` under the same seed. The server reads each
file's metadata (`Open`, a few sources ahead) and then decodes the frames
the sampler chose as one request (reshaped into clips here). A source that
cannot be opened, or whose sampler call raises, fails its own future.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from framefeed.engine.demux.metadata import VideoStreamMetadata
from framefeed.pool import DecodeRequest


class ServiceVideos:
    """Sources for the samplers, decoded by a `framefeed serve` (made by `ServiceClient.videos`)."""

    def __init__(self, client: Any, sources: list[Any], template: DecodeRequest, lookahead: int,
                 timeout: float | None) -> None:
        self._client = client
        self._sources = sources
        self._template = template
        self._lookahead = max(int(lookahead), 1)
        self._timeout = timeout

    def __len__(self) -> int:
        return len(self._sources)

    def __repr__(self) -> str:
        return f"ServiceVideos({len(self._sources)} sources, {self._template.seek_mode})"

    def sample_each(self, sampler: Callable[..., Any], kwargs: dict[str, Any]) -> list[Future]:
        """Run `sampler(video, **kwargs)` for each source in order; one future each."""
        opening: deque[tuple[Any, Future]] = deque()
        upcoming = iter(self._sources)
        results: list[Future] = []
        try:
            for _ in self._sources:
                while len(opening) < self._lookahead:
                    source = next(upcoming, _END)
                    if source is _END:
                        break
                    opening.append((source, self._client._open(source, self._template, self._timeout)))
                source, metadata_future = opening.popleft()
                try:
                    metadata = metadata_future.result()
                    view = _RemoteVideo(self._client, metadata,
                                        dataclasses.replace(self._template, source=source), self._timeout)
                    results.append(sampler(view, **kwargs))
                except Exception as error:
                    results.append(_failed(error))
        finally:
            for _, pending in opening:
                pending.cancel()
        return results


_END = object()


def _failed(error: BaseException) -> Future:
    future: Future = Future()
    future.set_exception(error)
    return future


class _RemoteVideo:
    """One source as the samplers see a decoder: its length and metadata,
    and a `submit_clips` that sends the sampler's frames to the server."""

    def __init__(self, client: Any, metadata: VideoStreamMetadata, template: DecodeRequest,
                 timeout: float | None) -> None:
        self._client = client
        self.metadata = metadata
        self._template = template
        self._timeout = timeout

    def __len__(self) -> int:
        return int(self.metadata.num_frames or 0)

    def get_frames_at(self, indices: list[int]) -> Future:
        return self._submit({"indices": indices}, None)

    def get_frames_played_at(self, seconds: list[float]) -> Future:
        return self._submit({"seconds": seconds}, None)

    def submit_clips(self, method: str, values: list[Any], clip_shape: tuple[int, int]) -> Future:
        """Decode the sampler's flat list of frames, reshaped to `clip_shape` clips."""
        kind = {"get_frames_at": "indices", "get_frames_played_at": "seconds"}[method]
        return self._submit({kind: values}, clip_shape)

    def _submit(self, what: dict[str, Any], clip_shape: tuple[int, int] | None) -> Future:
        request = dataclasses.replace(self._template, **what)
        return self._client._submit(request, clip_shape, self._timeout)
