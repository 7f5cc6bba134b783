#!/bin/bash
# One device call: the sampler's defaults after the tuning round (sampling_tune.sh), measured
# for issue 3's table with HF generate beside them, then the study's first stages with them.
#  1. S/4096 and M/1024: the default ('auto': the Pallas kernel, one window, 2 steps per loop
#     iteration), Pallas with 1 step per iteration, and 'reduce' (the XLA attention, the old
#     default), HF generate beside them; batch 256 with the default;
#  2. `ttc run configs/arith_study.py --stages sample_bank` (pretrain xs, then the 500 x 2048
#     bank) with the default sampler;
#  3. greedy decoding of the trained xs with each decode attention (decode_parity.py).
# Logs and JSON go to $OUT.
source experiments/gpu/sampling_common.sh
export PYTHONPATH=.:/tmp/site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
echo "== S" | tee -a $LOG
timeout 120 $B $S --batch 4096 --hf --trace /tmp/trace --out /tmp/res/bench_S.json \
  --variants auto:1,pallas:1:s1,reduce:1 2>&1 | grep -v Warn | summ | tee -a $LOG
timeout 60 $B $S --batch 256 --out /tmp/res/bench_S256.json --variants auto:1 2>&1 | grep -v Warn | summ | tee -a $LOG
echo "== M" | tee -a $LOG
timeout 150 $B $M --batch 1024 --hf --trace /tmp/trace --out /tmp/res/bench_M.json \
  --variants auto:1,pallas:1:s1,reduce:1 2>&1 | grep -v Warn | summ | tee -a $LOG
timeout 60 $B $M --batch 256 --out /tmp/res/bench_M256.json --variants auto:1 2>&1 | grep -v Warn | summ | tee -a $LOG
echo "== study: sample_bank stage with the default sampler" | tee -a $LOG
XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 timeout 260 python3 -m ttc_jax.cli run configs/arith_study.py \
  --config.workdir=/tmp/study --stages sample_bank > /tmp/res/study_log.txt 2>&1
echo "study rc=$?" | tee -a $LOG
timeout 30 python3 -m ttc_jax.cli stages /tmp/study/arith_study 2>&1 | tee -a $LOG
python3 -c "
import json; s = json.load(open('/tmp/study/arith_study/summary.json'))
print(json.dumps({k: s[k] for k in ('pretrain_xs', 'sample_bank') if k in s}, indent=1)[:2500])" 2>&1 | tee -a $LOG
echo "== greedy decoding of xs with each decode attention" | tee -a $LOG
timeout 150 python3 experiments/gpu/decode_parity.py /tmp/study/arith_study --member xs 2>&1 | grep -v Warn | tee -a $LOG
trace_summaries 30
cp /tmp/study/arith_study/sample_bank/bank_xs.json $OUT/ 2>/dev/null; cp /tmp/res/study_log.txt $OUT/ 2>/dev/null
tar czf "$OUT/results.tgz" -C /tmp res $(find /tmp/trace -name perfetto_trace.json.gz) 2>/dev/null
