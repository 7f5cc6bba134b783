"""The decode step's GEMMs: XLA against JAX's Mosaic GPU Hopper matmul (GPU probe).

  PYTHONPATH=. python3 experiments/gpu/mgpu_gemm_probe.py

For each projection of a decode step at issue 3's M/1024 and S/4096 shapes (bf16), times
XLA's dot against `jax.experimental.pallas.ops.gpu.hopper_matmul_mgpu.matmul` (TMA loads,
warp-specialised wgmma pipeline, persistent grid; optional C added in its epilogue) at several
tilings. o and down add the residual (C), as the layer does. Each function is called 20 times
on distinct inputs inside one jit, so launch gaps are amortised as in the decode loop; us per
call and TFLOP/s. The largest difference from XLA's result is printed relative to its largest
value.
"""

import itertools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.pallas.ops.gpu import hopper_matmul_mgpu as hm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kernel_probe  # noqa: E402  (its timer)

CHAIN = 20
# name: (rows M, contraction K, columns N, adds the residual)
SHAPES = {
    'M qkv': (1024, 768, 2304, False), 'M o': (1024, 768, 768, True),
    'M gate_up': (1024, 768, 6144, False), 'M down': (1024, 3072, 768, True),
    'S qkv': (4096, 256, 768, False), 'S o': (4096, 256, 256, True),
    'S gate_up': (4096, 256, 2048, False), 'S down': (4096, 1024, 256, True),
}
DIM = hm.MatmulDimension


def configs():
  for tm, tn, wg, steps in itertools.product((64, 128), (64, 128), (DIM.N, DIM.M), (4,)):
    yield hm.TuningConfig(tile_m=tm, tile_n=tn, tile_k=64, max_concurrent_steps=steps,
                          epi_tile_m=64, epi_tile_n=64, grid_minor_dim=DIM.N,
                          grid_tile_width=1, wg_dimension=wg)


def timed(fn, *args):
  """(us per call of the chain, the chain's outputs)."""
  return kernel_probe.timed(fn, *args, iters=10) / CHAIN, fn(*args)


def main():
  print(jax.devices()[0], flush=True)
  for name, (m, k, n, residual) in SHAPES.items():
    keys = jax.random.split(jax.random.key(0), CHAIN + 2)
    As = [jax.random.normal(key, (m, k), jnp.bfloat16) for key in keys[:CHAIN]]
    b = (jax.random.normal(keys[-2], (k, n), jnp.float32) * k ** -0.5).astype(jnp.bfloat16)
    c = jax.random.normal(keys[-1], (m, n), jnp.bfloat16) if residual else None
    flops = 2 * m * k * n
    xla = jax.jit(lambda As, b, c: [(a @ b + c) if c is not None else a @ b for a in As])
    us, ref = timed(xla, As, b, c)
    ref = np.asarray(ref[0], np.float32)
    print(f'{name} [{m},{k}]x[{k},{n}]{" + C" if residual else ""}: xla {us:6.2f} us '
          f'{flops / us / 1e6:6.1f} TFLOP/s', flush=True)
    for cfg in configs():
      label = (f'{cfg.tile_m}x{cfg.tile_n} wg {cfg.wg_dimension} steps '
               f'{cfg.max_concurrent_steps}')
      fn = jax.jit(lambda As, b, c, cfg=cfg: [hm.matmul(a, b, c, cfg) for a in As])
      try:
        us, out = timed(fn, As, b, c)
      except Exception as e:   # a tiling this shape or the shared memory does not allow
        print(f'  {label}: failed {type(e).__name__}: {str(e).splitlines()[0][:150]}',
              flush=True)
        continue
      err = np.abs(np.asarray(out[0], np.float32) - ref).max() / np.abs(ref).max()
      print(f'  {label}: {us:6.2f} us {flops / us / 1e6:6.1f} TFLOP/s  rel err {err:.2g}',
            flush=True)


if __name__ == '__main__':
  main()
