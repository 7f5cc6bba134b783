#!/bin/bash
# One device call, logged in results/h200_2026-11-29j/residual on the tree of commit a81f24d
# (a `residual` kernel for both residual adds, since removed): pallas_step's kernels checked
# and timed against XLA;
# the sampler with the residual kernel (this tree) against the previous commit (cmp_base/
# ttc_old, without it) in one process; M/1024 variants (cuBLAS for every GEMM, 4 steps per
# loop iteration) and a traced decode of the default.
source experiments/gpu/sampling_common.sh
echo "== step check" | tee -a $LOG
timeout 150 python3 experiments/gpu/step_check.py 2>&1 | grep -v Warn | tee -a $LOG
ab_old "A/B against cmp_base" 240
variants_round var 150 auto:1,auto:1:xcublas,auto:1:s4,auto:1 "M 1024"
echo "== M/1024 traced" | tee -a $LOG
timeout 100 $B $M --batch 1024 --reps 1 --trace /tmp/trace --out /tmp/res/trace_M.json \
  --variants auto:1 2>&1 | grep -v Warn | summ | tee -a $LOG
trace_summaries 24
