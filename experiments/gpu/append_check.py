"""The appending decode kernel compiled on a GPU against the unfused path (a check).

  PYTHONPATH=. python3 experiments/gpu/append_check.py

`pallas_decode.decode_attention_append` (RoPE of the step's query and key, the cache write
and attention in one kernel) against `transformer.rope`, a scatter and `decode_attention`,
at issue 3's M cache shape (12 kv heads of 64, 128 slots) with random lengths and write
flags, one block and a 64-slot loop, bf16 and float32. The CPU tests run the kernel in
interpret mode; this runs its Triton lowering. Prints, per case, the largest output
difference on writing rows, and the cache slots that differ from the unfused path's; then
the kernel times side by side (`timing`).
"""

import jax
import jax.numpy as jnp
import numpy as np

from ttc_jax.model import pallas_decode, transformer


def case(dtype, block_s, groups=1, b=256, k=12, s=128, h=64, n_layers=2, seed=0):
  rng = np.random.default_rng(seed)
  n = k * groups
  qkv = jnp.asarray(rng.standard_normal((b, n + 2 * k, h), np.float32), dtype)
  kv = jnp.asarray(rng.standard_normal((n_layers, b, 2, k, s, h), np.float32), dtype)
  lengths = rng.integers(1, s + 1, b).astype(np.int32)
  write = rng.random(b) < 0.8
  pos = jnp.asarray(lengths - 1)
  cos, sin = transformer.rope_tables(pos, h, 10_000.0)
  opts = dict(window=s, scale=h ** -0.5, block_s=block_s)
  out, new_kv = jax.jit(lambda qkv, kv: pallas_decode.decode_attention_append(
      qkv, kv, 1, jnp.asarray(lengths), jnp.asarray(write), rope_cos_BxH=cos,
      rope_sin_BxH=sin, **opts))(qkv, kv)

  @jax.jit
  def unfused(qkv, kv):
    rot = lambda x: transformer.rope(x[:, None], pos[:, None], 10_000.0)[:, 0]
    q, kn, vn = rot(qkv[:, :n]), rot(qkv[:, n:n + k]), qkv[:, n + k:]
    slots = jnp.where(jnp.asarray(write), pos, s)
    kv = kv.at[1, jnp.arange(b), :, :, slots].set(jnp.stack([kn, vn], axis=1), mode='drop')
    return pallas_decode.decode_attention(q.reshape(b, k, groups, h), kv, 1,
                                          jnp.asarray(lengths), products='reduce',
                                          **opts), kv

  want_out, want_kv = unfused(qkv, kv)
  err = float(jnp.max(jnp.abs(out[write].astype(jnp.float32) -
                              want_out[write].astype(jnp.float32))))
  differ = int(jnp.sum(new_kv != want_kv))
  touched = int(jnp.sum(jnp.any(new_kv != kv, axis=-1)))
  print(f'{jnp.dtype(dtype).name:>8} block {block_s:3d} G={groups}: max |out - unfused| '
        f'{err:.3g}; cache values differing from the unfused path: {differ} of '
        f'{new_kv.size}; slots changed {touched} (writing rows x 2 x heads = '
        f'{int(write.sum()) * 2 * k})', flush=True)


def timing(b=1024, k=12, s=128, h=64, n_layers=12, live=80):
  """Kernel times at M/1024 (every row `live` slots): the appending kernel against the
  cache-reading kernel of this tree and, when cmp_base is on the path, the previous
  commit's (ttc_old)."""
  import os
  import sys
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  from kernel_probe import timed
  rng = np.random.default_rng(0)
  qkv = jnp.asarray(rng.standard_normal((b, 3 * k, h), np.float32), jnp.bfloat16)
  kv = jnp.asarray(rng.standard_normal((n_layers, b, 2, k, s, h), np.float32), jnp.bfloat16)
  lengths = jnp.full((b,), live, jnp.int32)
  cos, sin = transformer.rope_tables(lengths - 1, h, 10_000.0)
  scale = jnp.ones((b,), jnp.float32)
  q = qkv[:, :k, None]
  opts = dict(window=s, scale=h ** -0.5)
  fns = {
      'append (rope, scale, write)': (jax.jit(
          lambda qkv, kv: pallas_decode.decode_attention_append(
              qkv, kv, n_layers // 2, lengths, jnp.ones((b,), bool), rope_cos_BxH=cos, rope_sin_BxH=sin,
              row_scale_B=scale, **opts)[0]), (qkv, kv)),
      'read only (this tree)': (jax.jit(lambda q, kv: pallas_decode.decode_attention(
          q, kv, n_layers // 2, lengths, **opts)), (q, kv))}
  try:
    from ttc_old.model import pallas_decode as old
    fns['read only (previous commit)'] = (jax.jit(lambda q, kv: old.decode_attention(
        q, kv, n_layers // 2, lengths, **opts)), (q, kv))
  except ImportError:
    pass
  live_bytes = 2 * b * k * live * h * 2
  for _ in range(2):
    for name, (fn, args) in fns.items():
      us = timed(fn, *args, iters=50)
      print(f'M/{b} live {live}: {name:>28}: {us:6.1f} us  {live_bytes / us / 1e6:.2f} TB/s',
            flush=True)


def main():
  print(jax.devices()[0], flush=True)
  for dtype in (jnp.bfloat16, jnp.float32):
    for block_s in (128, 64):
      case(dtype, block_s)
  case(jnp.bfloat16, 128, groups=2)
  timing()


if __name__ == '__main__':
  main()
