#!/bin/bash
# Device call: what bounds the attention kernel (kernel_probe.py) and whether a Pallas matmul
# with the layer's norm / SwiGLU / residual folded in beats XLA's matmul plus its separate
# elementwise kernels (fused_matmul.py), at issue 3's S and M shapes.
source experiments/gpu/sampling_common.sh
CFG=64:128:64:4:3,128:128:64:8:3,64:64:64:4:4,128:64:64:4:3,64:128:128:4:3,128:128:32:8:4,32:128:64:4:3,128:256:64:8:3
echo "== kernel probe" | tee -a $LOG
timeout 200 python3 experiments/gpu/kernel_probe.py 2>&1 | grep -v Warn | tee -a $LOG
echo "== fused matmul M" | tee -a $LOG
timeout 150 python3 experiments/gpu/fused_matmul.py --rows 1024 --d-model 768 --d-ff 3072 \
  --configs $CFG 2>&1 | grep -v Warn | tee -a $LOG
echo "== fused matmul S" | tee -a $LOG
timeout 150 python3 experiments/gpu/fused_matmul.py --rows 4096 --d-model 256 --d-ff 1024 \
  --configs $CFG 2>&1 | grep -v Warn | tee -a $LOG
