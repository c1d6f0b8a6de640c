"""Benchmark clips, generated locally and cached (no downloads).

The default set is what `framefeed bench` runs without arguments; the long
clip is the ~23-minute file the index and sampler benchmarks use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av

from framefeed.samples import (
    VideoSpec,
    default_cache_dir,
    encode_video,
    loop_remux,
    x264_options,
    x265_options,
)


@dataclass(frozen=True)
class Clip:
    """A video file to benchmark, with the facts workloads need."""

    name: str
    path: Path
    codec: str
    width: int
    height: int
    fps: float
    num_frames: int
    duration_seconds: float

    @classmethod
    def from_file(cls, path: str | Path, name: str | None = None) -> Clip:
        """Describe an existing file (the user's own videos)."""
        path = Path(path)
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.base_rate or 0
            duration = (
                float(stream.duration * stream.time_base) if stream.duration
                else (container.duration or 0) / 1e6
            )
            frames = stream.frames or int(round(float(rate) * duration))
            return cls(name or path.name, path, stream.codec.canonical_name, stream.codec_context.width,
                       stream.codec_context.height, float(rate), frames, duration)


@dataclass(frozen=True)
class ClipRecipe:
    name: str
    spec: VideoSpec
    loops: int = 1  # >1: the encoded clip is remuxed `loops` times into one long file


# Sized so the default suite (every workload, every installed peer, warm-up
# plus 3 runs) finishes in about a minute on a 2-core machine, generation included:
# 640x360 with B-frames and one 4.8 s GOP; 0.8 s of 1080p H.264 and HEVC at 30 fps.
DEFAULT_RECIPES = [
    ClipRecipe("h264_640x360_bframes", VideoSpec(width=640, height=360, fps=25, num_frames=120,
                                                 codec_options=x264_options(120))),
    ClipRecipe("h264_1080p", VideoSpec(width=1920, height=1080, fps=30, num_frames=24,
                                       codec_options=x264_options(24, preset="ultrafast"))),
    ClipRecipe("hevc_1080p", VideoSpec(codec="libx265", width=1920, height=1080, fps=30, num_frames=24,
                                       codec_options=x265_options(24))),
]
# 20 s at 25 fps, GOP 250, looped 69 times: about 23 minutes, 34,500 frames.
LONG_RECIPE = ClipRecipe("h264_640x360_23min", VideoSpec(width=640, height=360, fps=25, num_frames=500,
                                                          codec_options=x264_options(250)), loops=69)
# A longer 1080p clip for decode-throughput comparisons (10 s).
HD_LONG_RECIPE = ClipRecipe("h264_1080p_10s", VideoSpec(width=1920, height=1080, fps=30, num_frames=300,
                                                        codec_options=x264_options(60)))


def clip_dir(cache_dir: str | Path | None = None) -> Path:
    return Path(cache_dir or default_cache_dir()) / "bench-v4"


def make_clip(recipe: ClipRecipe, cache_dir: str | Path | None = None) -> Clip:
    """Generate (once) and describe the clip of `recipe`."""
    directory = clip_dir(cache_dir)
    path = directory / f"{recipe.name}.mp4"
    if not path.exists():
        if recipe.loops > 1:
            unit = make_clip(ClipRecipe(recipe.name + "_unit", recipe.spec), cache_dir)
            loop_remux(unit.path, path, recipe.loops)
        else:
            encode_video(path, recipe.spec)
    return Clip.from_file(path, recipe.name)


def default_clips(cache_dir: str | Path | None = None) -> list[Clip]:
    return [make_clip(recipe, cache_dir) for recipe in DEFAULT_RECIPES]
