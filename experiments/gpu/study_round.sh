#!/bin/bash
# The arith_study on one GPU, in device calls of at most 10 minutes.
#   MODE=start   install the carried wheels, launch `ttc run` in its own session (it outlives
#                the call while the machine stays held), wait up to WAIT seconds, collect;
#   MODE=collect wait up to WAIT seconds for the same run to end, run the report, collect.
# Everything the run writes lives under /tmp/study on the device; $OUT gets the log, the
# stage table, summary.json, report.md and a tarball of figures and result tables.
set -o pipefail; CALL_T0=$(date +%s)
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
PY=${PY:-python3}; MODE=${MODE:-start}; WAIT=${WAIT:-540}; S=/tmp/study; R=$S/runs/${RUN:-arith_study}
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
if [ "$MODE" = start ]; then
  mkdir -p $S
  [ -n "$NO_WHEELS" ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  { nvidia-smi -L; python3 -c 'import jax; print("jax", jax.__version__, jax.devices())'; } > $S/env.txt 2>&1
  cat > $S/go.sh <<EOS
cd $PWD
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TQDM_DISABLE=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.9
date +%s > $S/t0
timeout ${LIMIT:-1080} $PY -m ttc_jax.cli run ${CONFIG:-configs/arith_study.py} --config.workdir=$S/runs $OVERRIDES > $S/log.txt 2>&1
echo "run rc=\$?" >> $S/log.txt
date +%s > $S/t1
timeout 120 $PY -m ttc_jax.cli report $R > $S/report_log.txt 2>&1
touch $S/DONE
EOS
  setsid nohup bash $S/go.sh > /dev/null 2>&1 < /dev/null &
fi
for i in $(seq 1 $WAIT); do [ -f $S/DONE ] && break; sleep 1; done
export PYTHONPATH=/tmp/site:$PWD
timeout 30 $PY -m ttc_jax.cli stages $R > $S/stages.txt 2>&1
cp $S/env.txt $S/log.txt $S/stages.txt $OUT/ 2>/dev/null
cp $R/summary.json $OUT/ 2>/dev/null   # stages finished so far (greedy accuracy, bank pass@1)
[ -f $S/DONE ] && cp $S/report_log.txt $R/report.md $OUT/ 2>/dev/null
(cd $R 2>/dev/null && tar czf $OUT/artifacts.tgz $(ls -d figures */summary.json */*.json analysis/*.parquet search/results.parquet revisions/results.parquet revisions/*.json prm/*.json orm/*.json 2>/dev/null) 2>/dev/null)
echo "done=$([ -f $S/DONE ] && echo yes || echo no) elapsed=$(( $(date +%s) - $(cat $S/t0 2>/dev/null || date +%s) ))s"
cat $S/stages.txt | tail -25; grep -n -i -A8 traceback $S/log.txt | tail -30; tail -5 $S/log.txt
# Time left in this call after the run ended: the sampler at the S and M shapes (no HF), the
# default decode attention against the opt-in Pallas kernel, side by side.
if [ "$MODE" = collect ] && [ -f $S/DONE ] && [ $(( $(date +%s) - CALL_T0 )) -lt $(( WAIT - 220 )) ]; then
  B="python3 -m ttc_jax.sample.bench --vocab 128 --prompt-len 32 --new-tokens 96 --dtype bfloat16 --reps 2 --variants auto:1,pallas:1"
  timeout 100 $B --name S --d-model 256 --layers 4 --heads 4 --head-dim 64 --d-ff 1024 --batch 4096 --out $OUT/bench_S.json 2>&1 | grep -v Warn | tee $OUT/bench_log.txt
  timeout 100 $B --name M --d-model 768 --layers 12 --heads 12 --head-dim 64 --d-ff 3072 --batch 1024 --out $OUT/bench_M.json 2>&1 | grep -v Warn | tee -a $OUT/bench_log.txt
fi
