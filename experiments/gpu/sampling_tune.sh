#!/bin/bash
# One device call: tune the Pallas decode kernel and the decode loop, then time them end to end.
#  1. kernel alone at the S and M attention shapes, launch settings side by side;
#  2. the sampler at S/4096 and M/1024: the XLA default, Pallas with 8 windows (the old
#     opt-in), Pallas with one window, 2 and 4 decode steps per loop iteration, the kernel's
#     best settings from 1; a Perfetto trace of the first variant;
#  3. the same Pallas variants with XLA's WHILE/CONDITIONAL command buffers (the decode loop
#     on the device, no host round trip per iteration), in a second process;
#  4. long contexts: M at prompt 512 + 512 new tokens, and the Qwen2.5-0.5B shape (grouped
#     queries), default against Pallas.
# Logs and JSON go to $OUT (log.txt, traces.txt, results.tgz, env.txt).
# Its 2026-11-29 run (experiments/results/h200_2026-11-29e/tune) also timed a kernel variant
# reading 2 or 4 kv heads per program (a fourth setting); it was slower and was removed.
# Since then the sampler always gives the Pallas kernel one window, so its `pallas:1:w8`
# variant now runs with one window too.
source experiments/gpu/sampling_common.sh
KERNEL=${KERNEL:-64:4:2,32:4:2,128:4:2,64:2:2,64:8:2,64:4:1,64:4:3}
pick() { grep '^ *pallas' "$1" | sort -g -k3 | head -1 | awk '{sub(/:$/, "", $2); gsub(/:/, "x", $2); print $2}'; }
echo "== kernel S" | tee -a $LOG
timeout 120 python3 -m ttc_jax.model.pallas_decode --batch 4096 --kv-heads 4 --seq 128 --live 80 \
  --configs $KERNEL 2>&1 | grep -v Warn | tee /tmp/res/kernel_S.txt | tee -a $LOG
echo "== kernel M" | tee -a $LOG
timeout 120 python3 -m ttc_jax.model.pallas_decode --batch 1024 --kv-heads 12 --seq 128 --live 80 \
  --layers 12 --configs $KERNEL 2>&1 | grep -v Warn | tee /tmp/res/kernel_M.txt | tee -a $LOG
KS=$(pick /tmp/res/kernel_S.txt); KM=$(pick /tmp/res/kernel_M.txt)
echo "best kernel settings: S k$KS, M k$KM" | tee -a $LOG
echo "== e2e S/4096" | tee -a $LOG
timeout 150 $B $S --batch 4096 --trace /tmp/trace --out /tmp/res/bench_S.json \
  --variants pallas:1,auto:1,pallas:1:w8,pallas:1:s2,pallas:1:s4,pallas:1:s4:k$KS 2>&1 | grep -v Warn | summ | tee -a $LOG
echo "== e2e M/1024" | tee -a $LOG
timeout 170 $B $M --batch 1024 --trace /tmp/trace --out /tmp/res/bench_M.json \
  --variants pallas:1,auto:1,pallas:1:s2,pallas:1:s4,pallas:1:s4:k$KM 2>&1 | grep -v Warn | summ | tee -a $LOG
echo "== e2e with WHILE/CONDITIONAL command buffers" | tee -a $LOG
XLA_FLAGS="--xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL" timeout 100 $B $S --batch 4096 \
  --out /tmp/res/bench_S_cb.json --variants pallas:1,pallas:1:s4:k$KS 2>&1 | grep -v Warn | summ | tail -4 | tee -a $LOG
XLA_FLAGS="--xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL" timeout 100 $B $M --batch 1024 \
  --out /tmp/res/bench_M_cb.json --variants pallas:1,pallas:1:s4:k$KM 2>&1 | grep -v Warn | summ | tail -4 | tee -a $LOG
echo "== long context: M, prompt 512 + 512 new, batch 128" | tee -a $LOG
timeout 120 python3 -m ttc_jax.sample.bench $M --vocab 128 --prompt-len 512 --new-tokens 512 --dtype bfloat16 \
  --reps 1 --batch 128 --out /tmp/res/bench_M_long.json --variants auto:1,pallas:1,pallas:1:s4:k$KM 2>&1 | grep -v Warn | summ | tee -a $LOG
echo "== Qwen2.5-0.5B shape, prompt 64 + 256 new, batch 256" | tee -a $LOG
timeout 150 python3 -m ttc_jax.sample.bench --name qwen2.5-0.5B-shape --family qwen2 --d-model 896 --layers 24 \
  --heads 14 --kv-heads 2 --head-dim 64 --d-ff 4864 --vocab 151936 --prompt-len 64 --new-tokens 256 \
  --dtype bfloat16 --reps 1 --batch 256 --out /tmp/res/bench_qwen.json --variants auto:1,pallas:1,pallas:1:s4 2>&1 | grep -v Warn | summ | tee -a $LOG
trace_summaries 30
tar czf "$OUT/results.tgz" -C /tmp res $(find /tmp/trace -name perfetto_trace.json.gz) 2>/dev/null
grep -v '^ *pallas\|^backend\|^ *reference' $LOG | tail -60
