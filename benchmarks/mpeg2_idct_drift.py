"""MPEG-2 decoders may differ, and the difference drifts: CPU evidence.

MPEG-2 specifies its inverse DCT only to IEEE 1180 accuracy, so two
conforming decoders may reconstruct slightly different pictures; predicted
(P, B) pictures reuse those pictures, so differences accumulate until the
next I picture. This script decodes the same MPEG-2 streams with FFmpeg's
software decoder using different IDCT implementations (its `idct` option:
the default "simple" against "int" (jrev) and "xvid") and reports, per
picture, the max and mean |difference| of the RGB output (swscale rgb24, as
framefeed's CPU path) against the default.

Streams (generated here with PyAV's mpeg2video encoder):
- the cuda test corpus' mpeg2.ts recipe: 128x96, 24 pictures, GOP 12, I and P;
- a long GOP: 352x288, 120 pictures, GOP 60, two B pictures between P.

Usage: PYTHONPATH=. python benchmarks/mpeg2_idct_drift.py [--out DIR]
Results: benchmarks/results/mpeg2-nvdec-vs-software.md.
"""

from __future__ import annotations

import argparse
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

IDCTS = ("int", "xvid")
PICTURE_TYPES = {1: "I", 2: "P", 3: "B"}


def test_picture(index: int, width: int, height: int) -> np.ndarray:
    """Gradients plus sharp edges, moving (the cuda corpus' picture)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    red = 128 + 100 * np.sin((xx + 3 * index) / 9.0)
    green = 128 + 100 * np.cos((yy - 2 * index) / 7.0)
    blue = np.where(((xx + index) // 16 + yy // 16) % 2 == 0, 40.0, 215.0)
    return np.clip(np.stack([red, green, blue], axis=-1), 0, 255).astype(np.uint8)


def encode(path: Path, width: int, height: int, frames: int, options: dict[str, str]) -> None:
    with av.open(str(path), "w", format="mpegts") as container:
        stream = container.add_stream("mpeg2video", rate=Fraction(25), options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(test_picture(index, width, height), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def decode(path: Path, idct: str | None) -> list[tuple[str, np.ndarray]]:
    """(picture type, rgb24 as int32) per picture, in display order."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if idct:
            stream.codec_context.options = {"idct": idct}
        return [(PICTURE_TYPES.get(int(frame.pict_type), "?"),
                 frame.to_ndarray(format="rgb24", interpolation="BICUBIC").astype(np.int32))
                for frame in container.decode(stream)]


def report(name: str, path: Path) -> list[str]:
    base = decode(path, None)
    lines = [f"### {name}", "", f"{len(base)} pictures, types {''.join(t for t, _ in base)}.", "",
             "| IDCT vs default | overall max / mean | per picture (type max/mean) |", "| --- | --- | --- |"]
    for idct in IDCTS:
        other = decode(path, idct)
        diffs = [np.abs(a - b) for (_, a), (_, b) in zip(base, other, strict=True)]
        per_picture = " ".join(f"{kind}{int(d.max())}/{d.mean():.2f}" for (kind, _), d in zip(base, diffs,
                                                                                                strict=True))
        overall = f"{max(int(d.max()) for d in diffs)} / {np.mean([d.mean() for d in diffs]):.3f}"
        lines.append(f"| {idct} | {overall} | {per_picture} |")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="where the generated streams go (default: a temporary directory)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.out or scratch)
        folder.mkdir(parents=True, exist_ok=True)
        corpus = folder / "mpeg2_corpus.ts"
        long_gop = folder / "mpeg2_long_gop.ts"
        encode(corpus, 128, 96, 24, {"g": "12"})
        encode(long_gop, 352, 288, 120, {"g": "60", "bf": "2", "b": "2M"})
        print(f"FFmpeg {getattr(av, 'ffmpeg_version_info', '?')} via PyAV {av.__version__}\n")
        for name, path in (("the cuda corpus' mpeg2.ts (128x96, GOP 12)", corpus),
                           ("long GOP (352x288, GOP 60, IBBP)", long_gop)):
            print("\n".join(report(name, path)))


if __name__ == "__main__":
    main()
