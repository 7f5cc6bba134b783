#!/bin/bash
# Where a pretraining step of arith_study's members spends its time on one GPU (one call):
#  1. `ttc bench train` at the xs and l shapes, batch 256, the step alone (batch on device):
#     the pretraining step as configured (packed-mask einsum attention, float32 logits loss,
#     layer scan) against unrolled layers, cuDNN attention and the fused loss; rows of 255,
#     159 and 127 tokens;
#  2. the real train loop of xs (`experiments/gpu/pretrain_phases.py --trace`), summarised by
#     experiments/trace_summary.py: device busy time against wall time.
set -o pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
[ -n "$NO_WHEELS" ] || { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
  --upgrade --target /tmp/site .whl/*.whl || exit 1; }
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi -L | tee $OUT/env.txt
B="python3 -m ttc_jax.train.bench --vocab 32 --batch 256 --dtype bfloat16 --steps 30 --warmup 3 --windows 3 --peak-n 4096"
XS="--d-model 64 --layers 2 --heads 4 --kv-heads 4 --head-dim 16 --d-ff 256"
L="--d-model 176 --layers 17 --heads 11 --kv-heads 11 --head-dim 16 --d-ff 704"
v() { echo "loss=std,attention=xla,unroll=1;loss=std,attention=xla,unroll=$1;loss=fused,attention=cudnn,unroll=$1;loss=fused,attention=dot_product,unroll=$1;loss=fused,attention=cudnn,unroll=1"; }
for s in 255 159 127; do
  timeout 150 $B $XS --seq $s --variants "$(v 2)" --out $OUT/train_xs_$s.json 2>&1 | grep -v Warn | tail -8
done 2>&1 | tee $OUT/bench_log.txt
timeout 150 $B $L --seq 255 --variants "$(v 17)" --out $OUT/train_l_255.json 2>&1 | grep -v Warn | tail -8 | tee -a $OUT/bench_log.txt
timeout 200 python3 experiments/gpu/pretrain_phases.py --trace /tmp/trace --config.pretrain.steps=150 \
  --config.pretrain.log_every=50 ${PHASE_ARGS} 2>&1 | grep -v Warn | tail -12 | tee $OUT/phases.txt
T=$(find /tmp/trace -name 'perfetto_trace.json.gz' | head -1)
[ -n "$T" ] && python3 experiments/trace_summary.py $T --top 30 2>&1 | tee $OUT/trace_summary.txt
