"""The public low-level API (`framefeed.engine`): its documented example runs as
written (a request planned and demuxed in a spawned worker, decoded in this
process) and gives what `VideoDecoder` gives; the README and the package
docstring show the same example."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

import corpus
import framefeed.engine
from framefeed import VideoDecoder

REPO = Path(__file__).resolve().parent.parent


def readme_example() -> str:
    section = (REPO / "README.md").read_text().split("### The engine: framefeed")[1]
    return section.split("```python\n")[1].split("```")[0]


def test_docstring_shows_the_readme_example():
    docstring = framefeed.engine.__doc__
    example = readme_example()
    indented = "".join("    " + line if line.strip() else line for line in example.splitlines(True))
    assert indented in docstring


def test_example_ships_a_bundle_from_a_spawned_worker(tmp_path):
    video = corpus.BY_NAME["h264_bframes_long_gop.mp4"].path
    saved = tmp_path / "out.pt"
    script = readme_example().replace('"samples/h264_bframes.mp4"', repr(str(video)))  # the same file
    # Keep what the example decoded, for the comparison below.
    script = script.replace("    backend.close()\n", f"    torch.save({{'frames': out.as_order('NCHW'), "
                            f"'pts': torch.from_numpy(out.pts_seconds)}}, {str(saved)!r})\n    backend.close()\n")
    (tmp_path / "example.py").write_text(script)
    done = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert "torch.Size([3, 3, 240, 320])" in done.stdout
    result = torch.load(saved)
    expected = VideoDecoder(video).get_frames_at([0, 30, 60])
    assert torch.equal(result["frames"], expected.data)
    assert result["pts"].tolist() == expected.pts_seconds.tolist()
