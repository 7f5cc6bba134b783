"""Filter for `ttc_jax.sample.bench` output: one short line per JSON run record.

  python3 -m ttc_jax.sample.bench ... 2>&1 | python3 experiments/gpu/bench_lines.py

Sampler runs print batch, variant, the attention used, steps per loop iteration, tokens/s,
time per decode step, roofline fraction, compile seconds and windows; HF runs their tokens/s
(or their error); other non-JSON lines pass through.
"""

import json
import sys


def main():
  for line in sys.stdin:
    if not line.startswith('{'):
      if line.strip():
        print(line.rstrip())
      continue
    r = json.loads(line)
    if 'error' in r:
      print(f"{r['batch']:>5} {r.get('variant', '')} failed: {r['error'][:300]}")
    elif 'variant' in r:
      print(f"{r['batch']:>5} {r['variant']:<24} {r.get('decode_attention_used', ''):<7} "
            f"s{r.get('steps_per_loop', '')} {r['decode_tokens_per_s'] / 1e6:7.3f}M tok/s  "
            f"{r['decode_step_ms']:.3f} ms/step  roof {r['fraction_of_roofline']:.3f}  "
            f"compile {r['compile_s']:5.1f} s  windows {r['n_windows']}")
    elif 'hf_tokens_per_s' in r:
      print(f"{r['batch']:>5} HF generate  {r['hf_tokens_per_s'] / 1e6:7.4f}M tok/s")
    elif 'hf_error' in r:
      print(line.strip()[:300])
    sys.stdout.flush()


if __name__ == '__main__':
  main()
