"""Sampling with rows sharded over the GPUs of one host, against one GPU (issue 10).

  PYTHONPATH=. python3 experiments/gpu/multi_gpu_sampling.py [--shapes S,M] [--tiny]
  PYTHONPATH=. python3 experiments/gpu/multi_gpu_sampling.py --options default,triton0 ...

For issue 3's S/4096 and M/1024 shapes (prompt 32, exactly 96 new tokens, temperature 1,
bf16, random weights): tokens/s on one GPU (no mesh), on all GPUs with the same batch (strong
scaling) and with the batch times the GPU count (weak scaling), rows over the mesh's 'data'
axis. The sampler runs its Pallas kernels per device's rows (`transformer.over_row_shards`);
the script also checks that the compiled decode holds no all-gather and that the same seed
gives the same tokens on one GPU and on all of them.

--options: XLA option sets (OPTIONS) under which to repeat only the same-seed check and the
timing at the same batch: which settings make the matmuls' rounding independent of the rows
per device. On one device the check decodes the first half of the rows alone against the
whole batch (what one of two devices would hold).
"""

import argparse
import dataclasses
import json

import jax
import numpy as np

from ttc_jax.model.config import ModelConfig
from ttc_jax.sample import bench
from ttc_jax.sample.decode import Sampler
from ttc_jax.sharding import MeshConfig, make_mesh

OPTIONS = {
    'default': {},
    'noautotune': {'xla_gpu_autotune_level': 0},
    'cublas': {'xla_gpu_enable_triton_gemm': False},
    'cublas0': {'xla_gpu_enable_triton_gemm': False, 'xla_gpu_autotune_level': 0},
    'triton': {'xla_gpu_triton_gemm_any': True, 'xla_gpu_cublas_fallback': False},
    'triton0': {'xla_gpu_triton_gemm_any': True, 'xla_gpu_cublas_fallback': False,
                'xla_gpu_autotune_level': 0},
    'deterministic': {'xla_gpu_deterministic_ops': True},
}
SHAPES = {'M': dict(d_model=768, n_layers=12, n_heads=12, head_dim=64, d_ff=3072, batch=1024),
          'S': dict(d_model=256, n_layers=4, n_heads=4, head_dim=64, d_ff=1024, batch=4096),
          'tiny': dict(d_model=64, n_layers=2, n_heads=2, head_dim=16, d_ff=128, batch=16)}


def tokens(cfg, batch, new, mesh, options=None, rows=None):
  """Tokens of one seeded decode (as bench_jax draws them), on one device or over mesh;
  rows: decode only the first `rows` of the batch's prompts (their samples are drawn from the
  same per-row streams)."""
  params, prompts, lengths = bench.bench_inputs(cfg, batch, 32)
  s = Sampler(cfg, eos_id=-1, mesh=mesh, compiler_options=options or None)
  st = s.start(params, prompts[:rows], lengths[:rows], jax.random.key(7),
               n_samples=1, cache_len=32 + new, temperature=1.0, max_new_tokens=new)
  gathers = None
  if mesh is not None:
    st = s.generate(params, st, donate=False)
    decode = [f for k, f in s._jits.items() if k[0].startswith('decode')][0]
    with jax.set_mesh(mesh):
      hlo = decode.lower(params, st, None).compile().as_text()
    gathers = [op for op in ('all-gather', 'all-to-all') if op in hlo]
  out = s.generate(params, st)
  return np.asarray(out.tokens_BxS), gathers


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--shapes', default='S,M')
  ap.add_argument('--tiny', action='store_true', help='CPU smoke run')
  ap.add_argument('--options', default='', help='comma-separated OPTIONS names')
  args = ap.parse_args()
  n = jax.device_count()
  print(jax.devices(), flush=True)
  mesh = make_mesh(MeshConfig(data=n))
  for shape in ['tiny'] if args.tiny else args.shapes.split(','):
    dims = dict(SHAPES[shape])
    batch = dims.pop('batch')
    new = 4 if args.tiny else 96
    cfg = ModelConfig(vocab_size=128, n_kv_heads=dims['n_heads'], max_len=32 + new,
                      dtype='bfloat16', param_dtype='bfloat16', **dims).validate()
    if args.tiny:
      cfg = dataclasses.replace(cfg, decode_attention='pallas', decode_step_kernels='pallas')
    if args.options:
      for name in args.options.split(','):
        opts = OPTIONS[name] if jax.default_backend() == 'gpu' else {}
        try:
          one, _ = tokens(cfg, batch, new, None, opts)
          if n > 1:
            same = np.all(one == tokens(cfg, batch, new, mesh, opts)[0], axis=1)
          else:   # one device: the first half of the rows decoded alone, as a 2-way split
            half = tokens(cfg, batch, new, None, opts, rows=batch // 2)[0]
            same = np.all(one[:batch // 2] == half, axis=1)
          r = bench.bench_jax(cfg, batch, 32, new, 1 if args.tiny else 2, 0,
                              mesh=mesh if n > 1 else None, xla_options=opts)
        except Exception as e:   # an option this XLA does not know
          print(f'{shape} {name}: failed: {str(e)[:200]}', flush=True)
          continue
        print(f'{shape}/{batch} {name:>13}: identical rows {np.mean(same):.4f}'
              f'  {n} device(s) {r["decode_tokens_per_s"] / 1e6:7.3f}M tok/s', flush=True)
      continue
    one, gathers = tokens(cfg, batch, new, None)
    many, gathers = tokens(cfg, batch, new, mesh)
    same = float(np.mean(np.all(one == many, axis=1)))
    print(f'{shape}/{batch}: rows with identical tokens on 1 and {n} devices: {same:.4f}; '
          f'gathers in the sharded decode: {gathers}', flush=True)
    reps = 1 if args.tiny else 3
    for label, b, m in (('1 device', batch, None), (f'{n} devices', batch, mesh),
                        (f'{n} devices, {n}x batch', n * batch, mesh)):
      r = bench.bench_jax(cfg, b, 32, new, reps, 0, mesh=m)
      print(json.dumps({'shape': shape, 'setting': label, 'batch': b, **r}), flush=True)
      print(f'{shape} {label:>22} B={b:<5}: {r["decode_tokens_per_s"] / 1e6:7.3f}M tok/s  '
            f'{r["decode_step_ms"]:.3f} ms/step  compile {r["compile_s"]:.1f} s  '
            f'attention {r["decode_attention_used"]}', flush=True)


if __name__ == '__main__':
  main()
