"""Two versions of the sampler timed in one process, alternating (the A/B of a code change).

  PYTHONPATH=.:OLD_DIR python3 experiments/gpu/ab_inprocess.py --old ttc_old [--rounds 3]

OLD_DIR holds an earlier tree of the package renamed to `--old` (e.g. `git archive REV
ttc_jax | tar -x -C OLD_DIR`, then rename the package and its imports), so both import side by
side. Each round times S/4096 and M/1024 (issue 3's shapes) with each version's default
sampler; separate processes and machines differ by up to 5%, one process far less.
"""

import argparse
import importlib

import jax

SHAPES = {'S': dict(d_model=256, n_layers=4, n_heads=4, head_dim=64, d_ff=1024, batch=4096),
          'M': dict(d_model=768, n_layers=12, n_heads=12, head_dim=64, d_ff=3072, batch=1024)}


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--old', required=True)
  ap.add_argument('--rounds', type=int, default=3)
  ap.add_argument('--old-first', action='store_true', help='time the old version first')
  ap.add_argument('--shapes', default='S,M')
  ap.add_argument('--new-tokens', type=int, default=96,
                  help='tokens generated after the 32-token prompt (cache length 32 + this)')
  args = ap.parse_args()
  pkgs = {'new': 'ttc_jax', 'old': args.old}
  if args.old_first:
    pkgs = {'old': args.old, 'new': 'ttc_jax'}
  mods = {k: (importlib.import_module(f'{p}.model.config'), importlib.import_module(
      f'{p}.sample.bench')) for k, p in pkgs.items()}
  print(f'{jax.devices()[0]}; bandwidth {mods["new"][1].measure_bandwidth() / 1e12:.2f} TB/s')
  for name in args.shapes.split(','):
    shape = dict(SHAPES[name])
    batch = shape.pop('batch')
    rates = {k: [] for k in pkgs}
    for r in range(args.rounds):
      for k, (config, bench) in mods.items():
        cfg = config.ModelConfig(vocab_size=128, n_kv_heads=shape['n_heads'],
                                 max_len=32 + args.new_tokens, dtype='bfloat16',
                                 param_dtype='bfloat16', **shape).validate()
        out = bench.bench_jax(cfg, batch, 32, args.new_tokens, 3, 0)
        rates[k].append(out['decode_tokens_per_s'] / 1e6)
        print(f'{name}/{batch} round {r} {k}: {rates[k][-1]:.3f}M tok/s  '
              f'{out["decode_step_ms"]:.3f} ms/step', flush=True)
    best = {k: max(v) for k, v in rates.items()}
    print(f'{name}/{batch}: best new {best["new"]:.3f}M, best old {best["old"]:.3f}M, '
          f'new/old {best["new"] / best["old"]:.3f}', flush=True)


if __name__ == '__main__':
  main()
