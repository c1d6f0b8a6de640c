"""Bad input on every `framefeed` command: one line on stderr naming the file
and the cause, exit status 2, no traceback unless `--debug` asks for it.

Most cases call `framefeed.cli.main`, what the console script runs, in this
process, with stdout and stderr captured at the file descriptors (FFmpeg's own
log lines count too); a few run the command as its own process, each command
at least once, for the exit status and the whole of stderr."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from framefeed.samples import VideoSpec, encode_video, x264_options


def framefeed(*args: str, cache: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """`framefeed ARGS` as its own process."""
    env = dict(os.environ, FRAMEFEED_CACHE=str(cache))
    return subprocess.run([sys.executable, "-m", "framefeed.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture
def framefeed_here(capfd, monkeypatch):
    """`framefeed ARGS` by `framefeed.cli.main` in this process (a process
    start costs seconds: torch's import); its exit status, stdout and stderr."""
    from framefeed.cli import main

    def run(*args: str, cache: Path) -> subprocess.CompletedProcess:
        monkeypatch.setenv("FRAMEFEED_CACHE", str(cache))
        capfd.readouterr()
        try:
            status = main(list(args))
        except SystemExit as stop:  # argparse's own exits
            status = stop.code
        out, err = capfd.readouterr()
        return subprocess.CompletedProcess(["framefeed", *args], status, out, err)

    return run


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """Bad inputs: random bytes (seeded: a few random 4 KiB blocks probe as a
    subtitle stream), an audio-only file, an MP4 cut in half (its header, written last,
    is lost), the same file with its header first cut in half (the header
    survives, half the frames do not), a directory, a missing path."""
    root = tmp_path_factory.mktemp("bad-inputs")
    good = encode_video(root / "good.mp4", VideoSpec(width=160, height=96, num_frames=50,
                                                    codec_options=x264_options(10)))
    faststart = root / "faststart.mp4"
    with av.open(str(good)) as source, av.open(str(faststart), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.size:
                packet.stream = stream
                out.mux(packet)
    data, early = good.read_bytes(), faststart.read_bytes()
    assert data.find(b"moov") > data.find(b"mdat") and early.find(b"moov") < early.find(b"mdat")
    paths = {
        "garbage": root / "garbage.mp4",
        "no_video": root / "no_video.mkv",
        "truncated": root / "truncated.mp4",
        "truncated_after_header": root / "truncated_after_header.mp4",
        "directory": root / "directory.mp4",
        "missing": root / "missing.mp4",
    }
    paths["garbage"].write_bytes(random.Random(0).randbytes(4096))
    with av.open(str(paths["no_video"]), "w") as out:
        audio = out.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in [*audio.encode(frame), *audio.encode(None)]:
            out.mux(packet)
    paths["truncated"].write_bytes(data[: len(data) // 2])
    paths["truncated_after_header"].write_bytes(early[: len(early) // 2])
    paths["directory"].mkdir()
    return paths


CAUSES = {
    "garbage": "Invalid data found when processing input",
    "no_video": "No video stream",
    "truncated": "Invalid data found when processing input",
    "truncated_after_header": "truncated file",
    "directory": "it is a directory",
    "missing": "no such video file",
}


def assert_one_line_error(result: subprocess.CompletedProcess, command: str, path: Path, cause: str) -> None:
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"framefeed {command}: error: ") and str(path) in lines[0], lines[0]
    assert cause in lines[0], lines[0]
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize("kind", ["garbage", "no_video", "truncated", "directory", "missing"])
def test_info_bad_input_is_one_line_and_exit_2(inputs, kind, tmp_path, framefeed_here):
    result = framefeed_here("info", str(inputs[kind]), cache=tmp_path)
    assert_one_line_error(result, "info", inputs[kind], CAUSES[kind])


def test_info_describes_a_file_truncated_after_its_header_with_one_line_warnings(inputs, tmp_path):
    """What survives is described (as ffprobe does), each problem one warning line naming the file."""
    path = inputs["truncated_after_header"]
    result = framefeed("info", str(path), cache=tmp_path)  # its own process: warnings as a user sees them
    assert result.returncode == 0, result.stderr
    assert "decoded frames" in result.stdout
    warnings = result.stderr.strip().splitlines()
    assert warnings and all(line.startswith("framefeed info: warning: ") and str(path) in line
                            for line in warnings), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("kind", ["garbage", "no_video", "truncated", "truncated_after_header", "directory", "missing"])
def test_bench_bad_input_is_one_line_and_exit_2(inputs, kind, tmp_path, framefeed_here):
    """A damaged file is refused before any timing: its figures would time its damage."""
    result = framefeed_here("bench", "--runs", "1", "--no-progress", str(inputs[kind]), cache=tmp_path)
    assert_one_line_error(result, "bench", inputs[kind], CAUSES[kind])


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
@pytest.mark.parametrize("command", ["info", "bench"])
def test_an_unreadable_file_is_one_line_and_exit_2(inputs, command, tmp_path, framefeed_here):
    path = tmp_path / "unreadable.mp4"
    path.write_bytes(b"\0" * 64)
    path.chmod(0)
    result = framefeed_here(command, str(path), cache=tmp_path)
    assert_one_line_error(result, command, path, "Permission denied")


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_prints_the_traceback_then_the_line(inputs, tmp_path, where):
    args = ["--debug", "info", str(inputs["garbage"])] if where == "before" else \
        ["info", "--debug", str(inputs["garbage"])]
    result = framefeed(*args, cache=tmp_path)
    assert result.returncode == 2
    assert "Traceback (most recent call last)" in result.stderr
    assert "VideoOpenError" in result.stderr  # the cause's own frames, not only the CLI's
    assert result.stderr.strip().splitlines()[-1].startswith("framefeed info: error: cannot read ")


def test_bench_refuses_an_output_in_a_missing_folder_before_running(inputs, tmp_path):
    result = framefeed("bench", "--json", str(tmp_path / "no" / "such" / "out.json"), cache=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"framefeed: error: cannot write {tmp_path}/no/such/out.json: "
                                                  "no such directory"]


@pytest.mark.parametrize("kind", ["missing", "garbage"])
def test_serve_with_a_bad_allow_root_is_one_line_and_exit_2(inputs, kind, tmp_path):
    pytest.importorskip("grpc")
    result = framefeed("serve", "--device", "cpu", "--socket", str(tmp_path / "s.sock"), "--allow-root",
                       str(inputs[kind]), cache=tmp_path, timeout=120)
    assert_one_line_error(result, "serve", inputs[kind], "is not an existing directory")
