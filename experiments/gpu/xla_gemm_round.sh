#!/bin/bash
# Device call: XLA's Hopper GEMM options (warp specialisation, Triton for every GEMM) on the
# sampler's compiled functions, S/4096 and M/1024, variants side by side in one process per
# shape, the default twice (first and last) for the spread; then traces of the default and
# warp specialisation. (The logged call also asked for TMA, an option jaxlib 0.11.2 lacks.)
source experiments/gpu/sampling_common.sh
V=auto:1,auto:1:xws,auto:1:xgany,auto:1
for shape in "S 4096" "M 1024"; do
  set -- $shape
  echo "== $1/$2" | tee -a $LOG
  timeout 230 $B ${!1} --batch $2 --out $OUT/bench_$1.json --variants $V \
    2>&1 | grep -v Warn | summ | tee -a $LOG
done
echo "== traces (M/1024: default, warp specialisation)" | tee -a $LOG
timeout 100 $B $M --batch 1024 --reps 1 --trace /tmp/trace --out /tmp/res/bench_Mt.json \
  --variants auto:1,auto:1:xws 2>&1 | grep -v Warn | summ | tee -a $LOG
trace_summaries 12
echo "== kernel probe" | tee -a $LOG
timeout 120 python3 experiments/gpu/kernel_probe.py 2>&1 | grep -v Warn | tee -a $LOG
