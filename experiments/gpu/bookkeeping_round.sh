#!/bin/bash
# One device call: the decode step without a reduction across rows in the loop body and with
# the embedding as a gather, against the tree before it (cmp_base/ttc_old: HEAD before the
# change, packaged as in ab_inprocess.py), in one process, alternating (3 rounds, S/4096 and
# M/1024); then the decode check (compiled decode path against the full forward pass) and
# one traced M/1024 decode of this tree (top 40 kernels).
source experiments/gpu/sampling_common.sh
ab_old "against the tree before the change" 300 --rounds 3
echo "== decode check" | tee -a $LOG
timeout 90 python3 experiments/gpu/decode_check.py 2>&1 | grep -v Warn | tee -a $LOG
rm -rf /tmp/trace
echo "== M/1024 default, traced" | tee -a $LOG
timeout 150 $B $M --batch 1024 --reps 1 --trace /tmp/trace --out /tmp/res/trace_M.json \
  2>&1 | grep -v Warn | summ | tee -a $LOG
trace_summaries 40
