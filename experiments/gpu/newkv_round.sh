#!/bin/bash
# One device call for the decode kernel taking the step's own key and value as inputs (the
# cache write then waits only for the kernel's read, and runs beside the layer's matmuls):
#  1. the compiled decode path against the full forward pass (decode_check.py);
#  2. this tree against d312d12 in one process, alternating (ab_inprocess.py; before the call:
#     mkdir cmp_base && git archive d312d12 ttc_jax | tar -x -C cmp_base, then rename the
#     package to ttc_old as ab_inprocess.py says; cmp_base/ is not committed);
#  3. issue 3's table for this tree: S at 4096 and 256, M at 1024 and 256, HF generate beside.
source experiments/gpu/sampling_common.sh
echo "== decode check" | tee -a $LOG
timeout 100 python3 experiments/gpu/decode_check.py 2>&1 | grep -v Warn | tee -a $LOG
echo "== in-process A/B against d312d12" | tee -a $LOG
PYTHONPATH=.:cmp_base timeout 200 python3 experiments/gpu/ab_inprocess.py --old ttc_old \
  --rounds 2 2>&1 | grep -v Warn | tee -a $LOG
echo "== table" | tee -a $LOG
timeout 150 $B $S --batch 4096,256 --hf --out /tmp/res/bench_S.json \
  --variants auto:1 2>&1 | grep -v Warn | summ | tee -a $LOG
timeout 200 $B $M --batch 1024,256 --hf --out /tmp/res/bench_M.json \
  --variants auto:1 2>&1 | grep -v Warn | summ | tee -a $LOG
cd /tmp/res && tar czf $OUT/results.tgz *.json
