"""What bounds the decode-attention kernel's bandwidth: a probe (GPU).

  PYTHONPATH=. python3 experiments/gpu/kernel_probe.py

For issue 3's S and M cache shapes (lengths uniform in [33, 128], one layer of the cache),
times side by side in one process:
- `pallas 64:4:2`: ttc_jax's decode-attention kernel as the sampler runs it;
- the same kernel with its loads' eviction hint set (`evict_first`), by patching the
  module's `plgpu.load` for one variant at a time;
- `read-only B`: a Pallas kernel with the same grid and masked loads of key and value blocks
  of B slots, which only sums what it reads (the kernel's memory traffic with no softmax);
- `xla sum`: XLA reducing the same layer's live slots (a contiguous 80-slot prefix per row and
  head), the bandwidth an XLA fusion reaches on this layout.
GB/s counts live key and value bytes only.
"""

import functools
import time

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from ttc_jax.model import pallas_decode

SHAPES = {'S': (4096, 4, 4), 'M': (1024, 12, 12)}   # batch, kv heads, layers
H, SLOTS = 64, 128


def read_only(kv, lengths, *, layer, block):
  n_layers, b, _, k, s, h = kv.shape

  def kernel(k_ref, v_ref, len_ref, o_ref):
    length = len_ref[()]
    n_iter = lax.div(length + block - 1, block)
    offs = jnp.arange(block)

    def body(i, acc):
      start = pl.multiple_of(i * block, block)
      live = (start + offs) < length
      ks = plgpu.load(k_ref.at[pl.ds(start, block), :], mask=live[:, None], other=0.)
      vs = plgpu.load(v_ref.at[pl.ds(start, block), :], mask=live[:, None], other=0.)
      return acc + jnp.sum(ks.astype(jnp.float32) + vs.astype(jnp.float32), axis=0)

    o_ref[...] = lax.fori_loop(0, n_iter, body, jnp.zeros((h,), jnp.float32))

  specs = [pl.BlockSpec((None, None, None, None, s, h),
                        lambda kk, bb, i=i: (layer, bb, i, kk, 0, 0)) for i in (0, 1)]
  return pl.pallas_call(
      kernel, grid=(k, b),
      in_specs=specs + [pl.BlockSpec((None,), lambda kk, bb: (bb,))],
      out_specs=pl.BlockSpec((None, None, h), lambda kk, bb: (bb, kk, 0)),
      out_shape=jax.ShapeDtypeStruct((b, k, h), jnp.float32),
      compiler_params=plgpu.CompilerParams(num_warps=4, num_stages=2))(kv, kv, lengths)


def xla_sum(kv, layer, live):
  return jnp.sum(kv[layer, :, :, :, :live].astype(jnp.float32), axis=(3,))


def timed(fn, *args, iters=50):
  for _ in range(2):
    out = fn(*args)
    jax.block_until_ready(out)
  t0 = time.perf_counter()
  for _ in range(iters):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - t0) / iters * 1e6


def main():
  print(jax.devices()[0])
  orig_load = pallas_decode.plgpu.load
  for name, (b, k, n_layers) in SHAPES.items():
    keys = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(keys[0], (b, k, 1, H), jnp.bfloat16)
    kv = jax.random.normal(keys[1], (n_layers, b, 2, k, SLOTS, H), jnp.bfloat16)
    lengths = jax.random.randint(keys[2], (b,), 33, 129)
    live_bytes = 2 * b * k * float(jnp.mean(lengths)) * H * 2
    layer = n_layers - 1
    rows = []
    # (A '.cg' cache modifier was also tried: this Pallas rejects it.)
    for hint in (None, dict(eviction_policy='evict_first')):
      class Patched:   # the module's plgpu with load's hints set
        def __getattr__(self, attr):
          return getattr(plgpu, attr)
        load = staticmethod(functools.partial(orig_load, **(hint or {})))
      pallas_decode.plgpu = Patched() if hint else plgpu
      jax.clear_caches()
      fn = jax.jit(lambda q, kv, ln: pallas_decode.decode_attention(
          q, kv, layer, ln, window=SLOTS, scale=H ** -0.5))
      try:
        rows.append((f'pallas 64:4:2 {hint or ""}', timed(fn, q, kv, lengths)))
      except Exception as e:
        print(f'{name} {hint}: failed {type(e).__name__}: {str(e)[:200]}')
    pallas_decode.plgpu = plgpu
    jax.clear_caches()
    for block in (32, 64, 128):
      fn = jax.jit(functools.partial(read_only, layer=layer, block=block))
      rows.append((f'read-only {block}', timed(fn, kv, lengths)))
    fn = jax.jit(functools.partial(xla_sum, layer=layer, live=80))
    us = timed(fn, kv)
    print(f'{name}: xla sum of 80 live slots: {us:7.1f} us  '
          f'{2 * b * k * 80 * H * 2 / us / 1e3:7.1f} GB/s', flush=True)
    for label, us in rows:
      print(f'{name}: {label:>40}: {us:7.1f} us  {live_bytes / us / 1e3:7.1f} GB/s', flush=True)


if __name__ == '__main__':
  main()
