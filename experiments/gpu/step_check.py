"""pallas_step's kernels against the XLA computation they replace, on the GPU.

  PYTHONPATH=. python3 experiments/gpu/step_check.py [--tiny]

At issue 3's M (B 1024, 12 heads) and S (B 4096, 4 heads) decode shapes, bf16, one layer of a
12- (4-) layer cache: qkv_append (row scale, RoPE, cache write) and swiglu (row scale, SiLU)
against `reference_qkv_append` / `reference_swiglu` compiled by XLA. Prints the largest
difference relative to the largest output, the share of outputs that are bit-identical, and
microseconds per call of each, side by side (each call chained 20 times in one jit, so launch
gaps are amortised as in the decode loop).
"""

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from ttc_jax.model import pallas_step
from ttc_jax.model.transformer import rope_tables

SHAPES = {'M': (1024, 12, 768, 3072, 12), 'S': (4096, 4, 256, 1024, 4)}  # B, K, D, F, L
H, SLOTS, CHAIN = 64, 128, 20


def timed(fn, *args, iters=20, thread=False):
  """us per chained call; thread: fn returns (out, state) and state is fed back (donated)."""
  args = list(args)
  out = fn(*args)
  if thread:
    out, args[-1] = out
  jax.block_until_ready(out)
  t0 = time.perf_counter()
  for _ in range(iters):
    out = fn(*args)
    if thread:
      out, args[-1] = out
  jax.block_until_ready((out, args))
  return (time.perf_counter() - t0) / iters / CHAIN * 1e6


def compare(name, got, want):
  got, want = (np.asarray(jnp.asarray(x, jnp.float32)) for x in (got, want))
  rel = np.abs(got - want).max() / np.abs(want).max()
  print(f'  {name}: max |diff| / max |ref| = {rel:.3g}, bit-identical '
        f'{np.mean(got == want):.4f}', flush=True)


def main():
  print(jax.devices()[0], flush=True)
  shapes = {'tiny': (16, 2, 64, 128, 3)} if '--tiny' in sys.argv else SHAPES   # CPU smoke
  for shape, (b, k, d, f, n_layers) in shapes.items():
    print(f'== {shape}: B={b} K={k} D={d} F={f}', flush=True)
    keys = jax.random.split(jax.random.key(0), 6)
    qkv = jax.random.normal(keys[0], (b, 3 * k, H), jnp.bfloat16)
    cache = jax.random.normal(keys[1], (n_layers, b, 2, k, SLOTS, H), jnp.bfloat16)
    slots = jax.random.randint(keys[2], (b,), 32, SLOTS)
    write = jnp.ones((b,), bool)
    sumsq = jax.random.uniform(keys[3], (b,), minval=0.5 * d, maxval=2.0 * d)
    cos, sin = rope_tables(slots, H, 10000.0)
    gate_up = jax.random.normal(keys[4], (b, 2 * f), jnp.bfloat16)
    gate_ups = [gate_up + jnp.bfloat16(i) for i in range(CHAIN)]
    opts = dict(sumsq_B=sumsq, d_model=d, eps=1e-6)
    layer = n_layers - 1
    append = dict(rope_cos_BxH=cos, rope_sin_BxH=sin, **opts)

    def chain_append(fn):
      def run(qkv, cache):
        qs = []   # every call's q is an output, so XLA cannot drop the reference's q work
        for i in range(CHAIN):   # a different layer each call, as in a step
          q, cache = fn(qkv, cache, i % n_layers, slots, write, **append)
          qs.append(q)
        return qs, cache
      return jax.jit(run, donate_argnums=1)

    def chain_swiglu(fn):
      def run(*gate_ups):   # distinct inputs, so no call is a copy of another
        return [fn(g, **opts) for g in gate_ups]
      return jax.jit(run)

    got = pallas_step.qkv_append(qkv, cache, layer, slots, write, **append)
    want = jax.jit(lambda q, c: pallas_step.reference_qkv_append(q, c, layer, slots, write,
                                                                 **append))(qkv, cache)
    compare('qkv_append q', got[0], want[0])
    rows = jnp.arange(b)
    compare('qkv_append cache slot', got[1][layer, rows, :, :, slots],
            want[1][layer, rows, :, :, slots])
    print(f'  whole cache bit-identical: {bool(jnp.all(got[1] == want[1]))}', flush=True)
    compare('swiglu', pallas_step.swiglu(gate_up, **opts),
            jax.jit(lambda g: pallas_step.reference_swiglu(g, **opts))(gate_up))
    for label, fn in (('pallas', pallas_step.qkv_append),
                      ('xla', pallas_step.reference_qkv_append)):
      us = timed(chain_append(fn), qkv, jnp.array(cache), thread=True)
      print(f'  qkv_append {label:>6}: {us:6.2f} us per layer', flush=True)
    for label, fn in (('pallas', pallas_step.swiglu), ('xla', pallas_step.reference_swiglu)):
      us = timed(chain_swiglu(fn), *gate_ups)
      print(f'  swiglu     {label:>6}: {us:6.2f} us per layer', flush=True)


if __name__ == '__main__':
  main()
