"""benchmarks/device_check.sh without a GPU: valid bash, limits that add up
to 6 minutes, at most 8 files under $OUT, and every Python entry point it
calls accepting exactly the arguments it passes (each stops at its no-GPU
check, or only collects, here)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "device_check.sh"


def steps() -> list[tuple[str, int, list[str]]]:
    """(name, limit, command) of every `step` line, continuations joined."""
    text = SCRIPT.read_text().replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        match = re.match(r"step (\w+) (\d+) (.*)$", line.strip())
        if match:
            found.append((match.group(1), int(match.group(2)), shlex.split(match.group(3))))
    return found


def test_the_script_is_valid_bash_and_its_limits_fit_six_minutes():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    names = [name for name, _, _ in steps()]
    assert names[:3] == ["inputs", "doctor", "probe"] and "throughput" in names and names[-1] == "service"
    prelude = int(re.search(r"timeout (\d+) python3 -m pip", (REPO / "benchmarks" / "gpu_prelude.sh").read_text())[1])
    assert prelude + sum(limit for _, limit, _ in steps()) <= 360
    outputs = set(re.findall(r'"\$OUT/([\w.]+)"', SCRIPT.read_text())) - {"results.tar.gz.partial"}
    assert len(outputs) <= 8, outputs


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU paths")
def test_every_entry_point_accepts_its_arguments(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), FRAMEFEED_CACHE=str(tmp_path), PYTHONUNBUFFERED="1")
    env.pop("FRAMEFEED_REQUIRE_CUDA", None)
    replacements = {'"$OUT/probe.json"': str(tmp_path / "probe.json")}
    commands = []
    for name, _, command in steps():
        command = [replacements.get(part, part).replace("$OUT", str(tmp_path)).replace("$WORK", str(tmp_path))
                   for part in command]
        if command[0] == "bash":  # the doctor step: `framefeed doctor --json ...` inside bash -c
            inner = shlex.split(command[2].split(">")[0])
            command = [sys.executable, *inner[1:]]
        elif command[:1] == ["python3"]:
            command = [sys.executable, *command[1:]]
        elif command[0] == "${PYTEST[@]}":
            pytest_line = shlex.split(re.search(r"PYTEST=\((.*)\)", SCRIPT.read_text())[1])
            assert pytest_line[:3] == ["python3", "-m", "pytest"] and "-v" in pytest_line and "-rfE" in pytest_line
            assert pytest_line[pytest_line.index("--timeout") + 1] == "45"
            command = [sys.executable, *pytest_line[1:], "--collect-only", "-q", *command[1:]]
        if name == "inputs":
            command += ["--only", "none"]  # parse, start no job
        commands.append((name, command))
    # Independent processes that mostly wait for imports: all at once.
    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = list(pool.map(lambda item: subprocess.run(item[1], cwd=REPO, env=env, capture_output=True,
                                                         text=True, timeout=300), commands))
    for (name, _), done in zip(commands, runs, strict=True):
        text = done.stdout + done.stderr
        assert "unrecognized arguments" not in text and "invalid" not in text.lower().split("usage")[0], (name, text)
        assert "error: argument" not in text, (name, text)
        if name.startswith("pytest"):
            assert done.returncode == 0, (name, text[-500:])
        elif name in ("inputs", "probe", "doctor"):
            assert done.returncode == 0, (name, text[-800:])
        else:  # the benchmarks stop at their GPU check with one clear line
            assert done.returncode != 0 and ("GPU" in text or "CUDA" in text), (name, text[-800:])
