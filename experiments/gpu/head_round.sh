#!/bin/bash
# One device call: the final norm folded into the unembedding (a row scale of the logits)
# and the pending token carried between decode steps, against the tree before them
# (cmp_base/ttc_old, packaged as in ab_inprocess.py), in one process, alternating (3 rounds,
# S/4096 and M/1024); then M/1024 in two more processes each, alternating, with the CUDA
# context set to spin while waiting (TF_CUDA_PLATFORM_GPU_DEVICE_SCHEDULE=spin) and not (the
# decode loop waits for its condition on the host every iteration).
source experiments/gpu/sampling_common.sh
ab_old "against the tree before the change" 240 --rounds 3
for env in default spin default spin; do
  if [ $env = spin ]; then export TF_CUDA_PLATFORM_GPU_DEVICE_SCHEDULE=spin
  else unset TF_CUDA_PLATFORM_GPU_DEVICE_SCHEDULE; fi
  ab_old "M/1024, schedule $env" 100 --rounds 1 --shapes M
done
