#!/usr/bin/env bash
# The GPU device check for every open GPU item (issues 8, 11, 12, 13, 14): each
# step under its own timeout, writing its own log under $OUT (default
# ./device-check-out), in order of importance. The limits add up to about 8.3
# minutes; a step cut short keeps what it measured (the benchmarks write
# after every row).
#
#   1. env.log             the machine, driver, library versions (prelude)
#   2. pytest_cuda.log     every cuda-marked test (FRAMEFEED_REQUIRE_CUDA=1: a skip
#                          is a failure), -s prints the 10-bit, MPEG-2 and fused-
#                          transform differences
#   3. gpu_throughput.log  benchmarks/gpu_throughput.py at 1,7,14,21 threads on
#      gpu_throughput.json 1080p H.264 and HEVC, NVML utilisation on every row
#   4. pool.log            benchmarks/pool_throughput.py --mode gpu: sessions 1,7,21
#                          against SimpleDecoder threads and VideoDecoders per thread
#   5. gpu_resize.log      benchmarks/gpu_resize.py: 224x224 fused vs full size vs
#      gpu_resize.json     full size + torch interpolate
#   6. loader.log          benchmarks/loader_throughput.py --mode gpu
#   7. service.log         benchmarks/service_throughput.py --mode gpu (CUDA IPC,
#                          device memory over a soak)
#   8. bench.log           framefeed bench --device cuda:0 --device cpu --runs 2
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

FRAMEFEED_REQUIRE_CUDA=1 step pytest_cuda 120 python3 -m pytest -q -s -m cuda -p no:cacheprovider tests
step gpu_throughput 100 python3 benchmarks/gpu_throughput.py --threads 1,7,14,21 --frames 240 --runs 1 \
  --timeout 40 --output "$OUT/gpu_throughput.json"
step pool 90 python3 benchmarks/pool_throughput.py --mode gpu --files 8 --counts 1,7,21 --cell-timeout 40
step gpu_resize 40 python3 benchmarks/gpu_resize.py --frames 240 --runs 2 --threads 1 --timeout 20 \
  --output "$OUT/gpu_resize.json"
step loader 40 python3 benchmarks/loader_throughput.py --mode gpu --runs 1
step service 40 python3 benchmarks/service_throughput.py --mode gpu --runs 1 --soak 2000
step bench 60 python3 -m framefeed.cli bench --device cuda:0 --device cpu --runs 2 --timeout 40 --no-progress \
  --json "$OUT/bench.json"
cp benchmarks/results/*-gpu*.md benchmarks/results/*-gpu*.json "$OUT/" 2>/dev/null || true

echo "device check done: $failed failed step(s); logs in $OUT"
exit "$failed"
