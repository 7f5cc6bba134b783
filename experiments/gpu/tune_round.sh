#!/bin/bash
# One device call: step_tune.py, pallas_step's launch settings end to end at M/1024, and the
# main ones at S/4096. (The logged call also timed a `residual` kernel, since removed.)
source experiments/gpu/sampling_common.sh
echo "== step tune M" | tee -a $LOG
timeout 300 python3 experiments/gpu/step_tune.py --shapes M 2>&1 | grep -v Warn | tee -a $LOG
echo "== step tune S" | tee -a $LOG
timeout 150 python3 experiments/gpu/step_tune.py --shapes S \
  --settings "default,swiglu 16x512,append 16 rows,xla step" 2>&1 | grep -v Warn \
  | tee -a $LOG
