#!/bin/bash
# One device call: this tree's sampler against the code before this session (b9a759f,
# unpacked in cmp_base/ for this call), process against process, alternating, because
# separate machines and processes differ by up to 5% (2026-11-29f, kv/).
#  1. the compiled decode path against the full forward pass (decode_check.py);
#  2. the kernel alone, both trees, at the S and M attention shapes (80 live slots);
#  3. S/4096 and M/1024 twice, alternating trees (HF generate beside the first round), then
#     batch 256 once per tree; a trace of this tree's first round.
# Before the call, unpack the old tree (and delete cmp_base/ afterwards; it is not committed):
#   mkdir cmp_base && git archive b9a759f ttc_jax experiments/gpu/bench_lines.py | tar -x -C cmp_base
# For experiments/gpu/ab_inprocess.py (both versions in one process), also rename its package:
#   cp -r cmp_base/ttc_jax cmp_base/ttc_old
#   grep -rl ttc_jax cmp_base/ttc_old | xargs sed -i s/ttc_jax/ttc_old/g
# Logs go to $OUT.
source experiments/gpu/sampling_common.sh
echo "== decode check" | tee -a $LOG
PYTHONPATH=. timeout 90 python3 experiments/gpu/decode_check.py 2>&1 | grep -v Warn | tee -a $LOG
for tree in . cmp_base; do for shape in "4096 4 4" "1024 12 12"; do set -- $shape
  echo "== kernel $tree B=$1 K=$2" | tee -a $LOG
  PYTHONPATH=$tree timeout 60 python3 -m ttc_jax.model.pallas_decode --batch $1 --kv-heads $2 \
    --seq 128 --live 80 --layers $3 --configs 64:4:2 2>&1 | grep -v Warn | tail -1 | tee -a $LOG
done; done
for round in 1 2; do for tree in . cmp_base; do
  X=""; [ $round = 1 ] && [ $tree = . ] && X="--hf --trace /tmp/trace"
  echo "== round $round tree $tree" | tee -a $LOG
  PYTHONPATH=$tree timeout 100 $B $S --batch 4096 $X --out /tmp/res/bench_S_${round}_$tree.json \
    --variants auto:1 2>&1 | grep -v Warn | summ | tee -a $LOG
  PYTHONPATH=$tree timeout 120 $B $M --batch 1024 $X --out /tmp/res/bench_M_${round}_$tree.json \
    --variants auto:1 2>&1 | grep -v Warn | summ | tee -a $LOG
done; done
for tree in . cmp_base; do
  echo "== batch 256 tree $tree" | tee -a $LOG
  PYTHONPATH=$tree timeout 60 $B $S --batch 256 --out /tmp/res/bench_S256_$tree.json --variants auto:1 \
    2>&1 | grep -v Warn | summ | tail -1 | tee -a $LOG
  PYTHONPATH=$tree timeout 60 $B $M --batch 256 --out /tmp/res/bench_M256_$tree.json --variants auto:1 \
    2>&1 | grep -v Warn | summ | tail -1 | tee -a $LOG
done
trace_summaries 16; mv "$OUT/traces.txt" /tmp/res/traces.txt
cd /tmp/res && tar czf $OUT/results.tgz *.json traces.txt && cp $LOG /tmp/res/log_copy.txt
