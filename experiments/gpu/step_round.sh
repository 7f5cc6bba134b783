#!/bin/bash
# One device call: pallas_step's kernels checked and timed against XLA (step_check.py), then
# the sampler with them ('epallas') against XLA's fusions ('exla') in one process per shape,
# alternating, and one traced decode of each at M/1024.
source experiments/gpu/sampling_common.sh
echo "== step check" | tee -a $LOG
timeout 150 python3 experiments/gpu/step_check.py 2>&1 | grep -v Warn | tee -a $LOG
variants_round ab 200 auto:1:exla,auto:1:epallas,auto:1:exla,auto:1:epallas "M 1024" "S 4096"
echo "== M/1024 traced" | tee -a $LOG
timeout 150 $B $M --batch 1024 --reps 1 --trace /tmp/trace --out /tmp/res/trace_M.json \
  --variants auto:1:exla,auto:1:epallas 2>&1 | grep -v Warn | summ | tee -a $LOG
trace_summaries 24
