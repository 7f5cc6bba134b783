#!/bin/bash
# One device call: where the M/1024 decode step's time goes, by kernel and by GEMM shape
# (gemm_table.py over an XLA dump and a trace of the same run), and the registers and
# spills ptxas reports for the decode-attention kernel's PTX, when the dump holds it.
source experiments/gpu/sampling_common.sh
rm -rf /tmp/dump /tmp/trace
echo "== M/1024 with an HLO dump and a trace" | tee -a $LOG
XLA_FLAGS="--xla_dump_to=/tmp/dump --xla_dump_hlo_as_text --xla_dump_hlo_module_re=.*decode.*" \
  timeout 200 $B $M --batch 1024 --reps 1 --trace /tmp/trace --out /tmp/res/gemm_M.json \
  2>&1 | grep -v Warn | summ | tee -a $LOG
ls /tmp/dump | head -40 > $OUT/dump_files.txt
T=$(find /tmp/trace -name perfetto_trace.json.gz | head -1)
python3 experiments/gpu/gemm_table.py /tmp/dump "$T" 2>&1 | tee $OUT/gemms.txt | head -30
python3 experiments/trace_summary.py "$T" --top 20 > $OUT/trace.txt 2>&1
echo "== ptxas" | tee -a $LOG
PTXAS=$(python3 -c 'import nvidia.cuda_nvcc as n, os; print(os.path.join(list(n.__path__)[0], "bin", "ptxas"))' 2>/dev/null)
[ -x "$PTXAS" ] || PTXAS=$(find / -name ptxas -type f 2>/dev/null | head -1)
echo "ptxas: $PTXAS" | tee -a $LOG
for f in $(ls /tmp/dump/*decode*.ptx 2>/dev/null | head -4); do
  echo "-- $f" >> $OUT/ptxas.txt
  "$PTXAS" -v -arch=sm_90a "$f" -o /dev/null 2>&1 | grep -B1 -A2 -i "decode_attention" >> $OUT/ptxas.txt
done
grep -l "decode_attention" /tmp/dump/*.ptx 2>/dev/null | head -3 | tee -a $LOG
cat $OUT/ptxas.txt 2>/dev/null | head -20 | tee -a $LOG
cd /tmp/dump && tar czf $OUT/hlo.tgz $(ls | grep decode | grep after_optimizations.txt | head -2) 2>/dev/null
