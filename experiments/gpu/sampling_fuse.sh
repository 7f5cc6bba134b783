#!/bin/bash
# One device call: the decode kernel's tensor-core products for one query head per kv head,
# and pre-concatenated q/k/v and gate/up weights, with Triton and cuBLAS matmuls.
#  1. kernel alone at the S and M attention shapes, lengths uniform in [33, 128] (the
#     benchmark's contexts), 'reduce' products against 'dot' at several launch settings;
#  2. S/4096 and M/1024 end to end: default (fused weights), cuBLAS, the kernel with 2 warps;
#     a trace of every variant.
# SKIP_KERNEL=1 skips part 1. Its 2026-11-29 run (results/h200_2026-11-29f/fuse) also timed
# unfused weights, with and without cuBLAS, through a temporary switch (variant 'f0') that
# was removed once fusing was the measured winner.
# Logs go to $OUT (log.txt, traces.txt, bench_*.json).
source experiments/gpu/sampling_common.sh
KERNEL=64:4:2,64:2:2,32:4:2,64:4:2:dot,64:2:2:dot,32:4:2:dot,128:4:2:dot,128:8:2:dot,64:4:3:dot
if [ -z "$SKIP_KERNEL" ]; then
echo "== kernel S" | tee -a $LOG
timeout 100 python3 -m ttc_jax.model.pallas_decode --batch 4096 --kv-heads 4 --seq 128 --live 33-128 \
  --configs $KERNEL 2>&1 | grep -v Warn | tee -a $LOG
echo "== kernel M" | tee -a $LOG
timeout 100 python3 -m ttc_jax.model.pallas_decode --batch 1024 --kv-heads 12 --seq 128 --live 33-128 \
  --layers 12 --configs $KERNEL 2>&1 | grep -v Warn | tee -a $LOG
fi
V=auto:1,auto:1:xcublas,auto:1:k64x2x2,auto:1
bench_SM $V
trace_summaries 16
cp /tmp/res/*.json $OUT/ 2>/dev/null
grep -h "device busy\|^==" $OUT/traces.txt | tail -30
