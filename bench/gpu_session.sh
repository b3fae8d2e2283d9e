#!/usr/bin/env bash
# One prepared GPU session (the device tool lends ~15 minutes): checks and times every CUDA
# path once and leaves its results under $OUT.
#
#   python -m golf.data.prepare proxy                  # here: data/datasets/proxy_sp1024 (+ official tokenizer)
#   OUT=/tmp/gpu bash bench/gpu_session.sh             # there: needs zstandard/brotli wheels in .whl/ if absent
#
# Steps: environment; attention kernels (bench.attention); GPTQ of the 11L matrices on the GPU
# (bench.quant --gptq-only); the main job with the 11L defaults under torchrun (compile, bf16,
# wallclock cap TRAIN_SECONDS) on the proxy corpus, which quantizes with the budget fitter,
# evaluates and packs with the round trip; then the quantizer quality bench on the trained
# checkpoint. Each step has its own timeout so a failure leaves the later ones their time.
set -u
source "$(dirname "$0")/gpu_lib.sh"
TRAIN_SECONDS=${TRAIN_SECONDS:-120}
gpu_setup session

step attention
timeout 90 $PY -m bench.attention > "$OUT/attention.txt" 2>&1; echo "rc=$?"; head -12 "$OUT/attention.txt"

step gptq_cuda
timeout 90 $PY -m bench.quant --gptq-only --device cuda > "$OUT/gptq_cuda.json" 2>&1; echo "rc=$?"; cat "$OUT/gptq_cuda.json"

step main_job
export DATA_PATH=./data/datasets/proxy_sp1024 TOKENIZER_PATH=./data/tokenizers/fineweb_1024_bpe.model
common="MAX_WALLCLOCK_SECONDS=$TRAIN_SECONDS WARMDOWN_ITERS=${WARMDOWN_ITERS:-60} WARMUP_STEPS=${WARMUP_STEPS:-5} VAL_LOSS_EVERY=${VAL_LOSS_EVERY:-50} TRAIN_LOG_EVERY=10 GOLF_NAME=gpu-session"
env $common RUN_ID=h100 timeout ${MAIN_TIMEOUT:-420} $PY -m torch.distributed.run --standalone --nproc_per_node=1 train_gpt.py
rc=$?; echo "main rc=$rc"
RUN=runs/h100
if [ ! -f $RUN/ema.pt ]; then
  step main_job_retry_without_compile
  env $common RUN_ID=h100_eager COMPILE=0 MAX_WALLCLOCK_SECONDS=60 timeout 240 $PY train_gpt.py; echo "retry rc=$?"
  RUN=runs/h100_eager
fi

step quality_on_trained_checkpoint
if [ -f $RUN/ema.pt ]; then
  timeout ${QUALITY_TIMEOUT:-150} $PY -m bench.quant --checkpoint $RUN/ema.pt --data $DATA_PATH \
      --tokenizer $TOKENIZER_PATH > "$OUT/quality.json" 2>&1; echo "rc=$?"; tail -40 "$OUT/quality.json"
fi

step collect
if [ -f $RUN/ema.pt ]; then  # bf16 copy of the EMA weights in <16 MiB parts, for CPU-side quant work
  $PY - "$RUN" "$OUT" <<'PYEOF'
import sys, torch
run, out = sys.argv[1], sys.argv[2]
ck = torch.load(f"{run}/ema.pt", map_location="cpu", weights_only=False)
ck["state_dict"] = {k: v.bfloat16() for k, v in ck["state_dict"].items()}
torch.save(ck, "/tmp/ema_bf16.pt")
PYEOF
  split -b 15M -d /tmp/ema_bf16.pt "$OUT/ema_bf16.pt.part"
fi
tar czf "$OUT/run.tgz" --exclude='*.pt' --exclude='*.gkq' runs submission 2>/dev/null
ls -la "$OUT" runs/* submission 2>/dev/null | head -60
step done
