#!/bin/bash
# One device call: the Pallas decode with two attention windows (slots [0, 64) while every
# active row fits, then [0, 128)), so that early steps read one 64-slot block per row and
# kv head instead of a 128-slot block that is mostly masked, against one window: the kernel
# alone at 48 live slots, then M/1024 and S/4096 end to end, each in one process,
# alternating.
source experiments/gpu/sampling_common.sh
K="python3 -m ttc_jax.model.pallas_decode --head-dim 64 --iters 100 --live 48"
for seq in 64 128 64 128; do
  echo "== kernel alone, M, window $seq, 48 live" | tee -a $LOG
  timeout 60 $K --batch 1024 --kv-heads 12 --layers 12 --seq $seq --configs $seq:4:2 2>&1 \
    | grep -v Warn | tee -a $LOG
done
variants_round win 300 auto:1,auto:1:w2:s2,auto:1,auto:1:w2:s2 "M 1024" "S 4096"
