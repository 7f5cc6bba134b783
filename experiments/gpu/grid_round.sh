#!/bin/bash
# (Ran on 038e84a; the :rows option was removed after it.)
# One device call: the decode attention's grid with rows varying fastest
# (ModelConfig.decode_kernel '...:rows') against the default (kv heads fastest), alone
# (pallas_decode's micro-benchmark) and end to end at issue 3's shapes, each variant twice in
# one process; then the M/1024 default with 1, 2 and 4 steps per loop iteration (the cost of
# a loop-condition round trip to the host), and one traced M/1024 decode with an HLO dump for
# the step's small kernels (top 40).
source experiments/gpu/sampling_common.sh
K="python3 -m ttc_jax.model.pallas_decode --head-dim 64 --seq 128 --iters 100"
for live in 80 33-128; do
  echo "== kernel alone, M (1024 rows, 12 heads), live $live" | tee -a $LOG
  timeout 60 $K --batch 1024 --kv-heads 12 --layers 12 --live $live \
    --configs 128:4:2,128:4:2:rows,128:4:1:rows,128:4:2,128:4:2:rows 2>&1 | grep -v Warn | tee -a $LOG
  echo "== kernel alone, S (4096 rows, 4 heads), live $live" | tee -a $LOG
  timeout 60 $K --batch 4096 --kv-heads 4 --layers 4 --live $live \
    --configs 128:4:2,128:4:2:rows,128:4:1:rows,128:4:2,128:4:2:rows 2>&1 | grep -v Warn | tee -a $LOG
done
R=auto:1:k128x4x2xrows
variants_round grid 240 auto:1,$R,auto:1,$R "M 1024" "S 4096"
variants_round loop 200 auto:1:s1,auto:1:s2,auto:1:s4,auto:1:s2 "M 1024"
rm -rf /tmp/dump /tmp/trace
echo "== M/1024 default, traced, HLO dump" | tee -a $LOG
XLA_FLAGS="--xla_dump_to=/tmp/dump --xla_dump_hlo_as_text --xla_dump_hlo_module_re=.*decode.*" \
  timeout 200 $B $M --batch 1024 --reps 1 --trace /tmp/trace --out /tmp/res/trace_M.json \
  2>&1 | grep -v Warn | summ | tee -a $LOG
trace_summaries 40
cd /tmp/dump && tar czf $OUT/hlo.tgz $(ls | grep decode | grep after_optimizations.txt | head -3)
