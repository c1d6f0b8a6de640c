# Sourced at the start of a command on the GPU machine, from the project root:
#   source benchmarks/gpu_prelude.sh || exit 1
# Installs the carried wheels (.whl/, made by benchmarks/fetch_gpu_wheels.sh)
# into a scratch site directory, puts it and the project on PYTHONPATH, and
# prints what the machine offers for video decoding. The GPU machine has no
# registry access: wheels are the only way to bring PyAV and PyNvVideoCodec.
FRAMEFEED_SITE="${FRAMEFEED_SITE:-/tmp/framefeed-site}"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  timeout 25 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$FRAMEFEED_SITE" .whl/*.whl || return 1
else
  echo "note: no .whl/ wheels carried; using what the machine has installed"
fi
export PYTHONPATH="$FRAMEFEED_SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
ldconfig -p 2>/dev/null | grep -E 'libnvcuvid|libnvidia-encode|libcuda\.so' | sed 's/^/  lib: /'
python3 - <<'PY'
import importlib
for name in ("torch", "av", "PyNvVideoCodec", "cupy", "pynvml", "rich"):
    try:
        module = importlib.import_module(name)
        print(f"  {name} {getattr(module, '__version__', '?')}")
    except Exception as error:  # report, don't fail: each step decides what it needs
        print(f"  {name}: import failed: {type(error).__name__}: {error}")
PY
