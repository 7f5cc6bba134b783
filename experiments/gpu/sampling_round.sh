#!/bin/bash
# One device call: sampler throughput (S, M, Qwen2.5-0.5B shape) with side-by-side decode
# variants, HF generate beside them, and Perfetto traces summarised. Logs go to $OUT.
set -o pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=. XLA_PYTHON_CLIENT_MEM_FRACTION=0.85 TQDM_DISABLE=1
VARIANTS=${VARIANTS:-reduce:1,einsum:1,reduce:0}
{ nvidia-smi; python3 -c 'import jax, flax; print("jax", jax.__version__, "flax", flax.__version__, jax.devices())'; } > "$OUT/env.txt" 2>&1
B="python3 -m ttc_jax.sample.bench --vocab 128 --prompt-len 32 --new-tokens 96 --dtype bfloat16 --reps 2 --hf --trace /tmp/trace"
timeout 200 $B --name S --d-model 256 --layers 4 --heads 4 --head-dim 64 --d-ff 1024 \
  --batch 4096,256 --variants "$VARIANTS" --out "$OUT/bench_S.json" 2>&1 | grep -v Warning | tee "$OUT/log_S.txt"
timeout 200 $B --name M --d-model 768 --layers 12 --heads 12 --head-dim 64 --d-ff 3072 \
  --batch 1024,256 --variants "${VARIANTS_M:-reduce:1,einsum:1}" --out "$OUT/bench_M.json" 2>&1 | grep -v Warning | tee "$OUT/log_M.txt"
timeout 170 python3 -m ttc_jax.sample.bench --name qwen2.5-0.5B-shape --family qwen2 \
  --d-model 896 --layers 24 --heads 14 --kv-heads 2 --head-dim 64 --d-ff 4864 --vocab 151936 \
  --prompt-len 64 --new-tokens 256 --dtype bfloat16 --reps 2 --hf --batch 256,32 \
  --variants "${VARIANTS_Q:-reduce:1,einsum:1}" --out "$OUT/bench_qwen.json" 2>&1 | grep -v Warning | tee "$OUT/log_qwen.txt"
for f in $(find /tmp/trace -name perfetto_trace.json.gz); do
  n=$(echo "$f" | sed 's#/tmp/trace/\([^/]*\)/.*#\1#')
  echo "== $n"; python3 experiments/trace_summary.py "$f" --top 30
done > "$OUT/traces.txt" 2>&1
tar czf "$OUT/traces.tgz" $(find /tmp/trace -name perfetto_trace.json.gz) 2>/dev/null
ls -la "$OUT"
