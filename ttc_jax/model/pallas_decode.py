"""Split-K ("flash-decoding") decode attention over the explicit KV cache, in Pallas.

One query step per row reads cache slots [0, lengths_B[b]) of one layer of the full
[L, B, 2, K, S, H] cache (keys at index 0 of axis 2, values at 1). The grid is
(K, B, n_splits), kv heads varying fastest, so programs running side by side read one row's
keys and values, which are adjacent in memory (measured on an H200 at 12 kv heads: 81 us
against 92 us with rows varying fastest). Program (k, b, s) walks key blocks
s, s + n_splits, s + 2 n_splits, ... of row b that start below lengths_B[b], keeping an
online softmax (running max m, sum l, accumulator acc[G, H], all float32) for the G query
heads that share kv head k. With one split the program writes the normalised output; with
several it writes its partial (m, l, acc) and a small JAX epilogue merges the splits with
log-sum-exp rescaling. A window of at most 128 slots is by default read as one block
(block_s = window): each program then loads its row's live keys and values with one masked
load each and computes the softmax directly, with no block loop (one round trip to memory per
program instead of one per block; measured 12-16% faster on an H200 at 80 live slots).

G = 1 (and float32 caches) use elementwise multiply + reduce; G > 1 over a 16-bit cache pads
the queries to 16 rows and uses tensor-core dots (Triton needs dims >= 16), splitting the
float32 operands into hi + lo 16-bit halves so results keep float32-level accuracy.

Dead blocks cost no memory traffic: the block loop's trip count is computed from the row's
length, so blocks at or beyond it are never visited, and the one partial block is read with
a masked load (slots at or beyond the length are neither fetched nor used). The layer is
selected by the BlockSpec index map (or, for a traced layer, by an index inside the kernel),
so the cache is never sliced or copied in JAX.

Usage:
  out_BxKxGxH = decode_attention(q_BxKxGxH, cache['kv'], layer, lengths_B, window=w,
                                 scale=h ** -0.5)

Micro-benchmark (GPU), kernel settings side by side (block_s:num_warps:num_stages):
  python -m ttc_jax.model.pallas_decode --batch 4096 --kv-heads 4 --groups 1 \
      --head-dim 64 --seq 128 --live 80 --layers 4 --configs 128:4:2,64:4:2,32:4:2
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

# Programs that fill an H100/H200 (132 SMs, two resident programs each) when B*K is small.
_TARGET_PROGRAMS = 264
# block_s=0 (auto) reads a window of at most this many slots (a power of two) as one block.
# Measured on an H200 (experiments/gpu/heads_probe.py, window 128, every row 80 live slots):
# 94 against 112 us at S/4096 and 76 against 89 us at M/1024 for 64-slot blocks.
ONE_BLOCK_MAX = 128
# block_s=0 (auto) reads longer windows in blocks of this many slots.
LOOP_BLOCK = 64


def is_pow2(n: int) -> bool:
  return n >= 1 and (n & (n - 1)) == 0


def auto_splits(batch: int, kv_heads: int, window: int, block_s: int) -> int:
  """Splits per (row, kv head): enough programs for ~132 SMs, at most one per key block."""
  n_blocks = window // block_s
  return max(1, min(n_blocks, math.ceil(_TARGET_PROGRAMS / (batch * kv_heads))))


def auto_block(window: int) -> int:
  """block_s=0: the whole window as one block when it is a power of two of at most
  ONE_BLOCK_MAX slots, else LOOP_BLOCK-slot blocks (or the largest power of two dividing the
  window, if smaller)."""
  if is_pow2(window) and window <= ONE_BLOCK_MAX:
    return window
  return min(LOOP_BLOCK, window & -window)


def whole_block_window(n: int) -> int:
  """The smallest window >= n that auto_block reads in full-size blocks: n rounded up to a
  power of two up to ONE_BLOCK_MAX slots (one block), else to a multiple of LOOP_BLOCK. A
  window with a small power-of-two factor (say 154 = 2 * 77) would otherwise be read 2 slots
  at a time; a cache padded to this many slots avoids that."""
  if n <= ONE_BLOCK_MAX:
    return 1 << max(int(n) - 1, 0).bit_length()
  return -(-int(n) // LOOP_BLOCK) * LOOP_BLOCK


def cache_dims(kv_LxBx2xKxSxH) -> tuple[int, ...]:
  """(L, B, 2, K, S, H) of a cache array; ValueError naming it for any other rank."""
  if kv_LxBx2xKxSxH.ndim != 6 or kv_LxBx2xKxSxH.shape[2] != 2:
    raise ValueError(f'kv_LxBx2xKxSxH must be [L, B, 2, K, S, H], got shape '
                     f'{kv_LxBx2xKxSxH.shape}')
  return kv_LxBx2xKxSxH.shape


def is_traced_layer(layer, n_layers: int) -> bool:
  """Whether `layer` is a traced integer scalar (selected inside a kernel) rather than a
  Python int (selected by a BlockSpec's index map); raises ValueError for anything else or an
  int outside [0, n_layers)."""
  if isinstance(layer, (int, np.integer)):
    if not 0 <= layer < n_layers:
      raise ValueError(f'layer={layer} out of range for L={n_layers} layers')
    return False
  if jnp.shape(layer) != () or not jnp.issubdtype(jnp.result_type(layer), jnp.integer):
    raise ValueError(f'layer must be an int or an integer scalar, got {layer!r}')
  return True


def _split_hi_lo(x, dtype):
  """x (float32) as hi + lo in `dtype`: two 16-bit dot operands carrying ~16 mantissa bits."""
  hi = x.astype(dtype)
  return hi, (x - hi.astype(jnp.float32)).astype(dtype)


def _kernel(*refs, n_groups: int, n_splits: int, block_s: int, scale: float,
            dynamic_layer: bool, use_dot: bool, normalize: bool, one_block: bool):
  """One (row b, kv head k, split s) program; see the module docstring.

  one_block (block_s = window, one split, no dots): the row's keys and values are read by
  one masked load each and the softmax is computed directly, with no block loop: a program
  then makes one round trip to memory instead of one per block.

  Inputs: q [G, H]; k, v [S, H] ([L, S, H] for a dynamic layer); length []; layer [1]
  (dynamic layer only). Outputs: normalize=True (one split): out [G, H] in q's dtype; else
  the partials acc [G, H], m [G], l [G] (float32).
  use_dot=False: each query group g keeps its own (m, l, acc[H]) and the logits are an
  elementwise multiply + reduce over H (no tiny matmul). use_dot=True (16-bit caches, G > 1):
  the G queries are padded to 16 rows and both products run as tensor-core dots with float32
  accumulation; float32 operands (q, probabilities) are split into hi + lo 16-bit parts so
  the result keeps float32-level accuracy.
  """
  q_ref, k_ref, v_ref, len_ref = refs[:4]
  layer = refs[4][0] if dynamic_layer else None
  out_refs = refs[5 if dynamic_layer else 4:]
  at = (lambda sl: (layer, sl, slice(None))) if dynamic_layer else (
      lambda sl: (sl, slice(None)))
  split = pl.program_id(2)
  length = len_ref[()]
  live_blocks = lax.div(length + (block_s - 1), block_s)
  # Blocks split, split + n, ... below live_blocks; live_blocks >= 1 > split - n keeps the
  # numerator non-negative, so truncating division is floor division.
  n_iter = lax.div(live_blocks - split + (n_splits - 1), n_splits)
  head_dim = q_ref.shape[-1]
  queries = [q_ref[g, :].astype(jnp.float32) for g in range(n_groups)]
  offsets = jnp.arange(block_s, dtype=jnp.int32)

  def load_block(i):
    start = pl.multiple_of((split + i * n_splits) * block_s, block_s)
    live_S = (start + offsets) < length  # slot `start` is always live
    rows = pl.ds(start, block_s)
    # Masked loads: dead slots of the partial block are not fetched and read as zeros.
    keys = plgpu.load(k_ref.at[at(rows)], mask=live_S[:, None], other=0.)
    values = plgpu.load(v_ref.at[at(rows)], mask=live_S[:, None], other=0.)
    return live_S, keys, values

  def online_update(m, l, acc, logits, live, pv):
    """Online softmax step; logits [..., S] (dead slots -> -inf), pv(p) = p @ values."""
    logits = jnp.where(live, logits, -jnp.inf)
    m_new = jnp.maximum(m, jnp.max(logits, axis=-1))
    alpha = jnp.exp(m - m_new)   # a visited block has a live slot, so m_new is finite
    col = (lambda x: x[:, None]) if m.ndim else (lambda x: x)
    p = jnp.exp(logits - col(m_new))
    return m_new, alpha * l + jnp.sum(p, axis=-1), col(alpha) * acc + pv(p)

  def store(g, m, l, acc):
    """Write query group g's result: normalised (one split) or the split's partials."""
    if normalize:
      out_refs[0][g, :] = (acc / l).astype(out_refs[0].dtype)
    else:
      acc_ref, m_ref, l_ref = out_refs
      acc_ref[g, :] = acc
      m_ref[g] = m
      l_ref[g] = l

  if one_block:   # one split, one block: block 0 is the whole window
    live_S, keys_SxH, values_SxH = load_block(0)
    keys_SxH, values_SxH = keys_SxH.astype(jnp.float32), values_SxH.astype(jnp.float32)
    for g, q_H in enumerate(queries):
      logits_S = jnp.where(live_S, jnp.sum(keys_SxH * q_H[None, :], axis=1) * scale, -jnp.inf)
      m = jnp.max(logits_S)   # slot 0 is always live, so m is finite
      p_S = jnp.exp(logits_S - m)
      store(g, m, jnp.sum(p_S), jnp.sum(p_S[:, None] * values_SxH, axis=0))
    return

  if use_dot:
    rows_P = jnp.arange(16, dtype=jnp.int32)
    q_PxH = jnp.zeros((16, head_dim), jnp.float32)
    for g, q_H in enumerate(queries):
      q_PxH = jnp.where(rows_P[:, None] == g, q_H[None, :], q_PxH)
    cache_dtype = k_ref.dtype
    q_hi, q_lo = _split_hi_lo(q_PxH, cache_dtype)
    q_exact = jnp.dtype(q_ref.dtype) == jnp.dtype(cache_dtype)
    dims = dict(preferred_element_type=jnp.float32)
    contract_h = (((1,), (1,)), ((), ()))  # [P, H] x [S, H] -> [P, S]
    contract_s = (((1,), (0,)), ((), ()))  # [P, S] x [S, H] -> [P, H]

    def body(i, carry):
      live_S, keys, values = load_block(i)
      logits = lax.dot_general(q_hi, keys, contract_h, **dims)
      if not q_exact:
        logits += lax.dot_general(q_lo, keys, contract_h, **dims)

      def pv(p_PxS):
        p_hi, p_lo = _split_hi_lo(p_PxS, cache_dtype)
        return (lax.dot_general(p_hi, values, contract_s, **dims) +
                lax.dot_general(p_lo, values, contract_s, **dims))

      return online_update(*carry, logits * scale, live_S[None, :], pv)

    init = (jnp.full((16,), -jnp.inf, jnp.float32), jnp.zeros((16,), jnp.float32),
            jnp.zeros((16, head_dim), jnp.float32))
    m_P, l_P, acc_PxH = lax.fori_loop(0, n_iter, body, init)
    for g in range(n_groups):
      is_g = rows_P == g
      store(g, jnp.max(jnp.where(is_g, m_P, -jnp.inf)), jnp.sum(jnp.where(is_g, l_P, 0.0)),
            jnp.sum(jnp.where(is_g[:, None], acc_PxH, 0.0), axis=0))
    return

  def body(i, carry):
    live_S, keys, values = load_block(i)
    keys_SxH, values_SxH = keys.astype(jnp.float32), values.astype(jnp.float32)
    pv = lambda p_S: jnp.sum(p_S[:, None] * values_SxH, axis=0)
    return tuple(
        online_update(m, l, acc_H, jnp.sum(keys_SxH * q_H[None, :], axis=1) * scale,
                      live_S, pv)
        for q_H, (m, l, acc_H) in zip(queries, carry))

  init = tuple((jnp.float32(-jnp.inf), jnp.float32(0.0), jnp.zeros((head_dim,), jnp.float32))
               for _ in queries)
  for g, (m, l, acc_H) in enumerate(lax.fori_loop(0, n_iter, body, init)):
    store(g, m, l, acc_H)


def decode_attention(q_BxKxGxH: jax.Array, kv_LxBx2xKxSxH: jax.Array, layer,
                     lengths_B: jax.Array, *, window: int, scale: float,
                     block_s: int = 0, n_splits: int = 0, num_warps: int = 4,
                     num_stages: int = 2, products: str = 'auto',
                     interpret: bool | None = None) -> jax.Array:
  """Single-step attention of q over slots [0, lengths_B[b]) of layer `layer` of the cache.

  Equals, per row b, kv head k, group g: softmax((q[b,k,g] . keys) * scale) @ values over
  keys/values = cache[layer, b, 0/1, k, :lengths_B[b]], computed in float32.

  Args:
    q_BxKxGxH: queries, G query heads per kv head.
    kv_LxBx2xKxSxH: the full cache (all layers; keys, then values); read in place, never
      sliced.
    layer: the layer to read; a Python int (selected by the BlockSpec index map) or a
      traced int32 scalar (selected inside the kernel; e.g. a scanned layer index).
    lengths_B: live slots per row, integer; 1 <= lengths_B[b] <= window (values above
      window are clipped to window; a length of 0 gives NaN, like an empty softmax).
    window: static bound on the lengths; key blocks cover slots [0, window).
    scale: logit scale, e.g. head_dim ** -0.5.
    block_s: key slots per block; a power of two dividing window; 0 picks
      auto_block(window). block_s = window (without dots) reads each row in one block with
      no block loop and one split.
    n_splits: programs per (row, kv head) along the keys; 0 picks auto_splits(...).
      Capped at window // block_s.
    num_warps, num_stages: Triton launch parameters of the kernel (GPU only).
    products: how q.k and p.v are formed: 'dot' as tensor-core dots with the queries padded
      to 16 rows (needs a 16-bit cache, block_s >= 16 and head_dim >= 16), 'reduce' as
      elementwise multiplies and sums; 'auto' is 'dot' for 2 to 16 query heads per kv head
      over a 16-bit cache, else 'reduce'.
    interpret: run the Pallas interpreter; None means interpret unless the default backend
      is 'gpu'.

  Returns:
    [B, K, G, H] attention output in q's dtype.

  Raises:
    ValueError: for mismatched shapes or bad window / block_s / n_splits / layer /
      num_warps / num_stages.
  """
  if q_BxKxGxH.ndim != 4:
    raise ValueError(f'q_BxKxGxH must be [B, K, G, H], got shape {q_BxKxGxH.shape}')
  n_layers, batch, _, kv_heads, slots, head_dim = cache_dims(kv_LxBx2xKxSxH)
  _, _, n_groups, _ = q_BxKxGxH.shape
  if q_BxKxGxH.shape != (batch, kv_heads, n_groups, head_dim):
    raise ValueError(f'q_BxKxGxH shape {q_BxKxGxH.shape} does not match the cache '
                     f'(B, K, H) = {(batch, kv_heads, head_dim)}')
  if (jnp.shape(lengths_B) != (batch,)
      or not jnp.issubdtype(jnp.result_type(lengths_B), jnp.integer)):
    raise ValueError(f'lengths_B must be an integer [B={batch}] array, got '
                     f'{jnp.result_type(lengths_B)}{list(jnp.shape(lengths_B))}')
  if not is_pow2(head_dim):
    raise ValueError(f'head dim H={head_dim} of kv_LxBx2xKxSxH must be a power of two')
  if not isinstance(window, int) or not 1 <= window <= slots:
    raise ValueError(f'window={window!r} must be an int in [1, S={slots}]')
  if isinstance(block_s, int) and block_s == 0:   # (the window is checked above)
    block_s = auto_block(window)
  if not isinstance(block_s, int) or not is_pow2(block_s):
    raise ValueError(f'block_s={block_s!r} must be a power of two (or 0: automatic)')
  if window % block_s:
    raise ValueError(f'block_s={block_s} must divide window={window}')
  if not isinstance(n_splits, int) or n_splits < 0:
    raise ValueError(f'n_splits={n_splits!r} must be an int >= 0 (0: automatic)')
  for name, value in (('num_warps', num_warps), ('num_stages', num_stages)):
    if not isinstance(value, int) or value < 1:
      raise ValueError(f'{name}={value!r} must be a positive int')
  dynamic_layer = is_traced_layer(layer, n_layers)
  if products not in ('auto', 'dot', 'reduce'):
    raise ValueError(f"products={products!r} must be 'auto', 'dot' or 'reduce'")
  dot_ok = (n_groups <= 16 and jnp.dtype(kv_LxBx2xKxSxH.dtype).itemsize == 2
            and block_s >= 16 and head_dim >= 16)
  if products == 'dot' and not dot_ok:
    raise ValueError(f"products='dot' needs a 16-bit cache, at most 16 query heads per kv "
                     f"head, block_s >= 16 and head_dim >= 16; got {kv_LxBx2xKxSxH.dtype}, "
                     f"G={n_groups}, block_s={block_s}, H={head_dim}")
  use_dot = products == 'dot' or (products == 'auto' and dot_ok and n_groups > 1)
  splits = auto_splits(batch, kv_heads, window, block_s) if n_splits == 0 else n_splits
  one_block = block_s == window and not use_dot
  if interpret is None:
    interpret = jax.default_backend() != 'gpu'
  return _decode(q_BxKxGxH, kv_LxBx2xKxSxH, lengths_B,
                 jnp.asarray(layer, jnp.int32) if dynamic_layer else None,
                 static_layer=None if dynamic_layer else int(layer), window=window,
                 scale=float(scale), block_s=block_s, splits=min(splits, window // block_s),
                 use_dot=use_dot, num_warps=num_warps, num_stages=num_stages,
                 one_block=one_block, interpret=bool(interpret))


@functools.partial(jax.jit, static_argnames=('static_layer', 'window', 'scale', 'block_s',
                                             'splits', 'use_dot', 'num_warps', 'num_stages',
                                             'one_block', 'interpret'))
def _decode(q_BxKxGxH, kv_LxBx2xKxSxH, lengths_B, dynamic_layer, *,
            static_layer, window, scale, block_s, splits, use_dot, num_warps, num_stages,
            one_block, interpret):
  """The pallas_call and, with several splits, the split-merging epilogue (with one split
  the kernel writes the normalised output itself)."""
  n_layers, batch, _, kv_heads, slots, head_dim = kv_LxBx2xKxSxH.shape
  n_groups = q_BxKxGxH.shape[2]
  lengths_B = jnp.minimum(lengths_B.astype(jnp.int32), window)
  q_spec = pl.BlockSpec((None, None, n_groups, head_dim), lambda k, b, s: (b, k, 0, 0))
  len_spec = pl.BlockSpec((None,), lambda k, b, s: (b,))
  # The cache goes in twice, as keys (index 0 of axis 2) and values (index 1).
  if static_layer is None:
    k_spec, v_spec = (pl.BlockSpec((n_layers, None, None, None, slots, head_dim),
                            lambda k, b, s, i=i: (0, b, i, k, 0, 0)) for i in (0, 1))
    in_specs = [q_spec, k_spec, v_spec, len_spec, pl.BlockSpec((1,), lambda k, b, s: (0,))]
    operands = [q_BxKxGxH, kv_LxBx2xKxSxH, kv_LxBx2xKxSxH, lengths_B,
                jnp.reshape(dynamic_layer, (1,))]
  else:
    k_spec, v_spec = (pl.BlockSpec((None, None, None, None, slots, head_dim),
                            lambda k, b, s, i=i: (static_layer, b, i, k, 0, 0))
                      for i in (0, 1))
    in_specs = [q_spec, k_spec, v_spec, len_spec]
    operands = [q_BxKxGxH, kv_LxBx2xKxSxH, kv_LxBx2xKxSxH, lengths_B]

  normalize = splits == 1
  if normalize:
    out_specs = [pl.BlockSpec((None, None, n_groups, head_dim), lambda k, b, s: (b, k, 0, 0))]
    out_shape = [jax.ShapeDtypeStruct(q_BxKxGxH.shape, q_BxKxGxH.dtype)]
  else:
    part_shape = (batch, kv_heads, splits, n_groups)
    out_specs = [
        pl.BlockSpec((None, None, None, n_groups, head_dim), lambda k, b, s: (b, k, s, 0, 0)),
        pl.BlockSpec((None, None, None, n_groups), lambda k, b, s: (b, k, s, 0)),
        pl.BlockSpec((None, None, None, n_groups), lambda k, b, s: (b, k, s, 0)),
    ]
    out_shape = [
        jax.ShapeDtypeStruct((*part_shape, head_dim), jnp.float32),
        jax.ShapeDtypeStruct(part_shape, jnp.float32),
        jax.ShapeDtypeStruct(part_shape, jnp.float32),
    ]
  kernel = functools.partial(_kernel, n_groups=n_groups, n_splits=splits, block_s=block_s,
                             scale=scale, dynamic_layer=static_layer is None,
                             use_dot=use_dot, normalize=normalize, one_block=one_block)
  outs = pl.pallas_call(
      kernel,
      grid=(kv_heads, batch, splits),
      in_specs=in_specs,
      out_specs=out_specs,
      out_shape=out_shape,
      compiler_params=plgpu.CompilerParams(num_warps=num_warps, num_stages=num_stages),
      interpret=interpret,
      name='decode_attention',
  )(*operands)
  if normalize:
    return outs[0]
  acc_BxKxNxGxH, m_BxKxNxG, l_BxKxNxG = outs
  m_BxKxG = jnp.max(m_BxKxNxG, axis=2)
  w_BxKxNxG = jnp.exp(m_BxKxNxG - m_BxKxG[:, :, None])  # 0 for splits with no blocks
  l_BxKxG = jnp.sum(w_BxKxNxG * l_BxKxNxG, axis=2)
  out = jnp.sum(w_BxKxNxG[..., None] * acc_BxKxNxGxH, axis=2) / l_BxKxG[..., None]
  return out.astype(q_BxKxGxH.dtype)


def reference_decode_attention(q_BxKxGxH, kv_LxBx2xKxSxH, layer, lengths_B, *,
                               window: int, scale: float) -> jax.Array:
  """Plain-JAX masked attention over the first `window` slots (the benchmark's baseline)."""
  keys = kv_LxBx2xKxSxH[layer, :, 0, :, :window].astype(jnp.float32)
  values = kv_LxBx2xKxSxH[layer, :, 1, :, :window].astype(jnp.float32)
  logits = jnp.einsum('bkgh,bksh->bkgs', q_BxKxGxH.astype(jnp.float32), keys) * scale
  live_BxS = jnp.arange(window)[None, :] < lengths_B[:, None]
  logits = jnp.where(live_BxS[:, None, None, :], logits, -jnp.inf)
  probs = jax.nn.softmax(logits, axis=-1)
  return jnp.einsum('bkgs,bksh->bkgh', probs, values).astype(q_BxKxGxH.dtype)


def _main():
  import argparse
  import time
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, default=4096)
  parser.add_argument('--kv-heads', type=int, default=4)
  parser.add_argument('--groups', type=int, default=1)
  parser.add_argument('--head-dim', type=int, default=64)
  parser.add_argument('--seq', type=int, default=128, help='cache slots S (= window)')
  parser.add_argument('--live', default='80',
                      help="live slots per row: N, or A-B for lengths uniform in [A, B]")
  parser.add_argument('--layers', type=int, default=4)
  parser.add_argument('--configs', default='64:4:2',
                      help='comma-separated block_s:num_warps:num_stages[:products] kernel '
                           'settings, timed side by side')
  parser.add_argument('--n-splits', type=int, default=0)
  parser.add_argument('--dtype', default='bfloat16')
  parser.add_argument('--iters', type=int, default=50)
  a = parser.parse_args()
  b, kh, g, h, s = a.batch, a.kv_heads, a.groups, a.head_dim, a.seq
  keys = jax.random.split(jax.random.key(0), 3)
  q = jax.random.normal(keys[0], (b, kh, g, h), a.dtype)
  kv = jax.random.normal(keys[1], (a.layers, b, 2, kh, s, h), a.dtype)
  # --live N: every row has N live slots; --live A-B: lengths drawn uniformly from [A, B].
  lo, _, hi = a.live.partition('-')
  lengths = jax.random.randint(jax.random.key(3), (b,), int(lo), int(hi or lo) + 1)
  mean_live = float(jnp.mean(lengths))
  # A static layer, as in the sampler; one layer's cache is far larger than the L2 cache.
  opts = dict(window=s, scale=h ** -0.5, layer=a.layers - 1)
  fns = {'reference': jax.jit(functools.partial(reference_decode_attention, **opts))}
  from ttc_jax.model.config import parse_decode_kernel
  for spec in a.configs.split(','):
    blk, warps, stages, products = parse_decode_kernel(spec, '--configs')
    fns[f'pallas {spec}'] = jax.jit(functools.partial(
        decode_attention, block_s=blk, n_splits=a.n_splits, num_warps=warps,
        num_stages=stages, products=products, **opts))
  live_bytes = 2 * b * kh * mean_live * h * jnp.dtype(a.dtype).itemsize
  print(f'backend={jax.default_backend()} B={b} K={kh} G={g} H={h} S={s} live={a.live} '
        f'L={a.layers} splits={a.n_splits or "auto"} dtype={a.dtype}')
  want = None
  for name, fn in fns.items():
    try:
      for _ in range(2):   # warm-up: compile, then any first-run setup
        out = fn(q, kv, lengths_B=lengths).block_until_ready()
    except Exception as e:  # a setting the compiler rejects: report it, time the others
      print(f'{name:>18}: failed: {type(e).__name__}: {str(e)[:300]}', flush=True)
      continue
    want = out if want is None else want
    t0 = time.perf_counter()
    for _ in range(a.iters):
      out = fn(q, kv, lengths_B=lengths)
    out.block_until_ready()
    us = (time.perf_counter() - t0) / a.iters * 1e6
    err = float(jnp.max(jnp.abs(out.astype(jnp.float32) - want.astype(jnp.float32))))
    print(f'{name:>18}: {us:9.1f} us/call  {live_bytes / us / 1e3:8.1f} GB/s of live KV  '
          f'max |out - reference| = {err:.3g}', flush=True)


if __name__ == '__main__':
  _main()
