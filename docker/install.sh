#!/usr/bin/env bash
# Install steps of the docker image (docker/Dockerfile runs this script), also
# run outside Docker by tests/test_docker.py so CI checks them without a Docker
# engine.
#   PYTHON            interpreter to install into (default: python3)
#   TORCH_SPEC        torch requirement (default: the CUDA build of torch 2.13.0 from PyPI;
#                     the test passes the same version, which resolves to the CPU build there)
#   FRAMEFEED_SOURCE  path of the framefeed source tree (default: the current directory)
set -euo pipefail
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
FRAMEFEED_SOURCE=${FRAMEFEED_SOURCE:-.}

"$PYTHON" -m pip install --no-cache-dir --upgrade "pip>=24"
# torch first, pinned, so nothing below pulls a different build.
"$PYTHON" -m pip install --no-cache-dir "$TORCH_SPEC"
# framefeed with NVDEC (PyNvVideoCodec + CuPy for CUDA 13) and the CLI's table/plot extras.
"$PYTHON" -m pip install --no-cache-dir "${FRAMEFEED_SOURCE}[gpu,cli]"
# Smoke check: the package and its console script import without a GPU.
"$PYTHON" -c "import framefeed, av, cupy; print('framefeed', framefeed.__version__, 'av', av.__version__)"
