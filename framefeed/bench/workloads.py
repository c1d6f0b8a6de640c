"""Benchmark workloads: what is timed, with parameters shared by every contender.

Each workload names a method that contenders implement (see `contenders.py`);
a contender without that method does not run it. Parameters (random indices,
seeds) are drawn once per clip so every contender decodes the same frames.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from framefeed.bench.clips import Clip


@dataclass(frozen=True)
class Workload:
    """`frames(clip, params)` is how many frames one run produces (0 for
    decoder creation, where only time matters)."""

    name: str
    description: str
    params: dict[str, Any] = field(default_factory=dict)

    def prepare(self, clip: Clip) -> dict[str, Any]:
        """Per-clip parameters, identical for every contender."""
        params = dict(self.params)
        if self.name == "random_access":
            rng = random.Random(f"{clip.name}:{clip.num_frames}")
            count = min(params.get("count", 10), clip.num_frames)
            params["indices"] = rng.sample(range(clip.num_frames), count)
        return params

    def frames(self, clip: Clip, params: dict[str, Any]) -> int:
        if self.name.startswith("create"):
            return 0
        if self.name == "sequential":
            return clip.num_frames
        if self.name == "random_access":
            return len(params["indices"])
        if self.name == "clips_at_regular_timestamps":
            starts = int(clip.duration_seconds / params["seconds_between_clip_starts"] + 0.999)
            return starts * params["num_frames_per_clip"]
        return params.get("num_clips", 1) * params.get("num_frames_per_clip", 1)


WORKLOADS: dict[str, Workload] = {w.name: w for w in [
    Workload("create_exact", "new decoder, seek_mode='exact' (index every packet)"),
    Workload("create_approximate", "new decoder, seek_mode='approximate' (header only)"),
    Workload("sequential", "decode every frame in order: `for frame in decoder`"),
    Workload("random_access", "10 random indices in one get_frames_at", {"count": 10}),
    Workload("clips_at_random_indices", "clips_at_random_indices(num_clips=5, num_frames_per_clip=2)",
             {"num_clips": 5, "num_frames_per_clip": 2, "seed": 0}),
    Workload("clips_at_regular_indices", "clips_at_regular_indices(num_clips=5, num_frames_per_clip=4)",
             {"num_clips": 5, "num_frames_per_clip": 4, "seed": 0}),
    Workload("clips_at_random_timestamps", "clips_at_random_timestamps(num_clips=10, num_frames_per_clip=4)",
             {"num_clips": 10, "num_frames_per_clip": 4, "seed": 0}),
    Workload("clips_at_regular_timestamps",
             "clips_at_regular_timestamps(seconds_between_clip_starts=1, num_frames_per_clip=4)",
             {"seconds_between_clip_starts": 1.0, "num_frames_per_clip": 4, "seed": 0}),
    Workload("tutorial_exact", "new exact decoder + clips_at_random_indices(num_clips=5, num_frames_per_clip=2)",
             {"num_clips": 5, "num_frames_per_clip": 2, "seed": 0, "seek_mode": "exact"}),
    Workload("tutorial_approximate",
             "new approximate decoder + clips_at_random_indices(num_clips=5, num_frames_per_clip=2)",
             {"num_clips": 5, "num_frames_per_clip": 2, "seed": 0, "seek_mode": "approximate"}),
]}

# What `framefeed bench` runs by default on each default clip.
DEFAULT_WORKLOADS = [
    "create_exact", "create_approximate", "sequential", "random_access",
    "clips_at_random_indices", "clips_at_regular_indices", "clips_at_random_timestamps",
    "clips_at_regular_timestamps",
]
