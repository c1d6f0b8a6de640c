#!/usr/bin/env bash
# The GPU device check: every check that needs an NVIDIA GPU, in order of
# importance, each step under its own timeout and writing its own log under
# $OUT (default ./device-check-out), about 6 minutes in all and at most ~8.5.
#
#   1. env.log             the machine, driver, library versions (prelude)
#   2. pytest_cuda.log     tests/test_gpu_cuda.py + tests/test_gpu_colour.py, -s
#                          (10-bit and MPEG-2 differences printed)
#   3. gpu_throughput.log  benchmarks/gpu_throughput.py at 1,7,14,21 threads on
#      gpu_throughput.json 1080p H.264 and HEVC, NVML utilisation on every row
#   4. bench.log           framefeed bench --device cuda:0 --device cpu --runs 2
#      bench.json
#
# Before: bash benchmarks/fetch_gpu_wheels.sh on a machine with registry
# access (PyAV and PyNvVideoCodec wheels into .whl/, which must travel with
# the tree). Run from the project root:  bash benchmarks/device_check.sh
# A failed or timed-out step is recorded in its log and the next step runs;
# the script's exit status is the number of failed steps.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/device-check-out}"
mkdir -p "$OUT"
failed=0

step() {  # step NAME SECONDS COMMAND...: run with a timeout, log to $OUT/NAME.log
  local name=$1 seconds=$2
  shift 2
  local began=$SECONDS
  echo "== $name (limit ${seconds}s): $*" | tee "$OUT/$name.log"
  timeout --kill-after=10 "$seconds" "$@" >>"$OUT/$name.log" 2>&1
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - began))s" | tee -a "$OUT/$name.log"
  [ "$rc" -eq 0 ] || failed=$((failed + 1))
}

# shellcheck source=benchmarks/gpu_prelude.sh
source benchmarks/gpu_prelude.sh >"$OUT/env.log" 2>&1 || { cat "$OUT/env.log"; exit 100; }
{ date -u; nvidia-smi; python3 --version; git log -1 --format='commit %H %s' 2>/dev/null; } >>"$OUT/env.log" 2>&1

step pytest_cuda 150 python3 -m pytest -v -s -p no:cacheprovider tests/test_gpu_cuda.py tests/test_gpu_colour.py
step gpu_throughput 270 python3 benchmarks/gpu_throughput.py --threads 1,7,14,21 --frames 240 --runs 2 \
  --timeout 90 --output "$OUT/gpu_throughput.json"
step bench 150 python3 -m framefeed.cli bench --device cuda:0 --device cpu --runs 2 --timeout 60 --no-progress \
  --json "$OUT/bench.json"

echo "device check done: $failed failed step(s); logs in $OUT"
exit "$failed"
