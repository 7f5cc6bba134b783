#!/bin/bash
# One device call: the fused matmul kernels alone against XLA (matmul_probe.py), then end to
# end at M/1024 and S/4096 against the same step with XLA's matmuls ('xla matmuls'), with
# some block settings (step_tune.py).
source experiments/gpu/sampling_common.sh
echo "== matmul probe" | tee -a $LOG
timeout 170 python3 experiments/gpu/matmul_probe.py 2>&1 | grep -v Warn | tee -a $LOG
echo "== step tune M" | tee -a $LOG
timeout 260 python3 experiments/gpu/step_tune.py --shapes M --settings "default,xla matmuls,\
default,xla matmuls,gate_up 128x128 w8,gate_up 64x64,o 64x64,down k128,stages 4" 2>&1 \
  | grep -v Warn | tee -a $LOG
echo "== step tune S" | tee -a $LOG
timeout 120 python3 experiments/gpu/step_tune.py --shapes S \
  --settings "default,xla matmuls,default,xla matmuls" 2>&1 | grep -v Warn | tee -a $LOG
