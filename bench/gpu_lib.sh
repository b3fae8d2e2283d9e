# Sourced by the bench/gpu_*.sh device scripts: `gpu_setup NAME` sets $OUT (results folder,
# default /tmp/gpu_out) and $PY, tees everything into $OUT/NAME.log, and installs the wheels
# carried in .whl/ when the device image lacks zstandard/brotli; `step TITLE` marks a section.
gpu_setup() {
  OUT=${OUT:-/tmp/gpu_out}
  mkdir -p "$OUT"
  export PYTHONUNBUFFERED=1
  PY=${PY:-python3}
  exec > >(tee -a "$OUT/$1.log") 2>&1
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
  if ! $PY -c "import zstandard, brotli" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile .whl/*.whl 2>&1 | tail -2
  fi
  $PY -c "import torch, sentencepiece, numpy; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cores', __import__('os').cpu_count())"
}
step() { echo; echo "=== $(date +%T) $*"; }
