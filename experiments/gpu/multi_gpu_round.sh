#!/bin/bash
# One device call on nvidia-h200-x2: multi_gpu_sampling.py (rows over both GPUs against one).
source experiments/gpu/sampling_common.sh
echo "== multi-GPU sampling" | tee -a $LOG
timeout 480 python3 experiments/gpu/multi_gpu_sampling.py 2>&1 | grep -v Warn > /tmp/res/multi.txt
grep '^{' /tmp/res/multi.txt > $OUT/multi.jsonl; grep -v '^{' /tmp/res/multi.txt | tee -a $LOG
