#!/usr/bin/env bash
# Install steps of the docker image (docker/Dockerfile runs this script), also
# run outside Docker by tests/test_docker.py so CI checks them without a Docker
# engine.
#   PYTHON            interpreter to install into (default: python3)
#   TORCH_SPEC        torch requirement (default: the CUDA build of torch 2.13.0 from PyPI;
#                     the test passes the same version, which resolves to the CPU build there)
#   TORCH_INDEX_URL   index to take torch from (default: PyPI), e.g. PyTorch's CPU index
#   FRAMEFEED_EXTRAS  extras of framefeed to install (default: gpu,cli,serve)
#   FRAMEFEED_SOURCE  path of the framefeed source tree (default: the current directory)
# pip also reads PIP_FIND_LINKS (local wheels) from the environment.
set -euo pipefail
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-}
FRAMEFEED_EXTRAS=${FRAMEFEED_EXTRAS:-gpu,cli,serve}
FRAMEFEED_SOURCE=${FRAMEFEED_SOURCE:-.}
if [ -z "${PIP_FIND_LINKS:-}" ]; then unset PIP_FIND_LINKS; fi

"$PYTHON" -m pip install --no-cache-dir --upgrade "pip>=24"
# torch first, pinned, so nothing below pulls a different build.
if [ -n "$TORCH_INDEX_URL" ]; then
  "$PYTHON" -m pip install --no-cache-dir --index-url "$TORCH_INDEX_URL" "$TORCH_SPEC"
else
  "$PYTHON" -m pip install --no-cache-dir "$TORCH_SPEC"
fi
# framefeed with its extras: by default NVDEC (PyNvVideoCodec + CuPy for CUDA 13), the CLI's
# table/plot libraries and the decode service (gRPC, msgpack, Prometheus client).
"$PYTHON" -m pip install --no-cache-dir "${FRAMEFEED_SOURCE}[${FRAMEFEED_EXTRAS}]"
# Smoke check: the package and its console script import without a GPU.
check="import framefeed, av; print('framefeed', framefeed.__version__, 'av', av.__version__)"
case ",$FRAMEFEED_EXTRAS," in *,gpu,*) check="import cupy; $check" ;; esac
case ",$FRAMEFEED_EXTRAS," in *,serve,*) check="import grpc, msgpack, prometheus_client; $check" ;; esac
"$PYTHON" -c "$check"
