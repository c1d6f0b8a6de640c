"""`framefeed bench` end to end: default clips, JSON against its schema, a
missing peer, peers that crash or hang (each in its own process), missing
optional packages, --plot, and bad arguments (exit code 2, one line)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

import framefeed

SCHEMA = json.loads((Path(framefeed.__file__).parent / "bench" / "schema.json").read_text())
SHORT = ["--runs", "1", "--warmup", "0", "--no-progress"]


def bench(*args: str, cache: Path, extra_env: dict | None = None, timeout: int = 900):
    env = dict(os.environ, FRAMEFEED_CACHE=str(cache), **(extra_env or {}))
    return subprocess.run([sys.executable, "-m", "framefeed.cli", "bench", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bench-cache")


@pytest.fixture(scope="module")
def default_run(cache, tmp_path_factory):
    """The default suite once, with --json and --plot (several tests read it)."""
    folder = tmp_path_factory.mktemp("bench-out")
    out, plot = folder / "results.json", folder / "bench.png"
    result = bench(*SHORT, "--json", str(out), "--plot", str(plot), cache=cache)
    return result, out, plot


def test_default_suite_runs_on_generated_clips(default_run, cache):
    result, out, _ = default_run
    assert result.returncode == 0, result.stderr[-2000:]
    document = json.loads(out.read_text())
    jsonschema.validate(document, SCHEMA)
    assert [c["name"] for c in document["clips"]] == ["h264_640x360_bframes", "h264_1080p", "hevc_1080p"]
    assert all(Path(c["path"]).is_relative_to(cache) for c in document["clips"])  # generated, not downloaded
    ours = [r for r in document["results"] if r["library"] == "framefeed"]
    workloads = {r["workload"] for r in ours}
    assert {"create_exact", "create_approximate", "sequential", "random_access",
            "clips_at_random_indices", "clips_at_regular_timestamps"} <= workloads
    for row in ours:
        assert row["error"] is None, row
        assert len(row["seconds"]) == 1 and row["median_seconds"] > 0
    sequential = next(r for r in ours if r["workload"] == "sequential" and r["clip"] == "h264_1080p")
    assert sequential["frames"] == 24 and sequential["frames_per_second"] > 0
    pyav = [r for r in document["results"] if r["library"] == "pyav" and r["workload"] == "sequential"]
    assert pyav and all(r["time_vs_framefeed"] > 0 for r in pyav)
    assert "framefeed bench" in result.stdout and "time vs framefeed" in result.stdout


def test_missing_peer_is_skipped_with_a_note(cache, tmp_path, default_run):
    video = next((cache / "bench-v4").glob("h264_640x360_bframes.mp4"))  # one clip is enough
    shim = tmp_path / "shim" / "torchcodec"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('torchcodec is broken on purpose')\n")
    path = os.pathsep.join([str(tmp_path / "shim"), os.environ.get("PYTHONPATH", "")])
    result = bench(*SHORT, "--workload", "create_approximate", str(video), cache=cache,
                   extra_env={"PYTHONPATH": path})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "skipped torchcodec (cpu): torchcodec.decoders not importable" in result.stdout


def test_plot_writes_a_png(default_run):
    result, _, plot = default_run
    assert result.returncode == 0, result.stderr[-2000:]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_user_video_argument(stand_in_run):
    """A video named on the command line is the run's only clip."""
    result, document, video = stand_in_run
    assert result.returncode == 0, result.stderr[-2000:]
    assert [c["name"] for c in document["clips"]] == [video.name]


STAND_INS = ["aborting-peer", "segfaulting-peer", "hanging-peer", "raising-peer"]


def with_tests_on_path(**extra: str) -> dict:
    """Environment for a bench subprocess that can import tests/stand_in_peers.py."""
    tests = str(Path(__file__).resolve().parent)
    return {"PYTHONPATH": os.pathsep.join(p for p in [tests, os.environ.get("PYTHONPATH", "")] if p), **extra}


@pytest.fixture(scope="module")
def stand_in_run(cache, tmp_path_factory, default_run):
    """framefeed and the stand-in peers on one video named on the command line
    (one of the default clips): the process result, its JSON and the video."""
    video = next((cache / "bench-v4").glob("h264_640x360_bframes.mp4"))
    out = tmp_path_factory.mktemp("stand-ins") / "failing.json"
    result = bench(*SHORT, "--workload", "create_approximate", "--workload", "sequential", "--timeout", "3",
                   "--peers", ",".join(["framefeed", *STAND_INS]), "--json", str(out), str(video), cache=cache,
                   extra_env=with_tests_on_path(FRAMEFEED_BENCH_CONTENDERS="stand_in_peers"))
    return result, json.loads(out.read_text()) if out.exists() else None, video


def test_crashing_aborting_and_hanging_peers_cost_only_their_rows(stand_in_run):
    """Stand-in peers (loaded through FRAMEFEED_BENCH_CONTENDERS) abort, segfault,
    hang and raise: the run completes, framefeed is measured, and the table and
    JSON mark each peer's rows with what happened."""
    result, document, _ = stand_in_run
    assert result.returncode == 0, result.stderr[-2000:]
    jsonschema.validate(document, SCHEMA)
    rows = {(r["library"], r["workload"]): r for r in document["results"]}
    for workload in ("create_approximate", "sequential"):
        assert rows[("framefeed", workload)]["status"] == "ok" and rows[("framefeed", workload)]["seconds"]
        assert (rows[("aborting-peer", workload)]["status"], rows[("aborting-peer", workload)]["signal"]) == (
            "crashed", 6)
        assert (rows[("segfaulting-peer", workload)]["status"],
                rows[("segfaulting-peer", workload)]["signal"]) == ("crashed", 11)
        assert rows[("raising-peer", workload)]["status"] == "error"
        assert "the stand-in peer refuses" in rows[("raising-peer", workload)]["error"]
    # It hangs in its first run (the warm-up of the first workload), is killed,
    # and is not run again.
    assert rows[("hanging-peer", "create_approximate")]["status"] == "timed out"
    assert rows[("hanging-peer", "sequential")]["status"] == "not run"
    for text in ("crashed: signal 6", "crashed: signal 11", "timed out", "not run"):
        assert text in result.stdout, text
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize("module, args, line", [
    ("rich", [], "framefeed bench needs the 'rich' package for its table: pip install 'framefeed[bench]'"),
    ("matplotlib", ["--plot", "out.png"], "--plot needs the 'matplotlib' package: pip install 'framefeed[bench]'"),
])
def test_a_missing_optional_package_is_one_line_naming_the_extra(tmp_path, module, args, line):
    shim = tmp_path / "shim" / module
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text(f"raise ImportError('{module} is not installed (simulated)')\n")
    path = os.pathsep.join([str(tmp_path / "shim"), os.environ.get("PYTHONPATH", "")])
    result = bench(*args, cache=tmp_path, extra_env={"PYTHONPATH": path}, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"framefeed: {line}"]
    assert "Traceback" not in result.stdout + result.stderr


def test_a_broken_plugin_module_is_one_line(tmp_path):
    result = bench(cache=tmp_path, extra_env={"FRAMEFEED_BENCH_CONTENDERS": "no_such_plugin_module"}, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "FRAMEFEED_BENCH_CONTENDERS names 'no_such_plugin_module'" in lines[0]


@pytest.mark.parametrize("args, message", [
    (["/no/such/video.mp4"], "no such video file: /no/such/video.mp4"),
    (["--workload", "nonsense"], "invalid choice: 'nonsense'"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--runs", "0"], "expected a positive integer"),
    (["--peers", "ffmpeg-cli"], "unknown peer(s) ffmpeg-cli"),
    (["--timeout", "0"], "expected a positive number of seconds"),
])
def test_bad_arguments_exit_2_with_one_line(args, message, tmp_path):
    result = bench(*args, cache=tmp_path, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
