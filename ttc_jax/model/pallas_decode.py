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


def _is_pow2(n: int) -> bool:
  return n >= 1 and (n & (n - 1)) == 0


def auto_splits(batch: int, kv_heads: int, window: int, block_s: int) -> int:
  """Splits per (row, kv head): enough programs for ~132 SMs, at most one per key block."""
  n_blocks = window // block_s
  return max(1, min(n_blocks, math.ceil(_TARGET_PROGRAMS / (batch * kv_heads))))


def auto_block(window: int) -> int:
  """block_s=0: the whole window as one block when it is a power of two of at most
  ONE_BLOCK_MAX slots, else LOOP_BLOCK-slot blocks (or the largest power of two dividing the
  window, if smaller)."""
  if _is_pow2(window) and window <= ONE_BLOCK_MAX:
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


def _split_hi_lo(x, dtype):
  """x (float32) as hi + lo in `dtype`: two 16-bit dot operands carrying ~16 mantissa bits."""
  hi = x.astype(dtype)
  return hi, (x - hi.astype(jnp.float32)).astype(dtype)


def _kernel(*refs, n_groups: int, n_splits: int, block_s: int, scale: float,
            dynamic_layer: bool, use_dot: bool, normalize: bool, one_block: bool,
            append: bool, scaled: bool, biased: bool, rotate: bool):
  """One (row b, kv head k, split s) program; see the module docstring.

  one_block (block_s = window, one split, no dots): the row's keys and values are read by
  one masked load each and the softmax is computed directly, with no block loop: a program
  then makes one round trip to memory instead of one per block.

  append (`decode_attention_append`; no dots): the step's own key and value come in as
  inputs, with its query, as the projection matmul leaves them: each is scaled by the row's
  norm scale (`scaled`), offset by its bias (`biased`) and rotated (RoPE, `rotate`) here.
  Only slots below length - 1 are read from the cache; the new key and value are written
  to slot length - 1 (when the row's write flag is set; by split 0 only) and enter the
  softmax as its initial state in split 0 (one logit, weight 1, accumulator v_new).

  Inputs: q [G, H]; append only: k_new [H], v_new [H], write []; scaled only: row_scale [];
  biased only: the biases of q, k_new, v_new ([G, H], [H], [H]); rotate only: cos [H],
  sin [H]; kv [2, S, H] ([L, 2, S, H] for a dynamic layer; keys at index 0, values at 1);
  length []; layer [1] (dynamic layer only). Outputs: normalize=True (one split): out [G, H]
  in q's dtype; else the partials acc [G, H], m [G], l [G] (float32); append only: the cache
  (aliased to kv's input, written in place).
  use_dot=False: each query group g keeps its own (m, l, acc[H]) and the logits are an
  elementwise multiply + reduce over H (no tiny matmul). use_dot=True (16-bit caches, G > 1):
  the G queries are padded to 16 rows and both products run as tensor-core dots with float32
  accumulation; float32 operands (q, probabilities) are split into hi + lo 16-bit parts so
  the result keeps float32-level accuracy.
  """
  refs = list(refs)
  q_ref = refs.pop(0)
  if append:
    knew_ref, vnew_ref, write_ref = refs.pop(0), refs.pop(0), refs.pop(0)
  row_scale = refs.pop(0)[()] if scaled else None
  if biased:
    qb_ref, kb_ref, vb_ref = refs.pop(0), refs.pop(0), refs.pop(0)
  else:
    qb_ref = kb_ref = vb_ref = None
  if rotate:
    cos_ref, sin_ref = refs.pop(0), refs.pop(0)
  kv_ref, len_ref = refs.pop(0), refs.pop(0)
  layer = refs.pop(0)[0] if dynamic_layer else None
  cache_out_ref = refs.pop() if append else None
  out_refs = refs
  at = ((lambda i, sl: (layer, jnp.int32(i), sl, slice(None))) if dynamic_layer else
        (lambda i, sl: (jnp.int32(i), sl, slice(None))))
  split = pl.program_id(2)
  length = len_ref[()]
  # Slots read from the cache: all live ones, or (appending) all but the new one at
  # length - 1. Blocks without such a slot are never visited.
  cache_length = length - 1 if append else length
  live_blocks = lax.div(cache_length + (block_s - 1), block_s)
  # Blocks split, split + n, ... below live_blocks; live_blocks >= 0 > split - n keeps the
  # numerator non-negative, so truncating division is floor division.
  n_iter = lax.div(live_blocks - split + (n_splits - 1), n_splits)
  head_dim = q_ref.shape[-1]
  offsets = jnp.arange(block_s, dtype=jnp.int32)
  lanes_H = jnp.arange(head_dim, dtype=jnp.int32)
  # Lane h of swap_H is h + H/2 (mod H): reading a vector at swap_H exchanges its halves.
  swap_H = jnp.where(lanes_H < head_dim // 2, lanes_H + head_dim // 2, lanes_H - head_dim // 2)

  def project(ref, bias_ref, index, lanes):
    """A projection's lanes as the model rounds them: x * row_scale + bias in float32, then
    x's dtype (the fused-weights layer's norm scale and bias)."""
    index = (*(jnp.int32(i) for i in index), lanes)   # (Pallas indexes with arrays)
    x = plgpu.load(ref.at[index]).astype(jnp.float32)
    if scaled:
      x = x * row_scale
    if biased:
      x = x + plgpu.load(bias_ref.at[index]).astype(jnp.float32)
    return x.astype(ref.dtype)

  def read_vector(ref, bias_ref=None, *index):
    """ref[*index, :] projected, then (rotate) RoPE as x * cos + swap(x) * sin (sin's first
    half holds -sin), rounded to x's dtype like `transformer.rope`; float32."""
    x = project(ref, bias_ref, index, slice(None)).astype(jnp.float32)
    if not rotate:
      return x
    swapped = project(ref, bias_ref, index, swap_H).astype(jnp.float32)
    return (x * cos_ref[...] + swapped * sin_ref[...]).astype(ref.dtype).astype(jnp.float32)

  def load_block(i):
    start = pl.multiple_of((split + i * n_splits) * block_s, block_s)
    # Masked loads: slots at or past the cache length (dead, or the appended one) are not
    # fetched and read as zeros.
    live_S = (start + offsets) < cache_length  # slot `start` is always live
    rows = pl.ds(start, block_s)
    keys = plgpu.load(kv_ref.at[at(0, rows)], mask=live_S[:, None], other=0.)
    values = plgpu.load(kv_ref.at[at(1, rows)], mask=live_S[:, None], other=0.)
    return live_S, keys, values

  def load_block_f32(i):
    live_S, keys, values = load_block(i)
    return live_S, keys.astype(jnp.float32), values.astype(jnp.float32)

  # The one block's loads come first, so they are in flight while the rest is computed (a
  # store, or anything waiting on the small loads below, would hold them back).
  first = load_block_f32(0) if one_block else None
  queries = [read_vector(q_ref, qb_ref, g) for g in range(n_groups)]
  if append:
    # The new key and value as the cache holds them, written at the program's end: a store
    # before the math keeps both blocks' loads in registers across it (no load of the cache
    # may move past a store to it); ptxas of Triton 3.9 at issue 3's M shape: 95 registers
    # per thread against 64.
    k_new, v_new = (read_vector(knew_ref, kb_ref).astype(cache_out_ref.dtype),
                    project(vnew_ref, vb_ref, (), slice(None)).astype(cache_out_ref.dtype))
    new_cache = (k_new, v_new)

    def write_new():
      writes = jnp.broadcast_to((write_ref[()] != 0) & (split == 0), (1, head_dim))
      for i, new_H in enumerate(new_cache):
        plgpu.store(cache_out_ref.at[at(i, pl.ds(length - 1, 1))], new_H[None, :], mask=writes)
    k_new, v_new = k_new.astype(jnp.float32), v_new.astype(jnp.float32)
  else:
    write_new = lambda: None

  def initial_state(q_H):
    """Online-softmax state (m, l, acc) before the cache's slots: the appended slot (in
    split 0), else empty."""
    if append:
      logit = jnp.sum(k_new * q_H) * scale
      weight = (split == 0).astype(jnp.float32)
      return (jnp.where(split == 0, logit, jnp.float32(-jnp.inf)), weight, weight * v_new)
    return jnp.float32(-jnp.inf), jnp.float32(0.0), jnp.zeros((head_dim,), jnp.float32)

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
    live_S, keys_SxH, values_SxH = first
    pv = lambda p_S: jnp.sum(p_S[:, None] * values_SxH, axis=0)
    for g, q_H in enumerate(queries):
      logits_S = jnp.sum(keys_SxH * q_H[None, :], axis=1) * scale
      if append:   # the appended slot is the state before the block (which may be empty)
        store(g, *online_update(*initial_state(q_H), logits_S, live_S, pv))
        continue
      logits_S = jnp.where(live_S, logits_S, -jnp.inf)
      m = jnp.max(logits_S)   # slot 0 is always live, so m is finite
      p_S = jnp.exp(logits_S - m)
      store(g, m, jnp.sum(p_S), pv(p_S))
    write_new()
    return

  if use_dot:
    rows_P = jnp.arange(16, dtype=jnp.int32)
    q_PxH = jnp.zeros((16, head_dim), jnp.float32)
    for g, q_H in enumerate(queries):
      q_PxH = jnp.where(rows_P[:, None] == g, q_H[None, :], q_PxH)
    cache_dtype = kv_ref.dtype
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
    live_S, keys_SxH, values_SxH = load_block_f32(i)
    pv = lambda p_S: jnp.sum(p_S[:, None] * values_SxH, axis=0)
    return tuple(
        online_update(m, l, acc_H, jnp.sum(keys_SxH * q_H[None, :], axis=1) * scale,
                      live_S, pv)
        for q_H, (m, l, acc_H) in zip(queries, carry))

  init = tuple(initial_state(q_H) for q_H in queries)
  for g, (m, l, acc_H) in enumerate(lax.fori_loop(0, n_iter, body, init)):
    store(g, m, l, acc_H)
  write_new()


def uses_dots(n_groups: int, cache_dtype, block_s: int, head_dim: int,
              products: str = 'auto') -> bool:
  """Whether the kernel forms its products as tensor-core dots (see `decode_attention`'s
  `products`); block_s=0 stands for auto_block's choice, which is at least 16 slots for
  windows of 16 or more."""
  dot_ok = (n_groups <= 16 and jnp.dtype(cache_dtype).itemsize == 2
            and (block_s == 0 or block_s >= 16) and head_dim >= 16)
  if products == 'dot' and not dot_ok:
    raise ValueError(f"products='dot' needs a 16-bit cache, at most 16 query heads per kv "
                     f"head, block_s >= 16 and head_dim >= 16; got {jnp.dtype(cache_dtype)}, "
                     f"G={n_groups}, block_s={block_s}, H={head_dim}")
  return products == 'dot' or (products == 'auto' and dot_ok and n_groups > 1)


def _cache_shape(kv_LxBx2xKxSxH) -> tuple[int, ...]:
  shape = tuple(getattr(kv_LxBx2xKxSxH, 'shape', ()))
  if len(shape) != 6 or shape[2] != 2:
    raise ValueError(f'kv_LxBx2xKxSxH must be [L, B, 2, K, S, H], got shape {shape}')
  return shape


def _settings(kv_LxBx2xKxSxH, n_groups, lengths_B, layer, *, window, block_s, n_splits,
              num_warps, num_stages, products):
  """Checks the arguments shared by both entry points; returns the resolved static settings
  (block_s, splits, use_dot, one_block, dynamic_layer)."""
  n_layers, batch, _, kv_heads, slots, head_dim = _cache_shape(kv_LxBx2xKxSxH)
  if (jnp.shape(lengths_B) != (batch,)
      or not jnp.issubdtype(jnp.result_type(lengths_B), jnp.integer)):
    raise ValueError(f'lengths_B must be an integer [B={batch}] array, got '
                     f'{jnp.result_type(lengths_B)}{list(jnp.shape(lengths_B))}')
  if not _is_pow2(head_dim):
    raise ValueError(f'head dim H={head_dim} of kv_LxBx2xKxSxH must be a power of two')
  if not isinstance(window, int) or not 1 <= window <= slots:
    raise ValueError(f'window={window!r} must be an int in [1, S={slots}]')
  if isinstance(block_s, int) and block_s == 0:
    block_s = auto_block(window)
  if not isinstance(block_s, int) or not _is_pow2(block_s):
    raise ValueError(f'block_s={block_s!r} must be a power of two (or 0: automatic)')
  if window % block_s:
    raise ValueError(f'block_s={block_s} must divide window={window}')
  if not isinstance(n_splits, int) or n_splits < 0:
    raise ValueError(f'n_splits={n_splits!r} must be an int >= 0 (0: automatic)')
  for name, value in (('num_warps', num_warps), ('num_stages', num_stages)):
    if not isinstance(value, int) or value < 1:
      raise ValueError(f'{name}={value!r} must be a positive int')
  dynamic_layer = not isinstance(layer, (int, np.integer))
  if dynamic_layer:
    if jnp.shape(layer) != () or not jnp.issubdtype(jnp.result_type(layer), jnp.integer):
      raise ValueError(f'layer must be an int or an integer scalar, got {layer!r}')
  elif not 0 <= layer < n_layers:
    raise ValueError(f'layer={layer} out of range for L={n_layers} layers')
  if products not in ('auto', 'dot', 'reduce'):
    raise ValueError(f"products={products!r} must be 'auto', 'dot' or 'reduce'")
  use_dot = uses_dots(n_groups, kv_LxBx2xKxSxH.dtype, block_s, head_dim, products)
  splits = auto_splits(batch, kv_heads, window, block_s) if n_splits == 0 else n_splits
  return (block_s, min(splits, window // block_s), use_dot, block_s == window and not use_dot,
          dynamic_layer)


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
  n_groups = q_BxKxGxH.shape[2]
  block_s, splits, use_dot, one_block, dynamic_layer = _settings(
      kv_LxBx2xKxSxH, n_groups, lengths_B, layer, window=window, block_s=block_s,
      n_splits=n_splits, num_warps=num_warps, num_stages=num_stages, products=products)
  _, batch, _, kv_heads, _, head_dim = kv_LxBx2xKxSxH.shape
  if q_BxKxGxH.shape != (batch, kv_heads, n_groups, head_dim):
    raise ValueError(f'q_BxKxGxH shape {q_BxKxGxH.shape} does not match the cache '
                     f'(B, K, H) = {(batch, kv_heads, head_dim)}')
  if interpret is None:
    interpret = jax.default_backend() != 'gpu'
  return _decode(q_BxKxGxH, None, kv_LxBx2xKxSxH, lengths_B, None, None, None, None,
                 jnp.asarray(layer, jnp.int32) if dynamic_layer else None,
                 static_layer=None if dynamic_layer else int(layer), window=window,
                 scale=float(scale), block_s=block_s, splits=splits, use_dot=use_dot,
                 num_warps=num_warps, num_stages=num_stages, one_block=one_block,
                 interpret=bool(interpret))


def decode_attention_append(qkv_BxCxH: jax.Array, kv_LxBx2xKxSxH: jax.Array, layer,
                            lengths_B: jax.Array, write_B: jax.Array, *, window: int,
                            scale: float, row_scale_B: jax.Array | None = None,
                            bias_CxH: jax.Array | None = None,
                            rope_cos_BxH: jax.Array | None = None,
                            rope_sin_BxH: jax.Array | None = None, block_s: int = 0,
                            n_splits: int = 0, num_warps: int = 4, num_stages: int = 2,
                            interpret: bool | None = None) -> tuple[jax.Array, jax.Array]:
  """One decode step's attention with the step's own key and value appended to the cache,
  in one kernel: no separate RoPE, stacking or scatter of the new key and value.

  qkv_BxCxH holds each row's projections, C = N + 2K heads: N = K * G query heads, then K
  keys, then K values (the fused q/k/v matmul's output, before its norm scale, bias and
  RoPE). Per row b this equals

    x = (qkv[b] * row_scale_B[b] + bias_CxH).astype(qkv.dtype)   (float32; each if given)
    q, k, v = split(x);  q, k = rope(q), rope(k)          (with the rope tables given)
    cache[layer, b, :, :, lengths_B[b] - 1] = (k, v)      (only where write_B[b])
    out[b] = decode_attention(q, cache, layer, lengths_B)[b]

  except that a row with write_B False still attends to its new key and value at slot
  lengths_B[b] - 1 without writing them (its output is normally discarded).

  Args:
    row_scale_B: float32 [B], or None: a per-row scale of the projections (a pre-norm
      folded into the matmul, as `transformer.Block(fused=True)` does).
    bias_CxH: [C, H], or None: the projections' biases.
    rope_cos_BxH, rope_sin_BxH: float32 [B, H] tables from `transformer.rope_tables`
      (rotate-half RoPE of one position per row, sin's first half negated), or both None
      for no rotation.
    write_B: bool or integer [B]; rows whose new key and value go into the cache.
    The rest as in `decode_attention`; the products are always multiply-reduce, so only
    caches for which `uses_dots(...)` is False are accepted.

  Returns:
    ([B, K, G, H] attention output in qkv's dtype, the cache with the new slots written: the
    input's buffer, updated in place when it is donated or dead afterwards).
  """
  if qkv_BxCxH.ndim != 3:
    raise ValueError(f'qkv_BxCxH must be [B, C, H], got shape {qkv_BxCxH.shape}')
  _, batch, _, kv_heads, _, head_dim = _cache_shape(kv_LxBx2xKxSxH)
  n_heads = qkv_BxCxH.shape[1] - 2 * kv_heads
  if (n_heads < kv_heads or n_heads % kv_heads
      or qkv_BxCxH.shape[::2] != (batch, head_dim)):
    raise ValueError(f'qkv_BxCxH shape {qkv_BxCxH.shape} must be [B={batch}, N + 2K, '
                     f'H={head_dim}] with N a multiple of K={kv_heads}')
  block_s, splits, use_dot, one_block, dynamic_layer = _settings(
      kv_LxBx2xKxSxH, n_heads // kv_heads, lengths_B, layer, window=window,
      block_s=block_s, n_splits=n_splits, num_warps=num_warps, num_stages=num_stages,
      products='reduce')
  if jnp.shape(write_B) != (batch,):
    raise ValueError(f'write_B must be [B={batch}], got shape {jnp.shape(write_B)}')
  rotate = rope_cos_BxH is not None
  if rotate != (rope_sin_BxH is not None) or rotate and not (
      jnp.shape(rope_cos_BxH) == jnp.shape(rope_sin_BxH) == (batch, head_dim)):
    raise ValueError(f'rope_cos_BxH and rope_sin_BxH must both be [B={batch}, H={head_dim}] '
                     f'or both None')
  if row_scale_B is not None and jnp.shape(row_scale_B) != (batch,):
    raise ValueError(f'row_scale_B must be [B={batch}], got shape {jnp.shape(row_scale_B)}')
  if bias_CxH is not None and jnp.shape(bias_CxH) != qkv_BxCxH.shape[1:]:
    raise ValueError(f'bias_CxH must be [C, H]={list(qkv_BxCxH.shape[1:])}, got shape '
                     f'{jnp.shape(bias_CxH)}')
  if interpret is None:
    interpret = jax.default_backend() != 'gpu'
  f32 = lambda x: None if x is None else jnp.asarray(x, jnp.float32)
  return _decode(qkv_BxCxH, jnp.asarray(write_B).astype(jnp.int32), kv_LxBx2xKxSxH,
                 lengths_B, f32(row_scale_B), bias_CxH, f32(rope_cos_BxH), f32(rope_sin_BxH),
                 jnp.asarray(layer, jnp.int32) if dynamic_layer else None,
                 static_layer=None if dynamic_layer else int(layer), window=window,
                 scale=float(scale), block_s=block_s, splits=splits, use_dot=use_dot,
                 num_warps=num_warps, num_stages=num_stages, one_block=one_block,
                 interpret=bool(interpret))


@functools.partial(jax.jit, static_argnames=('static_layer', 'window', 'scale', 'block_s',
                                             'splits', 'use_dot', 'num_warps', 'num_stages',
                                             'one_block', 'interpret'))
def _decode(q, write_B, kv_LxBx2xKxSxH, lengths_B, row_scale_B, bias_CxH, cos_BxH, sin_BxH,
            dynamic_layer, *,
            static_layer, window, scale, block_s, splits, use_dot, num_warps, num_stages,
            one_block, interpret):
  """The pallas_call and, with several splits, the split-merging epilogue (with one split
  the kernel writes the normalised output itself). q is q_BxKxGxH, or qkv_BxCxH when
  appending (write_B given); returns the output, or (output, cache) when appending."""
  n_layers, batch, _, kv_heads, slots, head_dim = kv_LxBx2xKxSxH.shape
  append, rotate = write_B is not None, cos_BxH is not None
  scaled, biased = row_scale_B is not None, bias_CxH is not None
  row = lambda shape: pl.BlockSpec((None, *shape), lambda k, b, s: (b,) + (0,) * len(shape))
  if append:   # query heads kG .. kG + G - 1, then key N + k and value N + K + k of qkv
    n_groups = (q.shape[1] - 2 * kv_heads) // kv_heads
    n_heads = n_groups * kv_heads
    heads = lambda lead: [  # (q, k, v) specs of qkv (lead: its row axis) or of the biases
        pl.BlockSpec((*lead, n_groups, head_dim), lambda k, b, s: (*(b,)[:len(lead)], k, 0))
    ] + [pl.BlockSpec((*lead, None, head_dim),
                      lambda k, b, s, o=o: (*(b,)[:len(lead)], o + k, 0))
         for o in (n_heads, n_heads + kv_heads)]
    in_specs = heads((None,)) + [row(())]
    operands = [q, q, q, write_B]
    out_dtype = q.dtype
    if scaled:
      in_specs.append(row(()))
      operands.append(row_scale_B)
    if biased:
      in_specs += heads(())
      operands += [bias_CxH] * 3
    if rotate:
      in_specs += [row((head_dim,)), row((head_dim,))]
      operands += [cos_BxH, sin_BxH]
  else:
    n_groups = q.shape[2]
    in_specs = [pl.BlockSpec((None, None, n_groups, head_dim), lambda k, b, s: (b, k, 0, 0))]
    operands = [q]
    out_dtype = q.dtype
  lengths_B = jnp.minimum(lengths_B.astype(jnp.int32), window)
  # The cache is one operand, keys and values of a (row, kv head) one [2, S, H] block (index
  # 0 keys, 1 values); appending writes it in place (aliased to the last output).
  if static_layer is None:
    kv_spec = pl.BlockSpec((n_layers, None, 2, None, slots, head_dim),
                           lambda k, b, s: (0, b, 0, k, 0, 0))
  else:
    kv_spec = pl.BlockSpec((None, None, 2, None, slots, head_dim),
                           lambda k, b, s: (static_layer, b, 0, k, 0, 0))
  kv_index = len(operands)
  in_specs += [kv_spec, row(())]
  operands += [kv_LxBx2xKxSxH, lengths_B]
  if static_layer is None:
    in_specs.append(pl.BlockSpec((1,), lambda k, b, s: (0,)))
    operands.append(jnp.reshape(dynamic_layer, (1,)))

  normalize = splits == 1
  if normalize:
    out_specs = [pl.BlockSpec((None, None, n_groups, head_dim), lambda k, b, s: (b, k, 0, 0))]
    out_shape = [jax.ShapeDtypeStruct((batch, kv_heads, n_groups, head_dim), out_dtype)]
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
  aliases = {}
  if append:
    aliases = {kv_index: len(out_shape)}
    out_specs.append(kv_spec)
    out_shape.append(jax.ShapeDtypeStruct(kv_LxBx2xKxSxH.shape, kv_LxBx2xKxSxH.dtype))
  kernel = functools.partial(_kernel, n_groups=n_groups, n_splits=splits, block_s=block_s,
                             scale=scale, dynamic_layer=static_layer is None,
                             use_dot=use_dot, normalize=normalize, one_block=one_block,
                             append=append, scaled=scaled, biased=biased, rotate=rotate)
  outs = pl.pallas_call(
      kernel,
      grid=(kv_heads, batch, splits),
      in_specs=in_specs,
      out_specs=out_specs,
      out_shape=out_shape,
      input_output_aliases=aliases,
      compiler_params=plgpu.CompilerParams(num_warps=num_warps, num_stages=num_stages),
      interpret=interpret,
      name='decode_attention_append' if append else 'decode_attention',
  )(*operands)
  outs, cache = (outs[:-1], outs[-1]) if append else (outs, None)
  if normalize:
    out = outs[0]
  else:
    acc_BxKxNxGxH, m_BxKxNxG, l_BxKxNxG = outs
    m_BxKxG = jnp.max(m_BxKxNxG, axis=2)
    w_BxKxNxG = jnp.exp(m_BxKxNxG - m_BxKxG[:, :, None])  # 0 for splits with no blocks
    l_BxKxG = jnp.sum(w_BxKxNxG * l_BxKxNxG, axis=2)
    out = (jnp.sum(w_BxKxNxG[..., None] * acc_BxKxNxGxH, axis=2) / l_BxKxG[..., None]
           ).astype(out_dtype)
  return (out, cache) if append else out


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
