#!/usr/bin/env bash
# Downloads the wheels the GPU machine lacks (PyAV, PyNvVideoCodec) into .whl/
# at the project root (ignored by git), for Python 3.12 / x86-64. Run it from
# any directory of the project on a machine with registry access, before a
# device check; the wheels then travel with the tree (pass .whl as carried).
# Usage: bash benchmarks/fetch_gpu_wheels.sh [EXTRA_PACKAGE==VERSION ...]
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "av==18.1.0" "PyNvVideoCodec==2.2.4" "$@"
ls -la .whl
echo "total: $(du -sm .whl | cut -f1) MiB (the tree plus wheels must stay under 64 MiB to travel)"
