#!/bin/bash
# One device call for the appending decode kernel (RoPE of the step's query and key, the
# cache write and attention in one Pallas kernel; no XLA RoPE, stack or scatter per layer):
#  1. the kernel against the unfused path (append_check.py), and the decode path against
#     the full forward pass (decode_check.py), compiled;
#  2. A/B in one process against the previous commit (cmp_base/ttc_old, carried), S/4096 and
#     M/1024, alternating, 2 rounds;
#  3. a trace of the new default at M/1024 and S/4096.
source experiments/gpu/sampling_common.sh
echo "== append check" | tee -a $LOG
timeout 90 python3 experiments/gpu/append_check.py 2>&1 | grep -v Warn | tee -a $LOG
echo "== decode check" | tee -a $LOG
timeout 90 python3 experiments/gpu/decode_check.py 2>&1 | grep -v Warn | tee -a $LOG
echo "== in-process A/B against the previous commit" | tee -a $LOG
PYTHONPATH=.:cmp_base timeout 260 python3 experiments/gpu/ab_inprocess.py --old ttc_old \
  --rounds 2 2>&1 | grep -v Warn | tee -a $LOG
echo "== traces" | tee -a $LOG
timeout 60 $B $M --batch 1024 --reps 1 --trace /tmp/trace --out /tmp/res/trace_M.json \
  2>&1 | grep -v Warn | summ | tee -a $LOG
timeout 50 $B $S --batch 4096 --reps 1 --trace /tmp/trace --out /tmp/res/trace_S.json \
  2>&1 | grep -v Warn | summ | tee -a $LOG
trace_summaries 16
