#!/bin/bash
# One device call: XLA options for the sampler's compiled functions (Sampler.compiler_options),
# side by side in one process per shape, with a Perfetto trace of every variant.
# Question: the traces of 2026-11-29 show the GPU idle 200-500 us after each loop-condition
# read (10-12% of a decode), growing with the kernels per loop iteration. Is that the host
# re-recording CUDA graphs (command buffers) each iteration, and what do the GEMM options buy?
#  1. S/4096 and M/1024: default; no command buffers (xnocb); command buffers with WHILE
#     (xwhile); cuBLAS for every matmul (xcublas); nocb + cublas; exhaustive Triton tiling (xexh);
#  2. batch 256 (launch-bound): default, xnocb, xwhile;
#  3. the optimised HLO of the M/1024 decode loop (which fusions a step runs).
# Logs go to $OUT (log.txt, traces.txt, hlo/).
set -o pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/res
export PYTHONUNBUFFERED=1 PYTHONPATH=. XLA_PYTHON_CLIENT_MEM_FRACTION=0.6 TQDM_DISABLE=1
{ nvidia-smi; python3 -c 'import jax, flax; print("jax", jax.__version__, "flax", flax.__version__, jax.devices())'; } > "$OUT/env.txt" 2>&1
LOG=$OUT/log.txt
summ() { python3 experiments/gpu/bench_lines.py; }
B="python3 -m ttc_jax.sample.bench --vocab 128 --prompt-len 32 --new-tokens 96 --dtype bfloat16 --reps 3"
S="--name S --d-model 256 --layers 4 --heads 4 --head-dim 64 --d-ff 1024"
M="--name M --d-model 768 --layers 12 --heads 12 --head-dim 64 --d-ff 3072"
V=auto:1,auto:1:xnocb,auto:1:xwhile,auto:1:xcublas,auto:1:xnocb:xcublas,auto:1:xexh
echo "== S/4096" | tee -a $LOG
timeout 150 $B $S --batch 4096 --trace /tmp/trace --out /tmp/res/bench_S.json --variants $V \
  2>&1 | grep -v Warn | summ | tee -a $LOG
echo "== M/1024" | tee -a $LOG
timeout 200 $B $M --batch 1024 --trace /tmp/trace --out /tmp/res/bench_M.json --variants $V \
  2>&1 | grep -v Warn | summ | tee -a $LOG
echo "== batch 256" | tee -a $LOG
timeout 70 $B $S --batch 256 --out /tmp/res/bench_S256.json --variants auto:1,auto:1:xnocb,auto:1:xwhile \
  2>&1 | grep -v Warn | summ | tee -a $LOG
timeout 80 $B $M --batch 256 --out /tmp/res/bench_M256.json --variants auto:1,auto:1:xnocb,auto:1:xwhile \
  2>&1 | grep -v Warn | summ | tee -a $LOG
echo "== HLO dump, M/1024 default" | tee -a $LOG
XLA_FLAGS="--xla_dump_to=/tmp/hlo --xla_dump_hlo_as_text" timeout 60 $B $M --batch 1024 --reps 1 \
  --out /tmp/res/dump.json --variants auto:1 2>&1 | grep -v Warn | summ | tail -1 | tee -a $LOG
mkdir -p $OUT/hlo; for f in $(ls -S /tmp/hlo/*decode*after_optimizations.txt 2>/dev/null | head -2); do
  cp $f $OUT/hlo/; done; ls -la $OUT/hlo | tee -a $LOG
for f in $(find /tmp/trace -name perfetto_trace.json.gz | sort); do
  n=$(echo "$f" | sed 's#/tmp/trace/\([^/]*\)/.*#\1#')
  echo "== $n"; python3 experiments/trace_summary.py "$f" --top 14
done > "$OUT/traces.txt" 2>&1
cp /tmp/res/*.json $OUT/ 2>/dev/null
grep -h "idle gaps\|^==" $OUT/traces.txt | tail -30
