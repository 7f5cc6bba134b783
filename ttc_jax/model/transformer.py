"""A decoder-only transformer in Flax linen: RoPE, RMSNorm, SwiGLU, grouped-query attention.

The KV cache is an explicit pytree passed in and returned, never a mutable collection:

  logits_BxTxV, cache = apply(params, tokens_BxT, positions_BxT, cache, mask_BxS, config=cfg)

Cache layout: {'kv': [L, B, 2, K, S, H]} in the compute dtype (index 0 of axis 2 keys, 1
values), where cache slot s holds the token at position s of its row. Slots are next to the
head dim, so a decode step reads each (row, kv head)'s live prefix as one contiguous block,
and keys and values sit in one array, so a step writes both with one scatter (on an H200 at
M/1024: 5.8 us per layer, against 3.3 us for each of the two). Rows may have different
lengths: a call
writes its T tokens at slots positions[b, 0] .. positions[b, 0] + T - 1 of row b, and a query
at position p attends to slots s <= p (and, with `mask`, only to slots where mask[b, s]; a
[B, T, S] mask instead gives each query its own visible keys, e.g. for packed training
sequences).
Slots past a row's length may hold stale values: the causal rule never lets a query see them
before they are overwritten.

Layers are an `nn.scan`, so parameters carry a leading layer axis and compile time does not
grow with depth.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from ttc_jax.model.config import ModelConfig

Cache = dict[str, jax.Array]


# Vocabularies up to this size embed by one-hot matmul instead of a gather (see
# Transformer.embed_tokens); the matmul costs 2 x V x D FLOPs per token, small next to a layer.
ONE_HOT_MAX_VOCAB = 1024


# Axes of the cache array cache['kv']: rows (B) and slots (S).
CACHE_BATCH_AXIS, CACHE_SLOT_AXIS = 1, 4


def init_cache(cfg: ModelConfig, batch: int, length: int | None = None) -> Cache:
  """An empty cache of `length` slots (default cfg.max_len) for `batch` rows."""
  length = cfg.max_len if length is None else length
  shape = (cfg.n_layers, batch, 2, cfg.n_kv_heads, length, cfg.head_dim)
  return {'kv': jnp.zeros(shape, cfg.jnp_dtype)}


def cache_slots(cache: Cache) -> int:
  """S: slots per row of a cache from `init_cache`."""
  return cache['kv'].shape[CACHE_SLOT_AXIS]


def cache_take_rows(cache: Cache, index_B) -> Cache:
  """Row b of the result is row index_B[b] of `cache` (keep, drop or duplicate rows)."""
  return jax.tree.map(lambda c: jnp.take(c, index_B, axis=CACHE_BATCH_AXIS), cache)


def cache_repeat_rows(cache: Cache, n: int) -> Cache:
  """Each row repeated n times in place (row p becomes rows p * n .. p * n + n - 1)."""
  return jax.tree.map(lambda c: jnp.repeat(c, n, axis=CACHE_BATCH_AXIS), cache)


def rope_frequencies(head_dim: int, theta: float, scaling=None) -> np.ndarray:
  """[head_dim / 2] float32 inverse frequencies (radians per position).

  scaling: None, or Llama-3's (factor, low_freq_factor, high_freq_factor, original_max_pos):
  wavelengths longer than original_max_pos / low_freq_factor are stretched by `factor`,
  those shorter than original_max_pos / high_freq_factor are kept, and the band between
  interpolates linearly in original_max_pos / wavelength.
  """
  # float64 on the host: the frequencies are constants of the compiled function.
  inv_freq = theta ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
  if scaling is not None:
    factor, low, high, orig = (float(v) for v in scaling)
    ratio = orig * inv_freq / (2 * np.pi)        # original context / wavelength
    smooth = np.clip((ratio - low) / (high - low), 0.0, 1.0)
    inv_freq = (1 - smooth) * inv_freq / factor + smooth * inv_freq
  return inv_freq.astype(np.float32)


def rope(x_BxTxNxH: jax.Array, positions_BxT: jax.Array, theta: float,
         scaling=None) -> jax.Array:
  """Rotary embedding, half-split convention (as in Llama/Qwen2/Gemma HF checkpoints).
  `scaling`: see `rope_frequencies`."""
  h = x_BxTxNxH.shape[-1]
  freqs = jnp.asarray(rope_frequencies(h, theta, scaling))
  ang_BxTxH2 = positions_BxT[..., None].astype(jnp.float32) * freqs
  sin, cos = jnp.sin(ang_BxTxH2)[:, :, None, :], jnp.cos(ang_BxTxH2)[:, :, None, :]
  x1, x2 = jnp.split(x_BxTxNxH.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BxTxNxH.dtype)


def rope_tables(positions_B: jax.Array, head_dim: int, theta: float,
                scaling=None) -> tuple[jax.Array, jax.Array]:
  """[B, H] float32 (cos, sin) tables rotating one position per row, for kernels that
  apply `rope` as x * cos + swap_halves(x) * sin: both halves of cos hold cos(angle), sin's
  first half -sin(angle) and its second half sin(angle) (the angles of `rope`)."""
  freqs = jnp.asarray(rope_frequencies(head_dim, theta, scaling))
  ang_BxH2 = positions_B[:, None].astype(jnp.float32) * freqs
  cos, sin = jnp.cos(ang_BxH2), jnp.sin(ang_BxH2)
  return jnp.concatenate([cos, cos], axis=-1), jnp.concatenate([-sin, sin], axis=-1)


def row_scale(sumsq, d_model: int, eps: float) -> jax.Array:
  """rsqrt(sumsq / d_model + eps): RMSNorm's per-row scale from a row's sum of squares."""
  return jax.lax.rsqrt(sumsq / jnp.float32(d_model) + jnp.float32(eps))


def _rms_scale(x_BxTxD, cfg: ModelConfig) -> jax.Array:
  """[B, T, 1] float32 rsqrt(mean(x^2) + eps): RMSNorm without its gain."""
  return row_scale(_sum_squares(x_BxTxD)[..., None], x_BxTxD.shape[-1], cfg.norm_eps)


def activation_fn(name: str):
  """The MLP's gate activation: 'silu' or 'gelu_tanh' (tanh-approximated GELU)."""
  if name == 'silu':
    return nn.silu
  if name == 'gelu_tanh':
    return lambda z: nn.gelu(z, approximate=True)
  raise ValueError(f"activation={name!r} must be 'silu' or 'gelu_tanh'")


class RMSNorm(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x):
    w = self.param('scale', nn.initializers.zeros if self.cfg.norm_offset else
                   nn.initializers.ones, (x.shape[-1],), self.cfg.jnp_param_dtype)
    y = x.astype(jnp.float32) * _rms_scale(x, self.cfg)
    return (y * (w.astype(jnp.float32) + self.cfg.norm_offset)).astype(x.dtype)


def _dense(cfg: ModelConfig, features, name, axis=-1, bias=False):
  return nn.DenseGeneral(features, axis=axis, use_bias=bias, dtype=cfg.jnp_dtype,
                         param_dtype=cfg.jnp_param_dtype, name=name,
                         kernel_init=nn.initializers.normal(0.02))


def _softcap(x, cap: float):
  """cap * tanh(x / cap) (Gemma-2's soft-capping); identity when cap is 0."""
  return cap * jnp.tanh(x / cap) if cap else x


def attention_scale(cfg: ModelConfig) -> float:
  """Multiplier of q.k: query_pre_attn_scalar**-0.5 (Gemma-2) or head_dim**-0.5."""
  return (cfg.query_pre_attn_scalar or cfg.head_dim) ** -0.5


def attend(q_BxTxKxGxH, k, v, visible_BxTxS, scale=None, softcap=0.0, kv_layout='bskh'):
  """Softmax attention with grouped queries; logits and softmax in float32.
  k, v: [B, S, K, H] (kv_layout 'bskh') or [B, K, S, H] ('bksh', the cache's layout).
  scale: default head_dim**-0.5; softcap: Gemma-2 attention logit cap (0 = off)."""
  scale = q_BxTxKxGxH.shape[-1] ** -0.5 if scale is None else scale
  logits = jnp.einsum(f'btkgh,{kv_layout}->bkgts', q_BxTxKxGxH, k,
                      preferred_element_type=jnp.float32) * scale
  logits = _softcap(logits, softcap)
  logits = jnp.where(visible_BxTxS[:, None, None], logits, -1e30)
  probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  return jnp.einsum(f'bkgts,{kv_layout}->btkgh', probs, v)


def causal_attention(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, impl: str):
  """Causal self-attention (query t sees keys s <= t) through jax.nn.dot_product_attention.

  impl 'cudnn' runs cuDNN's fused flash attention, which never materialises the [T, T]
  logits; 'dot_product' is the same call lowered by XLA. Query head n uses kv head
  n // (N / K), as in `attend`. Returns [B, T, N, H] in the input dtype.
  """
  return jax.nn.dot_product_attention(
      q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, is_causal=True,
      implementation='cudnn' if impl == 'cudnn' else 'xla')


def _sliding_visible(key_pos_BxS, positions_BxT, cfg: ModelConfig, sliding):
  """[B, T, S] or True: keys inside the sliding window of each query, where layer-level
  `sliding` (a traced bool) says the window applies; True when the model has no window."""
  if not cfg.sliding_window:
    return True
  near = key_pos_BxS[:, None, :] > positions_BxT[:, :, None] - cfg.sliding_window
  return near | jnp.logical_not(sliding)


def decode_attention_kind(cfg: ModelConfig) -> str:
  """The decode attention used for cfg. 'auto' is the Pallas kernel on a GPU when the model
  allows it (`ModelConfig.pallas_decode_ok`: a power-of-two head_dim, neither attention
  soft-capping nor sliding windows; measured on an H200 against the XLA paths, sampler end
  to end: 1.14x at S/4096, 1.11x at M/1024, 1.12x at a 1024-token context, 1.30x on the
  Qwen2.5-0.5B shape; experiments/bench_sampling.md); otherwise
  multiply-reduce for one query head per kv head and batched matrix-vector products for
  grouped queries (reduce 1.05x faster at G=1, einsum 2.4x faster at G=7)."""
  if cfg.decode_attention != 'auto':
    return cfg.decode_attention
  if jax.default_backend() == 'gpu' and cfg.pallas_decode_ok:
    return 'pallas'
  return xla_decode_attention_kind(cfg)


def uses_step_kernels(cfg: ModelConfig) -> bool:
  """Whether a fused-weights layer's decode step (one token per row) runs its elementwise
  work as the Pallas kernels of `pallas_step` (`ModelConfig.decode_step_kernels`; 'auto':
  wherever the Pallas decode attention runs)."""
  if cfg.decode_step_kernels == 'auto':
    return decode_attention_kind(cfg) == 'pallas'
  return cfg.decode_step_kernels == 'pallas'


def _sum_squares(x_BxTxD) -> jax.Array:
  """[B, T] float32 sum of x^2 over the model dim (what `_rms_scale` averages; the step
  kernels take it as is)."""
  x32 = x_BxTxD.astype(jnp.float32)
  return jnp.sum(x32 * x32, axis=-1)


def xla_decode_attention_kind(cfg: ModelConfig) -> str:
  """'auto' without the Pallas kernel: 'reduce' for one query head per kv head, else
  'einsum'."""
  return 'reduce' if cfg.n_heads == cfg.n_kv_heads else 'einsum'


def _write_cache(cache, k_BxTxKxH, v_BxTxKxH, layer, positions_BxT, write_B) -> Cache:
  """The full [L, B, 2, K, S, H] cache with row b's T new keys and values at slots
  positions[b, 0] .. + T - 1 of layer `layer`, scattered in place (one scatter, no per-layer
  copy of the cache). Rows with write_B False write nothing (their scatter index is out of
  range and dropped), so a finished row's cache is never touched."""
  b, t = positions_BxT.shape
  start_B = jnp.where(write_B, positions_BxT[:, 0], cache_slots(cache))
  slots_BxT = start_B[:, None] + jnp.arange(t)[None, :]
  rows_Bx1 = jnp.arange(b)[:, None]
  # Advanced indices around slices: the indexed view is [B, T, 2, K, H], the update's shape.
  # Indices are unique (one row, distinct slots), so the scatter needs no atomics.
  kv_Lx2 = cache['kv']
  new_BxTx2xKxH = jnp.stack([k_BxTxKxH, v_BxTxKxH], axis=2).astype(kv_Lx2.dtype)
  return {'kv': kv_Lx2.at[layer, rows_Bx1, :, :, slots_BxT].set(
      new_BxTx2xKxH, mode='drop', unique_indices=True)}


def over_row_shards(fn, args, in_axes, out_axes):
  """fn(*args), run on each device's rows where the mesh in context (`jax.set_mesh`) splits
  rows over a 'data' axis of more than one device; fn(*args) as is otherwise.

  XLA's partitioner cannot split a Pallas call: it would gather every sharded operand (the
  whole KV cache) onto each device. Under `jax.shard_map` each kernel instead sees only its
  device's rows, which is all it needs (rows never interact).
  in_axes: per arg, the axis holding the rows, or None (replicated); args that are not
    jax arrays (Python ints, None) are passed through unchanged.
  out_axes: the same for fn's outputs (a pytree prefix of them).
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or dict(mesh.shape).get('data', 1) == 1:
    return fn(*args)
  arrays = [i for i, a in enumerate(args) if isinstance(a, jax.Array)]

  def local(*xs):
    full = list(args)
    for i, x in zip(arrays, xs):
      full[i] = x
    return fn(*full)

  spec = lambda axis: P() if axis is None else P(*([None] * axis), 'data')
  return jax.shard_map(
      local, mesh=mesh, in_specs=tuple(spec(in_axes[i]) for i in arrays),
      out_specs=jax.tree.map(spec, out_axes), check_vma=False)(*[args[i] for i in arrays])


def _windowed_attend(q_BxTxKxGxH, cache, layer, positions_BxT, window, cfg: ModelConfig):
  """Decode-path attention over cache slots [0, window) of layer `layer` of the full cache,
  which already holds the step's keys and values (`_write_cache`, or the step kernels'
  `qkv_append`). Only the first `window` slots are read (for each row and kv head one
  contiguous block): the caller guarantees every written position is below it.
  Returns the attention output [B, T, K, G, H].
  """
  b, t = positions_BxT.shape
  scale = attention_scale(cfg)
  kind = decode_attention_kind(cfg) if t == 1 else 'einsum'
  if kind == 'pallas':
    from ttc_jax.model import pallas_decode
    # Row b attends to slots [0, position + 1): the live prefix, read in place.
    lengths_B = jnp.clip(positions_BxT[:, 0] + 1, 1, window)
    block, warps, stages, products = cfg.decode_kernel_settings()
    # 0: automatic (pallas_decode.auto_block); else a power of two dividing the window.
    block = min(block, window & -window) if block else 0
    attend_rows = functools.partial(
        pallas_decode.decode_attention, window=window, scale=scale, block_s=block,
        num_warps=warps, num_stages=stages, products=products)   # in q's dtype
    o_BxKxGxH = over_row_shards(attend_rows, (q_BxTxKxGxH[:, 0], cache['kv'], layer, lengths_B),
                                (0, CACHE_BATCH_AXIS, None, 0), 0)
    return o_BxKxGxH[:, None]
  kv_Bx2xKxWxH = jax.lax.dynamic_index_in_dim(cache['kv'], layer, 0, False)[..., :window, :]
  keys_BxKxWxH, values_BxKxWxH = kv_Bx2xKxWxH[:, 0], kv_Bx2xKxWxH[:, 1]
  slot_pos_BxW = jnp.broadcast_to(jnp.arange(window), (b, window))
  visible_BxTxW = slot_pos_BxW[:, None, :] <= positions_BxT[:, :, None]
  if cfg.sliding_window:
    sliding = jnp.asarray(cfg.sliding_layers, bool)[layer]
    visible_BxTxW &= _sliding_visible(slot_pos_BxW, positions_BxT, cfg, sliding)
  if kind == 'reduce':
    # One query per row: multiply-and-reduce fusions read each cached slot once.
    q_BxKxGx1xH = q_BxTxKxGxH[:, 0, :, :, None, :].astype(jnp.float32)
    logits_BxKxGxW = jnp.sum(q_BxKxGx1xH * keys_BxKxWxH[:, :, None].astype(jnp.float32),
                             axis=-1) * scale
    logits_BxKxGxW = _softcap(logits_BxKxGxW, cfg.attn_logit_softcap)
    logits_BxKxGxW = jnp.where(visible_BxTxW[:, :, None, :], logits_BxKxGxW, -1e30)
    probs_BxKxGxW = jax.nn.softmax(logits_BxKxGxW, axis=-1)
    o_BxKxGxH = jnp.sum(probs_BxKxGxW[..., None] *
                        values_BxKxWxH[:, :, None].astype(jnp.float32), axis=-2)
    return o_BxKxGxH[:, None].astype(q_BxTxKxGxH.dtype)
  o = attend(q_BxTxKxGxH, keys_BxKxWxH.astype(q_BxTxKxGxH.dtype),
             values_BxKxWxH.astype(q_BxTxKxGxH.dtype), visible_BxTxW, scale,
             cfg.attn_logit_softcap, kv_layout='bksh')
  return o


class Block(nn.Module):
  """One pre-norm layer. Called through nn.scan: (x, aux) carry, per-layer cache slice.

  With `window` set (the decode fast path, see `apply_decode`) the carry is instead
  (x, full cache, layer index) and aux is (positions, write mask); parameters are the same.
  sliding_l: whether this layer uses cfg.sliding_window (a scanned [L] bool; None: no).
  """
  cfg: ModelConfig
  window: int | None = None
  # Weights from split_layers(..., fuse=True): 'qkv' and 'gate_up' projections with the
  # pre-norm gains folded in; the norms become row scales applied after the matmuls.
  fused: bool = False

  @nn.compact
  def __call__(self, carry, aux, cache_l=None, sliding_l=None):
    cfg = self.cfg
    if self.window is None:
      x_BxTxD = carry
      positions_BxT, key_mask_BxS = aux
    else:
      x_BxTxD, full_cache, layer = carry
      positions_BxT, write_B = aux
    k_heads, g = cfg.n_kv_heads, cfg.n_heads // cfg.n_kv_heads
    b, t, _ = x_BxTxD.shape

    # The decode step's elementwise work as Pallas kernels (`pallas_step`): the q/k/v scale,
    # bias and RoPE with the cache write in one (so q arrives rotated and the cache written),
    # SwiGLU with its scale in another.
    step_kernels = (self.fused and self.window is not None and t == 1
                    and uses_step_kernels(cfg))
    if self.fused:
      # RMSNorm(x) @ W = r * (x @ (gain * W)) with r = rsqrt(mean(x^2) + eps) per row: the
      # gain is folded into W (`_fuse_layer`) and r scales the product, so no normalised copy
      # of x is written (measured on an H200 in one process: +1.2% at S/4096, equal at
      # M/1024; XLA fuses the sum of squares with the residual add before it).
      n_qkv = cfg.n_heads + 2 * k_heads
      qkv = _dense(cfg, (n_qkv, cfg.head_dim), 'qkv')(x_BxTxD)
      bias = (self.param('qkv_bias', nn.initializers.zeros, (n_qkv, cfg.head_dim),
                         cfg.jnp_param_dtype) if cfg.qkv_bias else None)
      if step_kernels:
        from ttc_jax.model import pallas_step
        cos, sin = rope_tables(positions_BxT[:, 0], cfg.head_dim, cfg.rope_theta,
                               cfg.rope_scaling)
        append = lambda qkv, kv, layer, slots, write, ss, bias, cos, sin: (
            pallas_step.qkv_append(qkv, kv, layer, slots, write, sumsq_B=ss,
                                   d_model=cfg.d_model, eps=cfg.norm_eps, bias_CxH=bias,
                                   rope_cos_BxH=cos, rope_sin_BxH=sin))
        q, kv = over_row_shards(
            append, (qkv[:, 0], full_cache['kv'], layer, positions_BxT[:, 0], write_B,
                     _sum_squares(x_BxTxD)[:, 0], bias, cos, sin),
            (0, CACHE_BATCH_AXIS, None, 0, 0, 0, None, 0, 0), (0, CACHE_BATCH_AXIS))
        q, k, v = q[:, None], None, None
        full_cache = {'kv': kv}
      else:
        qkv = qkv.astype(jnp.float32) * _rms_scale(x_BxTxD, cfg)[..., None]
        if bias is not None:
          qkv = qkv + bias.astype(jnp.float32)
        q, k, v = jnp.split(qkv.astype(cfg.jnp_dtype), [cfg.n_heads, cfg.n_heads + k_heads],
                            axis=2)
    else:
      h = RMSNorm(cfg, name='attn_norm')(x_BxTxD)
      q = _dense(cfg, (cfg.n_heads, cfg.head_dim), 'q', bias=cfg.qkv_bias)(h)
      k = _dense(cfg, (k_heads, cfg.head_dim), 'k', bias=cfg.qkv_bias)(h)
      v = _dense(cfg, (k_heads, cfg.head_dim), 'v', bias=cfg.qkv_bias)(h)
    if not step_kernels:
      q = rope(q, positions_BxT, cfg.rope_theta, cfg.rope_scaling)
      k = rope(k, positions_BxT, cfg.rope_theta, cfg.rope_scaling)

    if self.window is not None:
      q = q.reshape(b, t, k_heads, g, cfg.head_dim)
      new_cache = full_cache if step_kernels else _write_cache(full_cache, k, v, layer,
                                                               positions_BxT, write_B)
      o = _windowed_attend(q, new_cache, layer, positions_BxT, self.window, cfg)
    elif cache_l is None:
      keys, values = k, v
      key_pos_BxS = positions_BxT
      new_cache = None
    else:
      # cache_l['kv']: [B, 2, K, S, H]; row b's T new slots start at its first position.
      start_B = positions_BxT[:, 0]
      write = jax.vmap(lambda c, u, s: jax.lax.dynamic_update_slice_in_dim(c, u, s, 2))
      new_Bx2xKxTxH = jnp.stack([k, v], axis=1).transpose(0, 1, 3, 2, 4)
      kv = write(cache_l['kv'], new_Bx2xKxTxH.astype(cache_l['kv'].dtype), start_B)
      new_cache = {'kv': kv}
      keys, values = kv[:, 0], kv[:, 1]
      key_pos_BxS = jnp.broadcast_to(jnp.arange(keys.shape[2]), (b, keys.shape[2]))
    # The fused kernels know neither soft-capping nor per-layer sliding windows.
    plain = not (cfg.attn_logit_softcap or cfg.sliding_window or cfg.query_pre_attn_scalar)
    if (self.window is None and cache_l is None and key_mask_BxS is None
        and cfg.attention_impl != 'xla' and plain):
      # Full pass without a mask: the fused kernel's causal rule (key index <= query index)
      # equals the positions rule because positions increase along T.
      o = causal_attention(q, k, v, cfg.attention_impl)
    elif self.window is None:
      visible = key_pos_BxS[:, None, :] <= positions_BxT[:, :, None]
      if key_mask_BxS is not None:
        # [B, S]: which keys exist; [B, T, S]: a full visibility mask (packed sequences).
        visible &= key_mask_BxS if key_mask_BxS.ndim == 3 else key_mask_BxS[:, None, :]
      if cfg.sliding_window:
        visible &= _sliding_visible(key_pos_BxS, positions_BxT, cfg, sliding_l)
      q = q.reshape(b, t, k_heads, g, cfg.head_dim)
      o = attend(q, keys.astype(q.dtype), values.astype(q.dtype), visible,
                 attention_scale(cfg), cfg.attn_logit_softcap,
                 kv_layout='bskh' if cache_l is None else 'bksh')
    o = o.reshape(b, t, cfg.n_heads, cfg.head_dim)
    o = _dense(cfg, cfg.d_model, 'o', axis=(-2, -1))(o)
    if cfg.post_norms:
      o = RMSNorm(cfg, name='attn_post_norm')(o)
    x_BxTxD = x_BxTxD + o

    act = activation_fn(cfg.activation)
    if step_kernels:
      gate_up = _dense(cfg, 2 * cfg.d_ff, 'gate_up')(x_BxTxD)
      swiglu = lambda g, ss: pallas_step.swiglu(g, sumsq_B=ss, d_model=cfg.d_model,
                                                eps=cfg.norm_eps, activation=cfg.activation)
      h = over_row_shards(swiglu, (gate_up[:, 0], _sum_squares(x_BxTxD)[:, 0]), (0, 0),
                          0)[:, None]
    elif self.fused:   # the MLP norm as a row scale too, on both halves of the product
      gate_up = _dense(cfg, 2 * cfg.d_ff, 'gate_up')(x_BxTxD).astype(jnp.float32)
      gate, up = jnp.split(gate_up * _rms_scale(x_BxTxD, cfg), 2, axis=-1)
      h = (act(gate) * up).astype(cfg.jnp_dtype)
    else:
      h = RMSNorm(cfg, name='mlp_norm')(x_BxTxD)
      gate = _dense(cfg, cfg.d_ff, 'gate')(h)
      up = _dense(cfg, cfg.d_ff, 'up')(h)
      h = (act(gate) * up).astype(cfg.jnp_dtype)
    m = _dense(cfg, cfg.d_model, 'down')(h)
    if cfg.post_norms:
      m = RMSNorm(cfg, name='mlp_post_norm')(m)
    x_BxTxD = x_BxTxD + m
    if self.window is not None:
      return (x_BxTxD, new_cache, layer + 1), None
    return x_BxTxD, new_cache


class Transformer(nn.Module):
  cfg: ModelConfig
  window: int | None = None   # decode fast path (apply_decode); None: the general path

  def setup(self):
    cfg = self.cfg
    self.embed = nn.Embed(cfg.vocab_size, cfg.d_model, dtype=cfg.jnp_dtype,
                          param_dtype=cfg.jnp_param_dtype,
                          embedding_init=nn.initializers.normal(0.02))
    if self.window is None:
      block = Block
      if cfg.remat != 'none':
        # 'dots' keeps the weight matmuls' outputs and recomputes the rest in the backward.
        policy = (jax.checkpoint_policies.dots_with_no_batch_dims_saveable
                  if cfg.remat == 'dots' else None)
        block = nn.remat(Block, policy=policy, prevent_cse=False)
      self.layers = nn.scan(
          block, variable_axes={'params': 0}, split_rngs={'params': True},
          in_axes=(nn.broadcast, 0, 0), length=cfg.n_layers,
          unroll=cfg.scan_unroll)(cfg, name='layers')
    else:
      # Stacked weights: a layer scan. The unrolled decode path instead takes the weights
      # from `split_layers` and loops in Python (see `apply_decode`).
      self.layers = nn.scan(
          Block, variable_axes={'params': 0}, split_rngs={'params': True},
          in_axes=(nn.broadcast,), length=cfg.n_layers)(cfg, self.window, name='layers')
    self.final_norm = RMSNorm(cfg)
    if not cfg.tie_embeddings:
      self.unembed = _dense(cfg, cfg.vocab_size, 'unembed')

  def embed_tokens(self, tokens_BxT, lookup: bool = False):
    """[B, T, D] embeddings. lookup=True gathers the rows even for a small vocabulary (the
    same values; for decoding, which takes no gradient: measured on an H200 at M/1024, the
    one-hot matmul and its one-hot kernel take 5.2 us of each step, on the path between
    steps)."""
    cfg = self.cfg
    if cfg.vocab_size <= ONE_HOT_MAX_VOCAB and not lookup:
      # A one-hot matmul: the same values as the gather (one nonzero term per sum), but its
      # gradient is a matmul. The gather's gradient is a scatter-add of every token into V
      # rows, and with a small vocabulary those atomics collide: on an H200 it took 72 ms of
      # a 77 ms pretraining step for a vocabulary of 32 (experiments/bench_train.md).
      table_VxD = self.embed.embedding.astype(cfg.jnp_dtype)
      x = jnp.einsum('btv,vd->btd', jax.nn.one_hot(tokens_BxT, cfg.vocab_size,
                                                   dtype=cfg.jnp_dtype), table_VxD)
    else:
      x = self.embed(tokens_BxT)
    if self.cfg.scale_embeddings:
      x = x * jnp.asarray(self.cfg.d_model ** 0.5, x.dtype)
    return x

  def head(self, x_BxTxD):
    """Final norm, then logits."""
    return self.logits(self.final_norm(x_BxTxD))

  def features(self, tokens_BxT, positions_BxT, cache=None, mask_BxS=None):
    """Final-norm hidden states [B, T, D] and the updated cache."""
    x = self.embed_tokens(tokens_BxT)
    sliding_L = (jnp.asarray(self.cfg.sliding_layers, bool) if self.cfg.sliding_window
                 else None)
    x, new_cache = self.layers(x, (positions_BxT, mask_BxS), cache, sliding_L)
    return self.final_norm(x), new_cache

  def logits(self, h_BxTxD):
    if self.cfg.tie_embeddings:
      logits = self.embed.attend(h_BxTxD).astype(jnp.float32)
    else:
      logits = self.unembed(h_BxTxD).astype(jnp.float32)
    return _softcap(logits, self.cfg.final_logit_softcap)

  def __call__(self, tokens_BxT, positions_BxT, cache=None, mask_BxS=None):
    h, new_cache = self.features(tokens_BxT, positions_BxT, cache, mask_BxS)
    return self.logits(h), new_cache


def init_params(cfg: ModelConfig, key: jax.Array) -> Any:
  tokens = jnp.zeros((1, 2), jnp.int32)
  return Transformer(cfg).init(key, tokens, jnp.arange(2)[None])['params']


def apply(params, tokens_BxT, positions_BxT, cache=None, mask_BxS=None, *, config):
  """Pure forward pass: (logits [B, T, V] float32, cache or None)."""
  return Transformer(config).apply({'params': params}, tokens_BxT, positions_BxT, cache,
                                   mask_BxS)


def apply_features(params, tokens_BxT, positions_BxT, cache=None, mask_BxS=None, *, config):
  """Like `apply` but returns the final hidden states [B, T, D] (for value heads)."""
  return Transformer(config).apply({'params': params}, tokens_BxT, positions_BxT, cache,
                                   mask_BxS, method=Transformer.features)


class _DecodeTransformer(Transformer):
  """The decode fast path: same parameters, the full cache carried through the layer scan."""

  def __call__(self, tokens_BxT, positions_BxT, cache, write_B):
    x = self.embed_tokens(tokens_BxT, lookup=True)
    (x, new_cache, _), _ = self.layers((x, cache, jnp.int32(0)), (positions_BxT, write_B))
    return self.head(x), new_cache


def split_layers(params, fuse: bool = False, config: ModelConfig | None = None) -> dict:
  """params with the stacked layer tree replaced by a list of per-layer trees.

  Call it once outside a decode loop: each layer's weights are then their own buffers, so a
  step's matmuls read them directly instead of copying a slice of the stack (measured on an
  H200: the copies cost 0.24 ms of a 2.4 ms step for a 113M-parameter model).
  fuse: lay the weights out for `Block(fused=True)` (needs `config`): q, k, v concatenated
  into one 'qkv' projection and gate, up into 'gate_up', one matmul each, and each pre-norm's
  gain folded into the rows of the projection it feeds (`_fuse_layer`); likewise the final
  norm's gain into the unembedding ('folded_head', `_fold_head`)."""
  if fuse and config is None:
    raise ValueError('split_layers(fuse=True) needs the model config (its norm_offset).')
  stacked = params['layers']
  n = jax.tree.leaves(stacked)[0].shape[0]
  layers = [jax.tree.map(lambda x, l=l: x[l], stacked) for l in range(n)]
  if not fuse:
    return {**params, 'layers': layers}
  return {**params, 'layers': [_fuse_layer(layer, config) for layer in layers],
          'folded_head': _fold_head(params, config)}


def _fold_gain(weight, norm: dict, cfg: ModelConfig, axis: int, dtype) -> jax.Array:
  """weight with RMSNorm `norm`'s gain (plus cfg.norm_offset) multiplied along its input
  dimension `axis` (in float32), as `dtype`: the norm left to apply is one scale per row."""
  gain = norm['scale'].astype(jnp.float32) + cfg.norm_offset
  shape = [1] * weight.ndim
  shape[axis] = -1
  return (weight.astype(jnp.float32) * gain.reshape(shape)).astype(dtype)


def _fold_head(params, cfg: ModelConfig) -> dict:
  """The unembedding in the compute dtype with the final norm's gain (plus norm_offset)
  multiplied into its input dimension: {'kernel': [D, V]}, or {'embedding': [V, D]} for tied
  embeddings. `_folded_logits` then applies the norm as a row scale of the logits."""
  norm = params['final_norm']
  if cfg.tie_embeddings:
    return {'embedding': _fold_gain(params['embed']['embedding'], norm, cfg, 1, cfg.jnp_dtype)}
  return {'kernel': _fold_gain(params['unembed']['kernel'], norm, cfg, 0, cfg.jnp_dtype)}


def _folded_logits(x_BxTxD, head: dict, cfg: ModelConfig) -> jax.Array:
  """`Transformer.head` over `_fold_head`'s weights: RMSNorm(x) @ W = r * (x @ (gain * W))
  with r the row scale, so the matmul does not wait for the norm's reduction (which runs
  beside it) and no normalised copy of x is written. Logits accumulate and stay in float32."""
  x = x_BxTxD.astype(cfg.jnp_dtype)
  if 'embedding' in head:
    logits = jnp.einsum('btd,vd->btv', x, head['embedding'], preferred_element_type=jnp.float32)
  else:
    logits = jnp.einsum('btd,dv->btv', x, head['kernel'], preferred_element_type=jnp.float32)
  return _softcap(logits * _rms_scale(x_BxTxD, cfg), cfg.final_logit_softcap)


def _fuse_layer(layer: dict, cfg: ModelConfig) -> dict:
  """One layer's weights for `Block(fused=True)`: q/k/v kernels concatenated along the head
  axis into 'qkv' (their biases into 'qkv_bias' [N, H]), gate/up kernels along F into
  'gate_up', and the gain of 'attn_norm' ('mlp_norm'), plus norm_offset, multiplied into the
  input rows of 'qkv' ('gate_up'), so the norm left to apply is one scale per row."""
  folded = lambda kernel, norm: _fold_gain(kernel, layer[norm], cfg, 0, kernel.dtype)
  out = {k: v for k, v in layer.items()
         if k not in ('q', 'k', 'v', 'gate', 'up', 'attn_norm', 'mlp_norm')}
  qkv = jnp.concatenate([layer[p]['kernel'] for p in 'qkv'], axis=-2)
  out['qkv'] = {'kernel': folded(qkv, 'attn_norm')}
  if 'bias' in layer['q']:
    out['qkv_bias'] = jnp.concatenate([layer[p]['bias'] for p in 'qkv'], axis=-2)
  gate_up = jnp.concatenate([layer['gate']['kernel'], layer['up']['kernel']], axis=-1)
  out['gate_up'] = {'kernel': folded(gate_up, 'mlp_norm')}
  return out


def apply_decode(params, tokens_BxT, positions_BxT, cache, write_B=None, *, config,
                 window: int | None = None):
  """`apply` specialised for decoding with a cache: (logits [B, T, V] float32, cache).

  Same parameters and same results as `apply(params, tokens, positions, cache, config=...)`
  (up to float rounding), but faster per step:
  - the full cache is carried through the layer scan and written in place (a scatter of T
    slots per row) instead of being copied layer by layer;
  - queries read only cache slots [0, window) (static; default: all S slots). The caller must
    keep every position of a writing row below `window`.
  - rows with write_B[b] False (default: all True) leave their cache untouched; their logits
    are meaningless if their positions reach `window`;
  - params may come from `split_layers` (per-layer weight buffers, layers in a Python loop;
    with fuse=True, q/k/v and gate/up as one matmul each and the norms as row scales).
  No key mask: every slot at or before a query's position is visible.
  """
  b = tokens_BxT.shape[0]
  window = cache_slots(cache) if window is None else int(window)
  if write_B is None:
    write_B = jnp.ones((b,), bool)
  if isinstance(params['layers'], (list, tuple)):   # from `split_layers`: a Python loop
    rest = {k: v for k, v in params.items() if k not in ('layers', 'folded_head')}
    model = Transformer(config)
    x = model.apply({'params': rest}, tokens_BxT, lookup=True, method=Transformer.embed_tokens)
    block = Block(config, window, fused='qkv' in params['layers'][0])
    for layer, layer_params in enumerate(params['layers']):
      (x, cache, _), _ = block.apply({'params': layer_params}, (x, cache, layer),
                                     (positions_BxT, write_B))
    if 'folded_head' in params:
      return _folded_logits(x, params['folded_head'], config), cache
    return model.apply({'params': rest}, x, method=Transformer.head), cache
  return _DecodeTransformer(config, window).apply(
      {'params': params}, tokens_BxT, positions_BxT, cache, write_B)
