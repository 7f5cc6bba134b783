#!/bin/bash
# One device call for the one-block decode kernel (a window of up to 128 slots read in one
# masked block per program, no block loop) and XLA's concurrent command buffers, both now
# the sampler's defaults on a GPU:
#  1. the compiled decode path against the full forward pass (decode_check.py);
#  2. A/B in one process per shape, S/4096 and M/1024: the default, the old kernel settings
#     (k64x4x2), the old scheduling (xlhs), both old, the default again;
#  3. issue 3's table: S at 4096 and 256, M at 1024 and 256, HF generate beside.
source experiments/gpu/sampling_common.sh
echo "== decode check" | tee -a $LOG
timeout 90 python3 experiments/gpu/decode_check.py 2>&1 | grep -v Warn | tee -a $LOG
V=auto:1,auto:1:k64x4x2,auto:1:xlhs,auto:1:k64x4x2:xlhs,auto:1
for shape in "S 4096" "M 1024"; do
  set -- $shape
  echo "== A/B $1/$2" | tee -a $LOG
  timeout 150 $B ${!1} --batch $2 --reps 2 --out /tmp/res/ab_$1.json --variants $V \
    2>&1 | grep -v Warn | summ | tee -a $LOG
done
echo "== table" | tee -a $LOG
timeout 150 $B $S --batch 4096,256 --hf --out /tmp/res/bench_S.json \
  --variants auto:1 2>&1 | grep -v Warn | summ | tee -a $LOG
timeout 200 $B $M --batch 1024,256 --hf --out /tmp/res/bench_M.json \
  --variants auto:1 2>&1 | grep -v Warn | summ | tee -a $LOG
cd /tmp/res && tar czf $OUT/results.tgz *.json
