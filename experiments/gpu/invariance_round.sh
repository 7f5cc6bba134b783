#!/bin/bash
# One device call: which XLA options make a row's tokens independent of how many rows share
# its device (multi_gpu_sampling.py --options; on one GPU the first half of M/1024's rows
# decoded alone against the whole batch), with the speed under each.
source experiments/gpu/sampling_common.sh
echo "== same seed, half the rows alone, under XLA options" | tee -a $LOG
timeout 300 python3 experiments/gpu/multi_gpu_sampling.py --shapes M \
  --options default,noautotune,cublas0,triton0,deterministic 2>&1 | grep -v Warn | tee -a $LOG
