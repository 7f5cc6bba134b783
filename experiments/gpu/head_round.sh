#!/bin/bash
# One device call: the final norm folded into the unembedding (a row scale of the logits)
# and the pending token carried between decode steps, against the tree before them
# (cmp_base/ttc_old, packaged as in ab_inprocess.py), in one process, alternating (3 rounds,
# S/4096 and M/1024); then M/1024 in two more processes each, alternating, with the CUDA
# context set to spin while waiting (TF_CUDA_PLATFORM_GPU_DEVICE_SCHEDULE=spin) and not (the
# decode loop waits for its condition on the host every iteration).
source experiments/gpu/sampling_common.sh
PYTHONPATH=.:cmp_base timeout 240 python3 experiments/gpu/ab_inprocess.py --old ttc_old \
  --rounds 3 2>&1 | grep -v Warn | tee -a $LOG
for env in default spin default spin; do
  echo "== M/1024, schedule $env" | tee -a $LOG
  if [ $env = spin ]; then export TF_CUDA_PLATFORM_GPU_DEVICE_SCHEDULE=spin
  else unset TF_CUDA_PLATFORM_GPU_DEVICE_SCHEDULE; fi
  PYTHONPATH=.:cmp_base timeout 100 python3 experiments/gpu/ab_inprocess.py --old ttc_old \
    --rounds 1 --shapes M 2>&1 | grep -v Warn | tee -a $LOG
done
