#!/bin/bash
# Device call: nano-batches (Sampler.nano_batches: row groups with their own cache buffers,
# decoded as independent chains) with and without XLA's concurrent command buffers, S/4096
# and M/1024, variants side by side in one process per shape, the default first and last.
source experiments/gpu/sampling_common.sh
V=auto:1,auto:1:xconc,auto:1:n2,auto:1:n2:xconc,auto:1:n4:xconc,auto:1:n2:xconc:xwhile,auto:1
for shape in "S 4096" "M 1024"; do
  set -- $shape
  echo "== $1/$2" | tee -a $LOG
  timeout 280 $B ${!1} --batch $2 --reps 2 --out $OUT/bench_$1.json --variants $V \
    2>&1 | grep -v Warn | summ | tee -a $LOG
done
