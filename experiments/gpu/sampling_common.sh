# Sourced by the sampling scripts: a device call's preamble ($OUT, $LOG, env.txt, the
# environment) and issue 3's benchmark command and shapes ($B, $S, $M; summ filters output).
set -o pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/res
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-.} XLA_PYTHON_CLIENT_MEM_FRACTION=0.6 TQDM_DISABLE=1
{ nvidia-smi; python3 -c 'import jax, flax; print("jax", jax.__version__, "flax", flax.__version__, jax.devices())'; } > "$OUT/env.txt" 2>&1
LOG=$OUT/log.txt
summ() { python3 experiments/gpu/bench_lines.py; }
B="python3 -m ttc_jax.sample.bench --vocab 128 --prompt-len 32 --new-tokens 96 --dtype bfloat16 --reps 3"
S="--name S --d-model 256 --layers 4 --heads 4 --head-dim 64 --d-ff 1024"
M="--name M --d-model 768 --layers 12 --heads 12 --head-dim 64 --d-ff 3072"

# bench_SM VARIANTS: S/4096 and M/1024 with those variants side by side, each traced.
bench_SM() {
  echo "== S/4096" | tee -a $LOG
  timeout 150 $B $S --batch 4096 --trace /tmp/trace --out /tmp/res/bench_S.json --variants $1 \
    2>&1 | grep -v Warn | summ | tee -a $LOG
  echo "== M/1024" | tee -a $LOG
  timeout 200 $B $M --batch 1024 --trace /tmp/trace --out /tmp/res/bench_M.json --variants $1 \
    2>&1 | grep -v Warn | summ | tee -a $LOG
}

# trace_summaries [TOP]: every Perfetto trace under /tmp/trace, summarised into $OUT/traces.txt.
trace_summaries() {
  for f in $(find /tmp/trace -name perfetto_trace.json.gz | sort); do
    n=$(echo "$f" | sed 's#/tmp/trace/\([^/]*\)/.*#\1#')
    echo "== $n"; python3 experiments/trace_summary.py "$f" --top ${1:-16}
  done > "$OUT/traces.txt" 2>&1
}

# variants_round PREFIX TIMEOUT VARIANTS "S 4096" ["M 1024" ...]: each shape in its own
# process with the variants side by side (2 reps), JSON to $OUT/PREFIX_<model>.json.
variants_round() {
  local prefix=$1 limit=$2 variants=$3; shift 3
  for shape in "$@"; do
    set -- $shape
    echo "== $1/$2" | tee -a $LOG
    timeout $limit $B ${!1} --batch $2 --reps 2 --out $OUT/${prefix}_$1.json \
      --variants $variants 2>&1 | grep -v Warn | summ | tee -a $LOG
  done
}

# ab_old LABEL TIMEOUT [ARGS...]: this tree against the one in cmp_base/ttc_old (see
# ab_inprocess.py) in one process, logged under "== LABEL"; ARGS go to ab_inprocess.py
# (default: --rounds 2).
ab_old() {
  local label=$1 limit=$2; shift 2
  echo "== $label" | tee -a $LOG
  PYTHONPATH=.:cmp_base timeout $limit python3 experiments/gpu/ab_inprocess.py --old ttc_old \
    ${@:---rounds 2} 2>&1 | grep -v Warn | tee -a $LOG
}
