"""A persistent, software-pipelined decode-attention kernel: a probe (GPU).

  PYTHONPATH=. python3 experiments/gpu/persist_probe.py [--interpret]

The sampler's one-block kernel runs one program per (row, kv head): it waits on its masked
loads with them held in registers, so the bytes in flight per SM are bounded by the register
file and fall to zero while a program computes. Triton pipelines a loop's loads through
shared memory (cp.async, `num_stages` buffers) only for loads that feed a dot; with
elementwise math it leaves them alone (checked on Triton 3.9's output: no cp.async without a
dot, cp.async with one). The probe's kernel therefore:
- runs P programs, each walking items (row, kv head) pid, pid + P, ... in a loop;
- forms q.k and p.v as tensor-core dots (queries padded to 16 rows; p split into bf16
  hi + lo parts so the sum keeps float32-level accuracy), which makes Triton prefetch the
  next items' keys and values into shared memory while it computes this one.
Side by side with the sampler's kernel at issue 3's M and S cache shapes (one layer; every row
80 live slots, and lengths uniform in [33, 128]); GB/s counts live bytes.
"""

import functools
import os
import sys

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loads_probe import side_by_side  # noqa: E402  (the same harness and shapes)


def persistent(q_BxKxGxH, kv, lengths_B, *, layer, programs, num_warps=4, num_stages=3,
               interpret=False):
  n_layers, b, _, k, s, h = kv.shape
  g = q_BxKxGxH.shape[2]
  scale = h ** -0.5
  n_items = b * k
  dims = dict(preferred_element_type=jnp.float32)
  contract_h = (((1,), (1,)), ((), ()))   # [P, H] x [S, H] -> [P, S]
  contract_s = (((1,), (0,)), ((), ()))   # [P, S] x [S, H] -> [P, H]

  def kernel(q_ref, kv_ref, len_ref, o_ref):
    pid = pl.program_id(0)
    n_iter = lax.div(n_items - pid + (programs - 1), programs)
    offsets = jnp.arange(s, dtype=jnp.int32)
    rows_P = jnp.arange(16, dtype=jnp.int32)

    def body(i, carry):
      j = pid + i * programs
      row, head = lax.div(j, k), lax.rem(j, k)
      length = len_ref[row]
      live_S = offsets < length
      keys, values = (
          plgpu.load(kv_ref.at[jnp.int32(layer), row, jnp.int32(i), head, :, :],
                     mask=live_S[:, None], other=0.) for i in (0, 1))
      q_PxH = jnp.zeros((16, h), q_ref.dtype)
      for gg in range(g):
        q_H = q_ref[row, head, jnp.int32(gg), :]
        q_PxH = jnp.where(rows_P[:, None] == gg, q_H[None, :], q_PxH)
      logits = lax.dot_general(q_PxH, keys, contract_h, **dims) * scale
      logits = jnp.where(live_S[None, :], logits, -jnp.inf)
      m_P = jnp.max(logits, axis=1)
      p = jnp.exp(logits - m_P[:, None])
      l_P = jnp.sum(p, axis=1)
      p_hi = p.astype(values.dtype)
      p_lo = (p - p_hi.astype(jnp.float32)).astype(values.dtype)
      acc = (lax.dot_general(p_hi, values, contract_s, **dims)
             + lax.dot_general(p_lo, values, contract_s, **dims))
      out = acc / l_P[:, None]
      for gg in range(g):
        o_ref[row, head, jnp.int32(gg), :] = jnp.sum(jnp.where(rows_P[:, None] == gg, out, 0.),
                                          axis=0).astype(o_ref.dtype)
      return carry

    lax.fori_loop(0, n_iter, body, jnp.int32(0))

  whole = lambda shape: pl.BlockSpec(shape, lambda p: (0,) * len(shape))
  return pl.pallas_call(
      kernel, grid=(programs,),
      in_specs=[whole(q_BxKxGxH.shape), whole(kv.shape), whole(lengths_B.shape)],
      out_specs=whole(q_BxKxGxH.shape),
      out_shape=jax.ShapeDtypeStruct(q_BxKxGxH.shape, q_BxKxGxH.dtype),
      compiler_params=plgpu.CompilerParams(num_warps=num_warps, num_stages=num_stages),
      interpret=interpret, name='persist')(q_BxKxGxH, kv, lengths_B.astype(jnp.int32))


def variants(layer, slots, interpret):
  del slots
  out = {}
  for mult in (2, 4, 8):
    for stages in (2, 3, 4):
      out[f'P={mult}x132 st={stages}'] = functools.partial(
          persistent, layer=layer, programs=4 if interpret else 132 * mult,
          num_stages=stages, interpret=interpret)
  if not interpret:
    out['P=4x132 st=3 w8'] = functools.partial(persistent, layer=layer, programs=528,
                                               num_warps=8)
  return out


def main():
  side_by_side(variants, '--interpret' in sys.argv)

if __name__ == '__main__':
  main()
