"""Shared pieces of the buffer-contract tests: synthetic frames in every pixel
format with their raw bytes, and the ffmpeg command line's rgb24 conversion
of many of them in one process (the independent reference)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import av
import numpy as np

FFMPEG = shutil.which("ffmpeg")

# Pixel formats the sweep covers: 8-bit 4:2:0 (limited and full range), 4:2:2,
# 4:4:4, 10-bit 4:2:0, gray, packed RGB.
FORMATS = ["yuv420p", "yuvj420p", "yuv422p", "yuv444p", "yuv420p10le", "gray", "rgb24"]
# Every residue mod 64 (twice, almost), and the sizes seen to fail in the wild.
WIDTHS = [*range(1, 131), 200, 328, 426, 854]
HEIGHTS = [1, 2, 17, 34]


def synthetic_frame(width: int, height: int, pix_fmt: str, seed: int) -> tuple[av.VideoFrame, bytes]:
    """A frame of random samples (10-bit: within 10 bits) and the same picture
    as packed raw bytes, the `-f rawvideo` layout the ffmpeg CLI reads."""
    rng = np.random.default_rng(seed)
    frame = av.VideoFrame(width, height, pix_fmt)
    wide = pix_fmt.endswith("10le")
    raw = []
    for plane in frame.planes:
        samples_per_row = plane.width * (3 if pix_fmt == "rgb24" else 1)
        if wide:
            rows = rng.integers(0, 1024, (plane.height, samples_per_row)).astype("<u2").view(np.uint8)
        else:
            rows = rng.integers(0, 256, (plane.height, samples_per_row), dtype=np.uint8)
        lines = np.frombuffer(plane, dtype=np.uint8).reshape(plane.height, plane.line_size)
        lines[:, : rows.shape[1]] = rows
        raw.append(rows.tobytes())
    return frame, b"".join(raw)


def ffmpeg_rgb24_of_raw(pictures: list[tuple[int, int, str, bytes]]) -> list[np.ndarray]:
    """The ffmpeg CLI's `-pix_fmt rgb24` conversion of each raw picture
    `(width, height, pix_fmt, bytes)`, all in one ffmpeg process."""
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        command = [FFMPEG, "-v", "error", "-nostdin", "-y"]
        for i, (width, height, pix_fmt, raw) in enumerate(pictures):
            (work / f"{i}.raw").write_bytes(raw)
            command += ["-f", "rawvideo", "-pix_fmt", pix_fmt, "-s", f"{width}x{height}", "-i", str(work / f"{i}.raw")]
        for i in range(len(pictures)):
            command += ["-map", f"{i}:v", "-pix_fmt", "rgb24", "-f", "rawvideo", str(work / f"{i}.rgb")]
        subprocess.run(command, check=True, capture_output=True, timeout=600)
        return [np.fromfile(work / f"{i}.rgb", dtype=np.uint8).reshape(height, width, 3)
                for i, (width, height, _, _) in enumerate(pictures)]


def ffmpeg_rgb24_of_files(videos: list[tuple[Path, int, int]]) -> list[np.ndarray]:
    """Every frame of each `(path, width, height)` video as the ffmpeg CLI converts
    it to rgb24, `(N, H, W, 3)` per video, all in one ffmpeg process."""
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        command = [FFMPEG, "-v", "error", "-nostdin", "-y"]
        for path, _, _ in videos:
            command += ["-i", str(path)]
        for i in range(len(videos)):
            command += ["-map", f"{i}:v:0", "-fps_mode", "passthrough", "-pix_fmt", "rgb24", "-f", "rawvideo",
                        str(work / f"{i}.rgb")]
        subprocess.run(command, check=True, capture_output=True, timeout=600)
        return [np.fromfile(work / f"{i}.rgb", dtype=np.uint8).reshape(-1, height, width, 3)
                for i, (_, width, height) in enumerate(videos)]
