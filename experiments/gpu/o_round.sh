#!/bin/bash
# One device call: the output projection's kernel (residual_matmul) against XLA's matmul and
# add-and-reduce fusion: launch settings and the XLA path end to end in one process
# (step_tune.py), then this tree against the previous commit in cmp_base/ttc_old (ab_old),
# and one traced decode of each at M/1024.
source experiments/gpu/sampling_common.sh
echo "== o tune M" | tee -a $LOG
timeout 200 python3 experiments/gpu/step_tune.py --shapes M \
  --settings "default,xla o,o 64x128,o 3 stages,o 128x64,xla o" 2>&1 | grep -v Warn | tee -a $LOG
echo "== o tune S" | tee -a $LOG
timeout 110 python3 experiments/gpu/step_tune.py --shapes S \
  --settings "default,xla o,o 64x128,xla o" 2>&1 | grep -v Warn | tee -a $LOG
ab_old "A/B against the previous commit" 200
