"""How the decode kernel's two loads are placed: a probe (GPU).

  PYTHONPATH=. python3 experiments/gpu/loads_probe.py

The one-block decode kernel issues a masked load of the row's keys and one of its values.
Whether both are in flight together, or the values are fetched only after the keys' math,
is the compiler's choice (it trades registers, hence programs per SM, against round trips
per program). Side by side at issue 3's M and S cache shapes (one layer, every row 80 live
slots, and lengths uniform in [33, 128]):
- `sampler`: pallas_decode.decode_attention as the sampler runs it;
- `kv3d`: keys and values fetched by one masked load of the [2, S, H] block, so both are in
  flight together by construction;
- `k_then_v`: the values' load made to depend on the keys' softmax (its mask includes a
  test of the row maximum), so it is issued only after the keys' math.
GB/s counts live bytes.
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
from kernel_probe import timed  # noqa: E402  (microseconds per call)

SHAPES = {'M': (1024, 12, 12), 'S': (4096, 4, 4)}   # batch, kv heads, layers
H, SLOTS = 64, 128


def variant(q_BxKx1xH, kv, lengths_B, *, layer, mode, interpret=False):
  n_layers, b, _, k, s, h = kv.shape
  scale = h ** -0.5

  def kernel(q_ref, kv_ref, len_ref, o_ref):
    length = len_ref[()]
    live_S = jnp.arange(s) < length
    q_H = q_ref[0, :].astype(jnp.float32)
    if mode == 'kv3d':
      both = plgpu.load(kv_ref.at[:, :, :], mask=jnp.broadcast_to(live_S[None, :, None],
                                                                  (2, s, h)), other=0.)
      is_key = (jnp.arange(2) == 0)[:, None, None]   # (Triton cannot slice a loaded block)
      keys = jnp.sum(jnp.where(is_key, both.astype(jnp.float32), 0.), axis=0)
      values = jnp.sum(jnp.where(is_key, 0., both.astype(jnp.float32)), axis=0)
    else:
      keys = plgpu.load(kv_ref.at[jnp.int32(0), :, :], mask=live_S[:, None],
                        other=0.).astype(jnp.float32)
    logits = jnp.where(live_S, jnp.sum(keys * q_H[None, :], axis=1) * scale, -jnp.inf)
    m = jnp.max(logits)
    p = jnp.exp(logits - m)
    if mode == 'k_then_v':   # m > -inf always holds; the test only orders the load
      values = plgpu.load(kv_ref.at[jnp.int32(1), :, :], mask=(live_S & (m > -jnp.inf))[:, None],
                          other=0.).astype(jnp.float32)
    o_ref[0, :] = (jnp.sum(p[:, None] * values, axis=0) / jnp.sum(p)).astype(o_ref.dtype)

  return pl.pallas_call(
      kernel, grid=(k, b),
      in_specs=[pl.BlockSpec((None, None, 1, h), lambda kk, bb: (bb, kk, 0, 0)),
                pl.BlockSpec((None, None, 2, None, s, h), lambda kk, bb: (layer, bb, 0, kk, 0, 0)),
                pl.BlockSpec((None,), lambda kk, bb: (bb,))],
      out_specs=pl.BlockSpec((None, None, 1, h), lambda kk, bb: (bb, kk, 0, 0)),
      out_shape=jax.ShapeDtypeStruct(q_BxKx1xH.shape, q_BxKx1xH.dtype),
      compiler_params=plgpu.CompilerParams(num_warps=4, num_stages=1),
      interpret=interpret, name=f'probe_{mode}')(q_BxKx1xH, kv, lengths_B)


def side_by_side(variants, interpret: bool):
  """Time `variants(layer, slots, interpret)` (name -> fn(q, kv, lengths_B)) beside the
  sampler's kernel at SHAPES (a tiny one when interpreting), two rounds, every row 80 live
  slots and then lengths uniform in [33, 128]; GB/s of live KV and the largest error against
  the reference."""
  print(jax.devices()[0], flush=True)
  shapes = {'tiny': (8, 2, 2)} if interpret else SHAPES
  slots = 32 if interpret else SLOTS
  for name, (b, k, n_layers) in shapes.items():
    keys = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(keys[0], (b, k, 1, H), jnp.bfloat16)
    kv = jax.random.normal(keys[1], (n_layers, b, 2, k, slots, H), jnp.bfloat16)
    layer = n_layers - 1
    for label, lengths in (('80', jnp.full((b,), min(80, slots), jnp.int32)),
                           ('uniform', jax.random.randint(keys[2], (b,), 1 if interpret else 33,
                                                          slots + 1))):
      live_bytes = 2 * b * k * float(jnp.mean(lengths)) * H * 2
      ref = pallas_decode.reference_decode_attention(q, kv, layer, lengths, window=slots,
                                                     scale=H ** -0.5).astype(jnp.float32)
      fns = {'sampler': functools.partial(pallas_decode.decode_attention, layer=layer,
                                          window=slots, scale=H ** -0.5, interpret=interpret)}
      fns.update(variants(layer, slots, interpret))
      for rnd in range(1 if interpret else 2):
        for vname, f in fns.items():
          fn = jax.jit(lambda q, kv, ln, f=f: f(q, kv, lengths_B=ln))
          try:
            us = timed(fn, q, kv, lengths, iters=1 if interpret else 50)
            err = float(jnp.max(jnp.abs(fn(q, kv, lengths).astype(jnp.float32) - ref)))
          except Exception as e:
            print(f'{name} {label}: {vname}: failed {type(e).__name__}: {str(e)[:300]}',
                  flush=True)
            continue
          print(f'{name} {label:>7} r{rnd}: {vname:>16}: {us:7.1f} us  '
                f'{live_bytes / us / 1e3:7.1f} GB/s  max err {err:.3g}', flush=True)


def main():
  side_by_side(lambda layer, slots, interpret: {
      mode: functools.partial(variant, layer=layer, mode=mode, interpret=interpret)
      for mode in ('kv3d', 'k_then_v')}, '--interpret' in sys.argv)

if __name__ == '__main__':
  main()
