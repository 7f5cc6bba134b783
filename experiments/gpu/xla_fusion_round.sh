#!/bin/bash
# Device call: XLA fusion options that might fold the decode layer's elementwise kernels into
# its GEMMs (Triton fusions without a hero op, the fusion autotuner, the generic Triton emitter
# for GEMMs), S/4096 and M/1024, variants side by side in one process per shape, the default
# first and last for the spread.
source experiments/gpu/sampling_common.sh
V=auto:1,auto:1:xhero,auto:1:xfauto,auto:1:xgen,auto:1
for shape in "S 4096" "M 1024"; do
  set -- $shape
  echo "== $1/$2" | tee -a $LOG
  timeout 100 $B ${!1} --batch $2 --reps 2 --out $OUT/bench_$1.json --variants $V \
    2>&1 | grep -v Warn | summ | tee -a $LOG
done
