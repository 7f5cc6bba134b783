#!/bin/bash
# One device call: where the M/1024 decode step's time goes, by kernel and by GEMM shape
# (gemm_table.py over an XLA dump and a trace of the same run). (The logged call also ran
# ptxas over the dump's PTX files; the dump held none with the decode kernel, so that step
# printed nothing and is gone. Its gemms.txt predates gemm_table.py reading the tile configs
# and cuBLAS calls of this XLA's HLO: run it over the call's hlo.tgz for those.)
source experiments/gpu/sampling_common.sh
rm -rf /tmp/dump /tmp/trace
echo "== M/1024 with an HLO dump and a trace" | tee -a $LOG
XLA_FLAGS="--xla_dump_to=/tmp/dump --xla_dump_hlo_as_text --xla_dump_hlo_module_re=.*decode.*" \
  timeout 200 $B $M --batch 1024 --reps 1 --trace /tmp/trace --out /tmp/res/gemm_M.json \
  2>&1 | grep -v Warn | summ | tee -a $LOG
T=$(find /tmp/trace -name perfetto_trace.json.gz | head -1)
python3 experiments/gpu/gemm_table.py /tmp/dump "$T" 2>&1 | tee $OUT/gemms.txt | head -30
python3 experiments/trace_summary.py "$T" --top 20 > $OUT/trace.txt 2>&1
cd /tmp/dump && tar czf $OUT/hlo.tgz $(ls | grep decode | grep after_optimizations.txt | head -2)
