#!/usr/bin/env bash
# Prepared device check for the 8xH100 speed path, sized for one ~15-minute GPU lease
# (one call; every step has its own timeout so a failure leaves the later ones their time).
#
#   here:  python -m golf.data.prepare proxy     # data/datasets/proxy_sp1024 + official tokenizer
#          pip download zstandard brotli -d .whl --only-binary=:all:   # the device image may lack them
#   there: OUT=/tmp/gpu bash bench/gpu_speed.sh  # through the device tool, carrying data/ and .whl/
#
# Measures on one GPU (results under $OUT, summary in $OUT/speed.log):
#   1. bench.train --gpu-only: compiled step of the R29 stack and of the P1125 stack at the
#      records' 786,432 tokens/step (8 x 48 x 2048), tokens/s per GPU against the records'
#      1.13 M, sharded Muon vs the plain form at world size 1, compile time, peak memory;
#   2. the main job end to end for TRAIN_SECONDS (default 120) under torchrun on the proxy
#      corpus with the R29 default: calibration, GPTQ, fitter, sliding eval, pack + round trip.
set -u
source "$(dirname "$0")/gpu_lib.sh"
TRAIN_SECONDS=${TRAIN_SECONDS:-120}
gpu_setup speed

step step_time
timeout ${STEP_TIMEOUT:-330} $PY -m bench.train --gpu-only --stacks ${STACKS:-r29,p1125} \
  > "$OUT/step_time.json" 2>&1; echo "rc=$?"; tail -8 "$OUT/step_time.json"

step main_job
export DATA_PATH=./data/datasets/proxy_sp1024 TOKENIZER_PATH=./data/tokenizers/fineweb_1024_bpe.model
env PRESET=r29 MAX_WALLCLOCK_SECONDS=$TRAIN_SECONDS WARMDOWN_ITERS=${WARMDOWN_ITERS:-60} \
    WARMUP_STEPS=${WARMUP_STEPS:-5} VAL_LOSS_EVERY=0 TRAIN_LOG_EVERY=10 RUN_ID=gpu_speed \
    SUBMISSION_DIR=$OUT/submission GOLF_NAME=gpu-speed \
    timeout ${MAIN_TIMEOUT:-420} $PY -m torch.distributed.run --standalone --nproc_per_node=1 train_gpt.py \
    > "$OUT/main_job.log" 2>&1
echo "main rc=$?"; grep -E "model_params|step_avg|stopping_early|calibration|quant:done|eval:|round trip|summary|bytes|val_bpb" "$OUT/main_job.log" | tail -30
cp runs/gpu_speed/{summary.json,eval.json,quant_report.json,train.log} "$OUT/" 2>/dev/null
step done
