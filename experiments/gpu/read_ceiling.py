"""How fast can this GPU read, and how close is the decode kernel: a probe (GPU).

  PYTHONPATH=. python3 experiments/gpu/read_ceiling.py

Side by side in one process:
- `xla sum`: XLA summing a 4 GiB bf16 array (one pass, read-only);
- `pallas read RxW`: a Pallas kernel summing [R, 64] bf16 blocks of the same array
  (contiguous R * 128 bytes per program), W warps;
- the sampler's decode kernel (one block, pallas_decode defaults) and the head-looping
  variants of heads_probe.py, at M/1024 with every row 80 or 128 live slots (128: each
  program's keys and values are fully contiguous).
TB/s counts bytes read.
"""

import functools
import os
import sys

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from ttc_jax.model import pallas_decode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from heads_probe import heads_attention  # noqa: E402
from kernel_probe import timed as timed_us  # noqa: E402


def timed(fn, *args, iters=30):
  """Seconds per call."""
  return timed_us(fn, *args, iters=iters) / 1e6

H = 64


def pallas_read(x, rows, warps):
  n = x.shape[0] // rows

  def kernel(x_ref, o_ref):
    o_ref[...] = jnp.sum(x_ref[...].astype(jnp.float32), axis=0)

  return pl.pallas_call(
      kernel, grid=(n,), in_specs=[pl.BlockSpec((rows, H), lambda i: (i, 0))],
      out_specs=pl.BlockSpec((None, H), lambda i: (i, 0)),
      out_shape=jax.ShapeDtypeStruct((n, H), jnp.float32),
      compiler_params=plgpu.CompilerParams(num_warps=warps, num_stages=1))(x)


def main():
  print(jax.devices()[0], flush=True)
  x = jax.random.normal(jax.random.key(0), (2 ** 31 // H, H), jnp.bfloat16)   # 4 GiB
  nbytes = x.size * 2
  s = timed(jax.jit(lambda a: jnp.sum(a.astype(jnp.float32), axis=0)), x)
  print(f'xla sum of 4 GiB: {s * 1e3:.3f} ms  {nbytes / s / 1e12:.2f} TB/s', flush=True)
  for rows in (128, 256, 512):
    for warps in (4, 8):
      s = timed(jax.jit(functools.partial(pallas_read, rows=rows, warps=warps)), x)
      print(f'pallas read {rows}x{warps}: {s * 1e3:.3f} ms  {nbytes / s / 1e12:.2f} TB/s',
            flush=True)
  del x
  b, k, n_layers, slots = 1024, 12, 12, 128
  keys = jax.random.split(jax.random.key(1), 2)
  q = jax.random.normal(keys[0], (b, k, 1, H), jnp.bfloat16)
  kv = jax.random.normal(keys[1], (n_layers, b, 2, k, slots, H), jnp.bfloat16)
  for live in (80, 128):
    lengths = jnp.full((b,), live, jnp.int32)
    live_bytes = 2 * b * k * live * H * 2
    fns = {'sampler (one block)': functools.partial(
        pallas_decode.decode_attention, layer=n_layers - 1, window=slots, scale=0.125)}
    for hp in (1, 2, 3, 4):
      fns[f'heads loop hp{hp} w4'] = functools.partial(
          heads_attention, layer=n_layers - 1, scale=0.125, heads_per_program=hp,
          mode='loop', num_warps=4, num_stages=1)
    for name, f in fns.items():
      fn = jax.jit(lambda q, kv, ln, f=f: f(q, kv, lengths_B=ln))
      try:
        s = timed(fn, q, kv, lengths, iters=50)
      except Exception as e:
        print(f'M live {live}: {name}: failed {type(e).__name__}: {str(e)[:200]}', flush=True)
        continue
      print(f'M live {live}: {name:>22}: {s * 1e6:6.1f} us  {live_bytes / s / 1e12:.2f} TB/s',
            flush=True)


if __name__ == '__main__':
  main()
