#!/bin/bash
# One device call for the folded pre-norms (the sampler's fused layers scale the qkv and
# gate/up products by each row's rsqrt(mean(x^2) + eps) instead of writing a normalised x):
#  1. the compiled decode path against the full forward pass (decode_check.py);
#  2. this tree against bd4b875 in one process, alternating (ab_inprocess.py; before the call:
#     mkdir cmp_base && git archive bd4b875 ttc_jax | tar -x -C cmp_base, then rename the
#     package to ttc_old as ab_inprocess.py says; delete cmp_base/ afterwards);
#  3. issue 3's table for this tree: S at 4096 and 256, M at 1024 and 256, HF generate beside,
#     each traced. Logs and a tgz of the JSON and trace summaries go to $OUT.
source experiments/gpu/sampling_common.sh
echo "== decode check" | tee -a $LOG
timeout 90 python3 experiments/gpu/decode_check.py 2>&1 | grep -v Warn | tee -a $LOG
ab_old "in-process A/B against bd4b875" 200
echo "== table" | tee -a $LOG
timeout 150 $B $S --batch 4096,256 --hf --trace /tmp/trace --out /tmp/res/bench_S.json \
  --variants auto:1 2>&1 | grep -v Warn | summ | tee -a $LOG
timeout 200 $B $M --batch 1024,256 --hf --trace /tmp/trace --out /tmp/res/bench_M.json \
  --variants auto:1 2>&1 | grep -v Warn | summ | tee -a $LOG
trace_summaries 16; mv "$OUT/traces.txt" /tmp/res/traces.txt
cd /tmp/res && tar czf $OUT/results.tgz *.json traces.txt
