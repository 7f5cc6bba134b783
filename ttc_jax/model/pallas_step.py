"""Pallas kernels for the elementwise work of a decode step around its matmuls.

In a decode step of the fused-weights layer (`transformer.Block(fused=True)`), XLA runs, per
layer, besides the four matmuls and the attention kernel:
- a kernel of its own (1024 elements at M/1024) for each pre-norm's row scale
  rsqrt(mean(x^2) + eps);
- a scatter fusion that scales, biases and rotates the new key and writes it with the value
  into the cache, and a fusion that does the same for the query;
- the SwiGLU fusion over the gate/up matmul's output.
On an H200 at issue 3's M/1024 shape these take 1.2 + 1.2, 5.5, 2.7 and 7.5 us per layer, 13%
of the step. Two kernels replace them (4.2 and 5.2 us), each taking the row's sum of squares
(which XLA computes with the residual add) and forming the scale itself:

  q, cache = qkv_append(qkv, cache, layer, slots, write, sumsq_B=ss, ...)
  h = swiglu(gate_up, sumsq_B=ss, ...)

Both round like the XLA path they replace (each intermediate the model rounds to its compute
dtype is rounded here too), so they differ from it only by the GPU's float32 transcendental
functions. Off GPU they run in Pallas' interpreter (for tests).
"""

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from ttc_jax.model.pallas_decode import is_pow2, cache_dims, is_traced_layer
from ttc_jax.model.transformer import activation_fn, row_scale


def _pow2_divisor(n: int, cap: int) -> int:
  """The largest power of two dividing n, at most cap."""
  return min(n & -n, cap)


def _check_sumsq(sumsq_B, batch: int, d_model, eps):
  """The row-scale arguments: sumsq_B None, or [B] with d_model >= 1 and eps >= 0."""
  if sumsq_B is not None and (jnp.shape(sumsq_B) != (batch,) or not isinstance(d_model, int)
                              or d_model < 1 or not eps >= 0):
    raise ValueError(f'sumsq_B must be [B={batch}] with d_model >= 1 and eps >= 0, got '
                     f'shape {jnp.shape(sumsq_B)}, d_model={d_model!r}, eps={eps!r}')


def _interpret(interpret):
  return jax.default_backend() != 'gpu' if interpret is None else bool(interpret)


# ----------------------------------------------------------------------------- qkv_append


def _append_kernel(*refs, n_groups: int, n_heads: int, kv_heads: int, rows: int,
                   dynamic_layer: bool, scaled: bool, biased: bool, rotate: bool,
                   d_model: int, eps: float):
  """One (kv head k, block of `rows` rows) program: the k-th group's G queries, key and
  value of each row, projected (scale, bias), rotated, the queries stored to the output and
  the key and value to the cache at the row's slot."""
  refs = list(refs)
  qkv_ref, slot_ref, write_ref = refs.pop(0), refs.pop(0), refs.pop(0)
  ss_ref = refs.pop(0) if scaled else None
  bias_ref = refs.pop(0) if biased else None
  cos_ref, sin_ref = (refs.pop(0), refs.pop(0)) if rotate else (None, None)
  layer_ref = refs.pop(0) if dynamic_layer else None
  cache_in_ref, q_out_ref, cache_ref = refs   # cache_in_ref: aliased to cache_ref
  del cache_in_ref
  k = pl.program_id(0)
  head_dim = qkv_ref.shape[-1]
  slots = cache_ref.shape[-2]
  rows_R = jnp.arange(rows, dtype=jnp.int32)
  lanes_H = jnp.arange(head_dim, dtype=jnp.int32)
  # Lane h of swap_H is h + H/2 (mod H): reading a vector at swap_H exchanges its halves.
  swap_H = jnp.where(lanes_H < head_dim // 2, lanes_H + head_dim // 2, lanes_H - head_dim // 2)
  dtype = qkv_ref.dtype
  scale_R = row_scale(ss_ref[...], d_model, eps)[:, None] if scaled else None
  if rotate:
    cos_RxH, sin_RxH = cos_ref[...], sin_ref[...]

  def project(c, lanes):
    """Head c's lanes of each row as the model rounds them: (x * scale + bias) in float32,
    then the compute dtype."""
    heads_R = jnp.full((rows,), c, jnp.int32)
    x = plgpu.load(qkv_ref.at[rows_R[:, None], heads_R[:, None], lanes[None, :]])
    x = x.astype(jnp.float32)
    if scaled:
      x = x * scale_R
    if biased:
      x = x + plgpu.load(bias_ref.at[jnp.full((1,), c, jnp.int32)[:, None],
                                     lanes[None, :]]).astype(jnp.float32)
    return x.astype(dtype)

  def read(c, rotated: bool):
    x = project(c, lanes_H)
    if not (rotate and rotated):
      return x
    # x * cos + swap(x) * sin, sin's first half negated: `transformer.rope`'s
    # [x1 cos - x2 sin, x2 cos + x1 sin], rounded to the compute dtype.
    swapped = project(c, swap_H).astype(jnp.float32)
    return (x.astype(jnp.float32) * cos_RxH + swapped * sin_RxH).astype(dtype)

  for g in range(n_groups):
    q_out_ref[:, g, :] = read(k * n_groups + g, True).astype(q_out_ref.dtype)
  slot_R = slot_ref[...]
  ok_R = (write_ref[...] != 0) & (slot_R >= 0) & (slot_R < slots)
  slot_R = jnp.clip(slot_R, 0, slots - 1)
  lead = (jnp.full((rows, 1), layer_ref[0], jnp.int32),) if dynamic_layer else ()
  for i, (c, rotated) in enumerate(((n_heads + k, True), (n_heads + kv_heads + k, False))):
    kind_R = jnp.full((rows, 1), i, jnp.int32)
    plgpu.store(cache_ref.at[(*lead, rows_R[:, None], kind_R, slot_R[:, None], lanes_H[None, :])],
                read(c, rotated).astype(cache_ref.dtype), mask=ok_R[:, None])


def qkv_append(qkv_BxCxH: jax.Array, kv_LxBx2xKxSxH: jax.Array, layer, slots_B: jax.Array,
               write_B: jax.Array, *, sumsq_B: jax.Array | None = None, d_model: int = 0,
               eps: float = 0.0, bias_CxH: jax.Array | None = None,
               rope_cos_BxH: jax.Array | None = None, rope_sin_BxH: jax.Array | None = None,
               rows: int = 0, num_warps: int = 4,
               interpret: bool | None = None) -> tuple[jax.Array, jax.Array]:
  """A decode step's q/k/v projections finished and the new key and value cached, in one
  kernel.

  qkv_BxCxH is the fused q/k/v matmul's output for one token per row (C = N + 2K heads: N =
  K * G queries, then K keys, then K values), before the pre-norm's row scale, the bias and
  RoPE. Per row b this equals

    x = (qkv[b] * rsqrt(sumsq_B[b] / d_model + eps) + bias_CxH)   (float32; each if given)
    x = x.astype(qkv.dtype);  q, k, v = split(x);  q, k = rope(q), rope(k)
    cache[layer, b, 0 / 1, :, slots_B[b]] = k / v       (where write_B[b], 0 <= slot < S)
    q_out[b] = q.reshape(K, G, H)

  with RoPE rounded to qkv's dtype like `transformer.rope`.

  Args:
    kv_LxBx2xKxSxH: the cache (keys at index 0 of axis 2, values at 1); written in place
      when donated or dead afterwards.
    layer: the layer to write; a Python int or a traced int32 scalar.
    slots_B, write_B: integer [B] slot (the token's position) and bool/int [B] write flags.
    sumsq_B: float32 [B] sums of squares of the rows the projection was applied to (with
      d_model, eps: the pre-norm's scale), or None for no scaling.
    bias_CxH: [C, H] projection biases, or None.
    rope_cos_BxH, rope_sin_BxH: float32 tables from `transformer.rope_tables`, or both None.
    rows: rows per program (a power of two dividing B; 0: up to 8).
    num_warps: Triton warps per program (GPU only).
    interpret: run Pallas' interpreter; None: unless the default backend is 'gpu'.

  Returns:
    (q [B, K, G, H] in qkv's dtype, the cache).

  Raises:
    ValueError: for mismatched shapes or bad rows / layer / d_model.
  """
  if qkv_BxCxH.ndim != 3:
    raise ValueError(f'qkv_BxCxH must be [B, C, H], got shape {qkv_BxCxH.shape}')
  n_layers, batch, _, kv_heads, _, head_dim = cache_dims(kv_LxBx2xKxSxH)
  n_heads = qkv_BxCxH.shape[1] - 2 * kv_heads
  if (n_heads < kv_heads or n_heads % kv_heads
      or (qkv_BxCxH.shape[0], qkv_BxCxH.shape[2]) != (batch, head_dim)):
    raise ValueError(f'qkv_BxCxH shape {qkv_BxCxH.shape} must be [B={batch}, N + 2K, '
                     f'H={head_dim}] with N a multiple of K={kv_heads}')
  if not is_pow2(head_dim):
    raise ValueError(f'head dim H={head_dim} must be a power of two')
  for name, arr in (('slots_B', slots_B), ('write_B', write_B)):
    if jnp.shape(arr) != (batch,):
      raise ValueError(f'{name} must be [B={batch}], got shape {jnp.shape(arr)}')
  _check_sumsq(sumsq_B, batch, d_model, eps)
  if bias_CxH is not None and jnp.shape(bias_CxH) != qkv_BxCxH.shape[1:]:
    raise ValueError(f'bias_CxH must be [C, H]={list(qkv_BxCxH.shape[1:])}, got shape '
                     f'{jnp.shape(bias_CxH)}')
  rotate = rope_cos_BxH is not None
  if rotate != (rope_sin_BxH is not None) or rotate and not (
      jnp.shape(rope_cos_BxH) == jnp.shape(rope_sin_BxH) == (batch, head_dim)):
    raise ValueError(f'rope_cos_BxH and rope_sin_BxH must both be [B={batch}, H={head_dim}] '
                     f'or both None')
  rows = rows or _pow2_divisor(batch, 8)
  if not isinstance(rows, int) or not is_pow2(rows) or batch % rows:
    raise ValueError(f'rows={rows!r} must be a power of two dividing B={batch}')
  dynamic_layer = is_traced_layer(layer, n_layers)
  f32 = lambda x: None if x is None else jnp.asarray(x, jnp.float32)
  return _qkv_append(qkv_BxCxH, kv_LxBx2xKxSxH, jnp.asarray(slots_B, jnp.int32),
                     jnp.asarray(write_B).astype(jnp.int32), f32(sumsq_B), bias_CxH,
                     f32(rope_cos_BxH), f32(rope_sin_BxH),
                     jnp.reshape(jnp.asarray(layer, jnp.int32), (1,)) if dynamic_layer
                     else None,
                     static_layer=None if dynamic_layer else int(layer), d_model=int(d_model),
                     eps=float(eps), rows=rows, num_warps=num_warps,
                     interpret=_interpret(interpret))


@functools.partial(jax.jit, static_argnames=('static_layer', 'd_model', 'eps', 'rows',
                                             'num_warps', 'interpret'))
def _qkv_append(qkv, cache, slots_B, write_B, sumsq_B, bias_CxH, cos_BxH, sin_BxH, layer_1,
                *, static_layer, d_model, eps, rows, num_warps, interpret):
  n_layers, batch, _, kv_heads, slots, head_dim = cache.shape
  n_cols = qkv.shape[1]
  n_heads = n_cols - 2 * kv_heads
  n_groups = n_heads // kv_heads
  row_block = lambda *shape: pl.BlockSpec((rows, *shape),
                                          lambda k, r: (r,) + (0,) * len(shape))
  in_specs = [row_block(n_cols, head_dim), row_block(), row_block()]
  operands = [qkv, slots_B, write_B]
  if sumsq_B is not None:
    in_specs.append(row_block())
    operands.append(sumsq_B)
  if bias_CxH is not None:
    in_specs.append(pl.BlockSpec(bias_CxH.shape, lambda k, r: (0, 0)))
    operands.append(bias_CxH)
  if cos_BxH is not None:
    in_specs += [row_block(head_dim), row_block(head_dim)]
    operands += [cos_BxH, sin_BxH]
  if layer_1 is not None:
    in_specs.append(pl.BlockSpec((1,), lambda k, r: (0,)))
    operands.append(layer_1)
    cache_spec = pl.BlockSpec((n_layers, rows, 2, None, slots, head_dim),
                              lambda k, r: (0, r, 0, k, 0, 0))
  else:
    cache_spec = pl.BlockSpec((None, rows, 2, None, slots, head_dim),
                              lambda k, r: (static_layer, r, 0, k, 0, 0))
  in_specs.append(cache_spec)
  operands.append(cache)
  kernel = functools.partial(
      _append_kernel, n_groups=n_groups, n_heads=n_heads, kv_heads=kv_heads, rows=rows,
      dynamic_layer=layer_1 is not None, scaled=sumsq_B is not None,
      biased=bias_CxH is not None, rotate=cos_BxH is not None, d_model=d_model, eps=eps)
  q, cache = pl.pallas_call(
      kernel,
      grid=(kv_heads, batch // rows),
      in_specs=in_specs,
      out_specs=[pl.BlockSpec((rows, None, n_groups, head_dim), lambda k, r: (r, k, 0, 0)),
                 cache_spec],
      out_shape=[jax.ShapeDtypeStruct((batch, kv_heads, n_groups, head_dim), qkv.dtype),
                 jax.ShapeDtypeStruct(cache.shape, cache.dtype)],
      input_output_aliases={len(operands) - 1: 1},
      compiler_params=plgpu.CompilerParams(num_warps=num_warps, num_stages=1),
      interpret=interpret,
      name='qkv_append',
  )(*operands)
  return q, cache


def reference_qkv_append(qkv_BxCxH, kv_LxBx2xKxSxH, layer, slots_B, write_B, *,
                         sumsq_B=None, d_model=0, eps=0.0, bias_CxH=None, rope_cos_BxH=None,
                         rope_sin_BxH=None):
  """Plain JAX, as `transformer.Block(fused=True)` computes it."""
  n_layers, batch, _, kv_heads, slots, head_dim = kv_LxBx2xKxSxH.shape
  x = qkv_BxCxH.astype(jnp.float32)
  if sumsq_B is not None:
    x = x * row_scale(sumsq_B, d_model, eps)[:, None, None]
  if bias_CxH is not None:
    x = x + bias_CxH.astype(jnp.float32)
  x = x.astype(qkv_BxCxH.dtype)
  n_heads = x.shape[1] - 2 * kv_heads
  q, k, v = x[:, :n_heads], x[:, n_heads:n_heads + kv_heads], x[:, n_heads + kv_heads:]
  if rope_cos_BxH is not None:
    half = head_dim // 2
    rot = lambda y: (y.astype(jnp.float32) * rope_cos_BxH[:, None] + jnp.concatenate(
        [y[..., half:], y[..., :half]], -1).astype(jnp.float32) * rope_sin_BxH[:, None]
                     ).astype(y.dtype)
    q, k = rot(q), rot(k)
  write = jnp.asarray(write_B, bool) & (slots_B >= 0) & (slots_B < slots)
  slot_B = jnp.where(write, slots_B, slots)   # out of range: dropped
  new = jnp.stack([k, v], axis=1).astype(kv_LxBx2xKxSxH.dtype)   # [B, 2, K, H]
  cache = kv_LxBx2xKxSxH.at[layer, jnp.arange(batch), :, :, slot_B].set(new, mode='drop')
  return q.reshape(batch, kv_heads, n_heads // kv_heads, head_dim), cache


# ----------------------------------------------------------------------------- swiglu


def _swiglu_kernel(*refs, scaled: bool, activation: str, d_model: int, eps: float):
  refs = list(refs)
  gate_ref, up_ref = refs.pop(0), refs.pop(0)
  ss_ref = refs.pop(0) if scaled else None
  (out_ref,) = refs
  gate = gate_ref[...].astype(jnp.float32)
  up = up_ref[...].astype(jnp.float32)
  if scaled:
    scale = row_scale(ss_ref[...], d_model, eps)[:, None]
    gate, up = gate * scale, up * scale
  out_ref[...] = (activation_fn(activation)(gate) * up).astype(out_ref.dtype)


def swiglu(gate_up_BxF2: jax.Array, *, sumsq_B: jax.Array | None = None, d_model: int = 0,
           eps: float = 0.0, activation: str = 'silu', block_rows: int = 0,
           block_cols: int = 0, num_warps: int = 4,
           interpret: bool | None = None) -> jax.Array:
  """act(gate) * up of a gated MLP, with the pre-norm's row scale, in one kernel.

  gate_up_BxF2 is the fused gate/up matmul's output [B, 2F] (gate columns first). Equals
    x = gate_up.astype(float32) * rsqrt(sumsq_B / d_model + eps)[:, None]   (if given)
    (act(x[:, :F]) * x[:, F:]).astype(gate_up.dtype)
  with act 'silu' or 'gelu_tanh' (tanh-approximated GELU).

  Args:
    block_rows, block_cols: the block of [B, F] one program computes (powers of two dividing
      B and F; 0: up to 8 rows and 512 columns).
  Raises:
    ValueError: for an odd width, a bad block or activation.
  """
  if gate_up_BxF2.ndim != 2 or gate_up_BxF2.shape[1] % 2:
    raise ValueError(f'gate_up_BxF2 must be [B, 2F], got shape {gate_up_BxF2.shape}')
  batch, width = gate_up_BxF2.shape[0], gate_up_BxF2.shape[1] // 2
  activation_fn(activation)
  block_rows = block_rows or _pow2_divisor(batch, 8)
  block_cols = block_cols or _pow2_divisor(width, 512)
  for name, value, n in (('block_rows', block_rows, batch), ('block_cols', block_cols, width)):
    if not isinstance(value, int) or not is_pow2(value) or n % value:
      raise ValueError(f'{name}={value!r} must be a power of two dividing {n}')
  _check_sumsq(sumsq_B, batch, d_model, eps)
  return _swiglu(gate_up_BxF2, None if sumsq_B is None else jnp.asarray(sumsq_B, jnp.float32),
                 activation=activation, d_model=int(d_model), eps=float(eps),
                 block_rows=block_rows, block_cols=block_cols, num_warps=num_warps,
                 interpret=_interpret(interpret))


@functools.partial(jax.jit, static_argnames=('activation', 'd_model', 'eps', 'block_rows',
                                             'block_cols', 'num_warps', 'interpret'))
def _swiglu(gate_up, sumsq_B, *, activation, d_model, eps, block_rows, block_cols, num_warps,
            interpret):
  batch, width = gate_up.shape[0], gate_up.shape[1] // 2
  n_col_blocks = width // block_cols
  in_specs = [pl.BlockSpec((block_rows, block_cols), lambda i, j: (i, j)),
              pl.BlockSpec((block_rows, block_cols), lambda i, j: (i, j + n_col_blocks))]
  operands = [gate_up, gate_up]
  if sumsq_B is not None:
    in_specs.append(pl.BlockSpec((block_rows,), lambda i, j: (i,)))
    operands.append(sumsq_B)
  return pl.pallas_call(
      functools.partial(_swiglu_kernel, scaled=sumsq_B is not None, activation=activation,
                        d_model=d_model, eps=eps),
      grid=(batch // block_rows, n_col_blocks),
      in_specs=in_specs,
      out_specs=pl.BlockSpec((block_rows, block_cols), lambda i, j: (i, j)),
      out_shape=jax.ShapeDtypeStruct((batch, width), gate_up.dtype),
      compiler_params=plgpu.CompilerParams(num_warps=num_warps, num_stages=1),
      interpret=interpret,
      name='swiglu',
  )(*operands)


def reference_swiglu(gate_up_BxF2, *, sumsq_B=None, d_model=0, eps=0.0, activation='silu'):
  """Plain JAX, as `transformer.Block(fused=True)` computes it."""
  x = gate_up_BxF2.astype(jnp.float32)
  if sumsq_B is not None:
    x = x * row_scale(sumsq_B, d_model, eps)[:, None]
  gate, up = jnp.split(x, 2, axis=-1)
  return (activation_fn(activation)(gate) * up).astype(gate_up_BxF2.dtype)
