#!/usr/bin/env bash
# The DecodePool device check on an H200, in order of importance, each step under its
# own timeout and writing its own log into $OUT (default: the current directory):
#   1. the pool's cuda tests (tests/test_pool_cuda.py);
#   2. benchmarks/pool_throughput.py --mode gpu: sessions 1,4,7,14,21 against PyNvVideoCodec
#      SimpleDecoder threads and framefeed VideoDecoders per thread, H.264 and HEVC, whole
#      files and random clips, NVML utilisation per cell.
# About 8 minutes with the default 8 files per codec; POOL_FILES=64 is the full size
# (needs a longer session). Results are rewritten after every contender row, so a run cut
# short keeps what it measured. Run from the project root on the GPU machine, with PyAV and
# PyNvVideoCodec importable (e.g. after `source ../shared/gpu/prelude.sh`).
set -u
out=${OUT:-.}
mkdir -p "$out"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"

timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_pool_cuda.py > "$out/pool-cuda-tests.log" 2>&1
echo "pool cuda tests: exit $?" | tee -a "$out/pool-cuda-tests.log"

timeout 330 python3 benchmarks/pool_throughput.py --mode gpu --files "${POOL_FILES:-8}" --cell-timeout 150 \
  > "$out/pool-gpu.log" 2>&1
echo "pool_throughput --mode gpu: exit $?" | tee -a "$out/pool-gpu.log"
cp benchmarks/results/pool-gpu-*.md benchmarks/results/pool-gpu-*.json "$out/" 2>/dev/null || true
