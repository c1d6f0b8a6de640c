#!/usr/bin/env bash
# The GPU device check (issue 22): every GPU item in one go, in order of
# importance, each step under its own `timeout`. The limits add up to 6
# minutes (360 s, the prelude's wheel install included), so a check that
# goes wrong can be run a second time within one session's device time.
#
# Ask for `nvidia-h100-x1` (the device tool's default kind: Hopper, 7 NVDEC
# engines, the same NVDEC as the H200 of 2026-11-28). Compare figures only
# between runs on the same kind: the targets are ratios between contenders
# of one run, never against another machine's figures.
#
#  limit  step            what
#   25 s  (prelude)       carried wheels installed, versions printed
#   40 s  inputs          benchmarks/gpu_inputs.py: every input below encoded at once, all cores
#   31 s  doctor          framefeed doctor --json: GPU, driver, NVDEC caps, clock, parity, roofline probe
#   32 s  probe           benchmarks/gpu_probe.py: 14 threads on owned / torch-pool / legacy streams,
#                         PacketData's attributes and `discardable`, the CAI stream field,
#                         CuPy's from_external lifetime, 1080 -> 1088 reuse (now and as before),
#                         frame sizes changing mid-stream (shrinking, growing past the decoder's bucket)
#   45 s  pytest_nvdec    cuda tests of the NVDEC backend and fused kernel
#   30 s  pytest_corpus   cuda tests of the corpus frames
#   35 s  pytest_modes    cuda tests of the pool, service, loader, shipping
#                         (pytest: -v so each result is printed as it comes, -rfE, 45 s per test;
#                         FRAMEFEED_REQUIRE_CUDA=1 turns skips into failures)
#   42 s  throughput      benchmarks/gpu_throughput.py: 1/7/14/21 threads, H.264 and HEVC, framefeed
#                         and PyNvVideoCodec's SimpleDecoder, cells of >= 1 s, NVML utilisation
#   25 s  pool            benchmarks/pool_throughput.py --mode gpu: sessions 1, 7, 21
#   20 s  resize          benchmarks/gpu_resize.py: fused 224x224 at 7 threads
#   15 s  loader          benchmarks/loader_throughput.py --mode gpu
#   20 s  service         benchmarks/service_throughput.py --mode gpu
#
# Output: at most 7 files under $OUT (default ./device-check-out):
# device_check.log (everything, as it happened), summary.json (each step's
# exit status and time, rewritten after every step), doctor.json,
# probe.json, throughput.json (rewritten after every row), pytest.log, and
# results.tar.gz (every step's own log and JSON, repacked after every
# step). A killed step keeps what it wrote. Output is unbuffered.
#
# Before: bash benchmarks/fetch_gpu_wheels.sh on a machine with registry
# access (wheels into .whl/, carried with the tree). Run from anywhere in
# the project:  bash benchmarks/device_check.sh
# The exit status is the number of failed steps.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/device-check-out}"
WORK="${DEVICE_CHECK_WORK:-/tmp/framefeed-device-check}"
mkdir -p "$OUT" "$WORK"
rm -f "$WORK"/*.log "$WORK"/*.json "$WORK"/*.md
export PYTHONUNBUFFERED=1
LOG="$OUT/device_check.log"
: >"$LOG"
: >"$WORK/steps.tsv"
failed=0

pack() {  # everything the steps wrote, as one tarball (replaced atomically)
  cp benchmarks/results/pool-gpu-*.* benchmarks/results/loader-gpu.* benchmarks/results/service-gpu.* \
    "$WORK/" 2>/dev/null || true
  tar -czf "$OUT/results.tar.gz.partial" -C "$WORK" . 2>/dev/null && mv "$OUT/results.tar.gz.partial" "$OUT/results.tar.gz"
  python3 - "$WORK/steps.tsv" "$OUT/summary.json" <<'PY'
import json, sys
steps = [dict(zip(("step", "limit_s", "exit", "seconds"), line.split("\t")))
         for line in open(sys.argv[1]).read().splitlines() if line]
for step in steps:
    code = int(step["exit"])
    step.update(limit_s=int(step["limit_s"]), exit=code, seconds=int(step["seconds"]),
                result="ok" if code == 0 else "timed out" if code in (124, 137) else "failed")
json.dump({"steps": steps, "failed": sum(s["result"] != "ok" for s in steps)}, open(sys.argv[2], "w"), indent=2)
PY
}

step() {  # step NAME SECONDS COMMAND...: run under a timeout; output to the log, the step's log and stdout
  local name=$1 seconds=$2
  shift 2
  local began=$SECONDS
  echo "== $name (limit ${seconds}s): $*" | tee -a "$LOG" "$WORK/$name.log"
  timeout --kill-after=5 "$seconds" "$@" 2>&1 | tee -a "$LOG" "$WORK/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc after $((SECONDS - began))s" | tee -a "$LOG" "$WORK/$name.log"
  printf '%s\t%s\t%s\t%s\n' "$name" "$seconds" "$rc" "$((SECONDS - began))" >>"$WORK/steps.tsv"
  [ "$rc" -eq 0 ] || failed=$((failed + 1))
  pack
}

# shellcheck source=benchmarks/gpu_prelude.sh
source benchmarks/gpu_prelude.sh 2>&1 | tee -a "$LOG" "$WORK/env.log"
export PYTHONPATH="${FRAMEFEED_SITE:-/tmp/framefeed-site}:$PWD${PYTHONPATH:+:$PYTHONPATH}"
{ date -u; nvidia-smi; python3 --version; git log -1 --format='commit %H %s' 2>/dev/null; } >>"$WORK/env.log" 2>&1

step inputs 40 python3 benchmarks/gpu_inputs.py --frames 240 --pool-files 8 --pool-codecs h264 \
  --service-files 4 --service-frames 150
step doctor 31 bash -c 'python3 -m framefeed.cli doctor --json --parity-seconds 12 --probe-seconds 6 \
  >"$0/doctor.json"; rc=$?; cat "$0/doctor.json"; exit $rc' "$OUT"
step probe 32 python3 benchmarks/gpu_probe.py --output "$OUT/probe.json" --seconds-per-mode 3
PYTEST=(python3 -m pytest -v -rfE -p no:cacheprovider --timeout 45 -m cuda)
export FRAMEFEED_REQUIRE_CUDA=1
step pytest_nvdec 45 "${PYTEST[@]}" tests/test_gpu_cuda.py tests/test_gpu_cuda_resampling.py
step pytest_corpus 30 "${PYTEST[@]}" tests/test_corpus_frames.py
step pytest_modes 35 "${PYTEST[@]}" tests/test_pool_cuda.py tests/test_serve_cuda.py tests/test_data.py \
  tests/test_shipping.py
unset FRAMEFEED_REQUIRE_CUDA
cat "$WORK"/pytest_*.log >"$OUT/pytest.log" 2>/dev/null
step throughput 42 python3 benchmarks/gpu_throughput.py --threads 1,7,14,21 --frames 240 --runs 1 \
  --min-seconds 1 --methods framefeed,simple --cpu-processes 0 --timeout 20 --output "$OUT/throughput.json"
step pool 25 python3 benchmarks/pool_throughput.py --mode gpu --files 8 --codecs h264 --workloads clips \
  --counts 1,7,21 --cell-timeout 15
step resize 20 python3 benchmarks/gpu_resize.py --frames 240 --runs 1 --threads 7 --timeout 8 \
  --output "$WORK/gpu_resize.json"
step loader 15 python3 benchmarks/loader_throughput.py --mode gpu --runs 1 --warmup 0 --gpu-workers 4 \
  --cpu-workers 8
step service 20 python3 benchmarks/service_throughput.py --mode gpu --runs 1 --files 4 --frames 150 \
  --clips 100 --soak 500

echo "device check done: $failed failed step(s); logs in $OUT" | tee -a "$LOG"
exit "$failed"
