"""Launch settings of pallas_step's kernels, timed end to end in one process (GPU).

  PYTHONPATH=. python3 experiments/gpu/step_tune.py [--shapes M,S] [--tiny]

For each setting the sampler decodes issue 3's shape (bench_jax: prompt 32, 96 new tokens,
bf16) with pallas_step's functions given other defaults (rows per program, blocks, warps), or
with every step kernel off (decode_step_kernels='xla'). The default runs first and last, so
the spread of one setting over the process shows in the table. (The logged call,
results/h200_2026-11-29j/tune, also ran a `residual` kernel, since removed, and its settings.)
"""

import argparse
import dataclasses
import functools

import jax

from ttc_jax.model import pallas_step
from ttc_jax.model.config import ModelConfig
from ttc_jax.sample import bench

SHAPES = {'M': dict(d_model=768, n_layers=12, n_heads=12, head_dim=64, d_ff=3072, batch=1024),
          'S': dict(d_model=256, n_layers=4, n_heads=4, head_dim=64, d_ff=1024, batch=4096),
          'tiny': dict(d_model=64, n_layers=2, n_heads=2, head_dim=16, d_ff=128, batch=16)}
ORIGINAL = {name: getattr(pallas_step, name) for name in ('qkv_append', 'swiglu')}
SETTINGS = {   # name: ({function: keyword defaults} or a replacement, config changes)
    'default': ({}, {}),
    'swiglu 16x512': ({'swiglu': dict(block_rows=16)}, {}),
    'swiglu 8x1024': ({'swiglu': dict(block_cols=1024)}, {}),
    'swiglu 4x512': ({'swiglu': dict(block_rows=4)}, {}),
    'swiglu 8 warps': ({'swiglu': dict(num_warps=8)}, {}),
    'append 4 rows': ({'qkv_append': dict(rows=4)}, {}),
    'append 16 rows': ({'qkv_append': dict(rows=16)}, {}),
    'append 2 warps': ({'qkv_append': dict(num_warps=2)}, {}),
    'xla step': ({}, dict(decode_step_kernels='xla')),
}


def apply_setting(patches):
  for name, fn in ORIGINAL.items():
    patch = patches.get(name)
    if patch is None:
      setattr(pallas_step, name, fn)
    elif callable(patch):
      setattr(pallas_step, name, patch)
    else:
      setattr(pallas_step, name, functools.partial(fn, **patch))


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--shapes', default='M,S')
  ap.add_argument('--settings', default=','.join(SETTINGS))
  ap.add_argument('--tiny', action='store_true', help='CPU smoke run: a tiny model, 2 tokens')
  args = ap.parse_args()
  print(jax.devices()[0], flush=True)
  names = args.settings.split(',')
  names = names + [names[0]] if len(names) > 1 else names
  for shape in (['tiny'] if args.tiny else args.shapes.split(',')):
    dims = dict(SHAPES[shape])
    batch = dims.pop('batch')
    new = 2 if args.tiny else 96
    base = ModelConfig(vocab_size=128, n_kv_heads=dims['n_heads'], max_len=32 + new,
                       dtype='bfloat16', param_dtype='bfloat16',
                       decode_step_kernels='pallas', **dims)
    for name in names:
      patches, changes = SETTINGS[name]
      apply_setting(patches)
      cfg = dataclasses.replace(base, **changes).validate()
      try:
        out = bench.bench_jax(cfg, batch, 32, new, 1 if args.tiny else 3, 0)
      except ValueError as e:   # a block that does not fit this shape
        print(f'{shape}/{batch} {name:>16}: {e}', flush=True)
        continue
      print(f'{shape}/{batch} {name:>16}: {out["decode_tokens_per_s"] / 1e6:.3f}M tok/s  '
            f'{out["decode_step_ms"]:.3f} ms/step', flush=True)
  apply_setting({})


if __name__ == '__main__':
  main()
