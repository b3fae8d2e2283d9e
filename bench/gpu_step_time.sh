#!/usr/bin/env bash
# Step time of the training loop on one GPU (a short device lease): attention kernels, one
# 8-GPU micro-batch (48 x 2048 tokens) compiled vs eager, then STEPS real optimizer steps of
# the 11L defaults (786,432 tokens/step = 8 micro-batches on one GPU) through golf.train.
#
#   python -m bench.proxy_corpus                 # here, once: the shards it trains on
#   OUT=/tmp/gpu STEPS=40 bash bench/gpu_step_time.sh
set -u
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
exec > >(tee -a "$OUT/step_time.log") 2>&1
if ! $PY -c "import zstandard, brotli" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile .whl/*.whl 2>&1 | tail -2
fi
echo "=== attention"; timeout 60 $PY -m bench.attention 2>/dev/null | head -9
echo "=== micro-batch compiled vs eager"; timeout 150 $PY -m bench.train --gpu-only 2>&1 | tail -4
echo "=== training loop"
DATA_PATH=./data/datasets/proxy_sp1024 TOKENIZER_PATH=./data/tokenizers/fineweb_1024_bpe.model \
RUN_ID=steptime ITERATIONS=${STEPS:-40} WARMUP_STEPS=5 VAL_LOSS_EVERY=0 GPTQ_CALIB_BATCHES=0 \
TRAIN_LOG_EVERY=10 MAX_WALLCLOCK_SECONDS=0 timeout 240 $PY -c "
from golf.config import Config
from golf.train import train
r = train(Config.from_env())
print(f'loop steps:{r.steps} step_avg_ms:{r.train_time_ms / r.steps:.2f} tok_s:{r.tokens_per_s:.0f}')
" 2>&1 | grep -E "^step:|^loop|Error|error" | tail -8
