#!/bin/bash
# One device call: issue 3's table with this tree's defaults (S at batch 4096 and 256, M at
# 1024 and 256; HF generate beside), JSON to $OUT.
source experiments/gpu/sampling_common.sh
echo "== S" | tee -a $LOG
timeout 200 $B $S --batch 4096,256 --hf --out $OUT/table_S.json 2>&1 | grep -v Warn | summ \
  | tee -a $LOG
echo "== M" | tee -a $LOG
timeout 200 $B $M --batch 1024,256 --hf --out $OUT/table_M.json 2>&1 | grep -v Warn | summ \
  | tee -a $LOG
