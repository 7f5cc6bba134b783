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
source experiments/gpu/sampling_common.sh
V=auto:1,auto:1:xnocb,auto:1:xwhile,auto:1:xcublas,auto:1:xnocb:xcublas,auto:1:xexh
bench_SM $V
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
trace_summaries 14
cp /tmp/res/*.json $OUT/ 2>/dev/null
grep -h "idle gaps\|^==" $OUT/traces.txt | tail -30
