"""Decode attention with one program per row looping over its kv heads: a probe (GPU).

  PYTHONPATH=. python3 experiments/gpu/heads_probe.py [--interpret]

The sampler's kernel (ttc_jax/model/pallas_decode.py) runs one program per (kv head, row);
each reads ~80 live slots of keys and values in one or two round trips to memory and then
computes, so a program spends most of its life waiting, and the kernel reads the live KV at
about 3.2 TB/s where a device-to-device copy moves 4.3. Here one program owns a row (or a
group of its heads) and walks the heads with the whole window as one masked block (only
live slots are fetched):
- `loop`: a `fori_loop` over heads with a static trip count, the innermost loop, so
  Triton's software pipeliner may prefetch the next head's blocks (num_stages);
- `prefetch`: the heads unrolled, the next head's keys and values loaded before the current
  head's softmax (explicit double buffering in registers).
For issue 3's S and M cache shapes, one layer, lengths all 80 (the benchmark's mean) and
uniform in [33, 128], side by side with the sampler's kernel; GB/s counts live bytes only.
Only G = 1 (one query head per kv head) and window = block.
"""

import argparse
import functools
import os
import sys

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from ttc_jax.model import pallas_decode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kernel_probe import timed  # noqa: E402  (microseconds per call)

SHAPES = {'S': (4096, 4, 4), 'M': (1024, 12, 12)}   # batch, kv heads, layers
H, SLOTS = 64, 128


def heads_attention(q_BxKxGxH, kv, lengths_B, *, layer, scale, heads_per_program,
                    mode, num_warps, num_stages, interpret=False):
  n_layers, b, _, k, s, h = kv.shape
  hp = heads_per_program
  assert k % hp == 0 and q_BxKxGxH.shape[2] == 1

  def kernel(q_ref, kv_ref, len_ref, o_ref):
    length = len_ref[()]
    live = jnp.arange(s) < length

    def load(j):
      j = jnp.asarray(j, jnp.int32)   # (Pallas wants array indices, not Python ints)
      ks = plgpu.load(kv_ref.at[jnp.int32(0), j, :, :], mask=live[:, None], other=0.)
      vs = plgpu.load(kv_ref.at[jnp.int32(1), j, :, :], mask=live[:, None], other=0.)
      return ks, vs

    def attend(j, ks, vs):
      j = jnp.asarray(j, jnp.int32)
      q = q_ref[j, 0, :].astype(jnp.float32)
      logits = jnp.sum(ks.astype(jnp.float32) * q[None, :], axis=1) * scale
      logits = jnp.where(live, logits, -jnp.inf)
      p = jnp.exp(logits - jnp.max(logits))
      out = jnp.sum(p[:, None] * vs.astype(jnp.float32), axis=0) / jnp.sum(p)
      o_ref[j, 0, :] = out.astype(o_ref.dtype)

    if mode == 'loop':
      def body(j, carry):
        attend(j, *load(j))
        return carry
      lax.fori_loop(0, hp, body, 0)
    else:
      cur = load(0)
      for j in range(hp):
        nxt = load(j + 1) if j + 1 < hp else None
        attend(j, *cur)
        cur = nxt

  return pl.pallas_call(
      kernel, grid=(b, k // hp),
      in_specs=[pl.BlockSpec((None, hp, 1, h), lambda bb, g: (bb, g, 0, 0)),
                pl.BlockSpec((None, None, 2, hp, s, h), lambda bb, g: (layer, bb, 0, g, 0, 0)),
                pl.BlockSpec((None,), lambda bb, g: (bb,))],
      out_specs=pl.BlockSpec((None, hp, 1, h), lambda bb, g: (bb, g, 0, 0)),
      out_shape=jax.ShapeDtypeStruct(q_BxKxGxH.shape, q_BxKxGxH.dtype),
      compiler_params=plgpu.CompilerParams(num_warps=num_warps, num_stages=num_stages),
      interpret=interpret, name='heads_attention')(q_BxKxGxH, kv, lengths_B)


def variants(k):
  out = []
  for hp in sorted({k, k // 2, k // 4} - {0}):
    if k % hp:
      continue
    for mode, warps, stages in (('loop', 4, 1), ('loop', 4, 2), ('loop', 4, 3),
                                ('loop', 8, 2), ('prefetch', 4, 1), ('prefetch', 8, 1)):
      out.append((hp, mode, warps, stages))
  return out


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--interpret', action='store_true', help='CPU check on a small shape')
  args = ap.parse_args()
  print(jax.devices()[0], flush=True)
  shapes = {'tiny': (8, 4, 2)} if args.interpret else SHAPES
  slots = 32 if args.interpret else SLOTS
  for name, (b, k, n_layers) in shapes.items():
    keys = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(keys[0], (b, k, 1, H), jnp.bfloat16)
    kv = jax.random.normal(keys[1], (n_layers, b, 2, k, slots, H), jnp.bfloat16)
    layer = n_layers - 1
    lo = 1 if args.interpret else 33
    for label, lengths in (('80', jnp.full((b,), min(80, slots), jnp.int32)),
                           ('uniform', jax.random.randint(keys[2], (b,), lo, slots + 1))):
      live_bytes = 2 * b * k * float(jnp.mean(lengths)) * H * 2
      ref = pallas_decode.reference_decode_attention(q, kv, layer, lengths, window=slots,
                                                     scale=H ** -0.5).astype(jnp.float32)
      fns = {'sampler 64:4:2': functools.partial(
          pallas_decode.decode_attention, layer=layer, window=slots, scale=H ** -0.5,
          interpret=args.interpret)}
      for hp, mode, warps, stages in variants(k):
        fns[f'{mode} heads/prog {hp} w{warps} s{stages}'] = functools.partial(
            heads_attention, layer=layer, scale=H ** -0.5, heads_per_program=hp, mode=mode,
            num_warps=warps, num_stages=stages, interpret=args.interpret)
      for vname, f in fns.items():
        fn = jax.jit(lambda q, kv, ln, f=f: f(q, kv, lengths_B=ln))
        try:
          us = timed(fn, q, kv, lengths, iters=1 if args.interpret else 50)
          out = fn(q, kv, lengths)
        except Exception as e:
          print(f'{name} {label}: {vname}: failed {type(e).__name__}: {str(e)[:300]}',
                flush=True)
          continue
        err = float(jnp.max(jnp.abs(out.astype(jnp.float32) - ref)))
        print(f'{name} {label:>7}: {vname:>30}: {us:7.1f} us  {live_bytes / us / 1e3:7.1f} GB/s'
              f'  max err {err:.3g}', flush=True)


if __name__ == '__main__':
  main()
