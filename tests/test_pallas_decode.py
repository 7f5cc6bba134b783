"""Pallas split-K decode attention (interpret mode on CPU): equality with a per-row reference,
dead cache slots never affecting the output, split counts, traced layers, argument errors; the
appending variant (the step's own key and value scaled, rotated and written by the kernel)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttc_jax.model.pallas_decode import (auto_splits, decode_attention,
                                         decode_attention_append)

B, K, S, H, L = 4, 2, 64, 16, 2
BLOCK = 16
SCALE = H ** -0.5
# One slot, a partial block, exactly a block boundary, the full window.
LENGTHS = np.array([1, 37, 32, 64], np.int32)
TOL = {jnp.float32: dict(atol=2e-5, rtol=2e-5), jnp.bfloat16: dict(atol=2e-2, rtol=2e-2)}


def make_inputs(groups, dtype, seed=0, q_dtype=None):
  """Random q, k, v (numpy's generator: jax.random's first compile costs seconds here)."""
  rng = np.random.default_rng(seed)
  q = rng.standard_normal((B, K, groups, H), np.float32).astype(q_dtype or dtype)
  k = (2.0 * rng.standard_normal((L, B, K, S, H), np.float32)).astype(dtype)
  v = rng.standard_normal((L, B, K, S, H), np.float32).astype(dtype)
  return jnp.asarray(q), jnp.asarray(k), jnp.asarray(v)


def attend(q, k, v, layer, lengths, **opts):
  """decode_attention over the cache made of k and v ([L, B, K, S, H] each)."""
  return decode_attention(q, jnp.stack([k, v], axis=2), layer, lengths, **opts)


def reference(q, k, v, layer, lengths):
  """Per row: softmax over the live slots only, float32 throughout."""
  q, k, v = (np.asarray(jnp.asarray(x, jnp.float32)) for x in (q, k, v))
  out = np.zeros(q.shape, np.float32)
  for b, n in enumerate(lengths):
    keys, values = k[layer, b, :, :n], v[layer, b, :, :n]  # [K, n, H]
    logits = np.einsum('kgh,knh->kgn', q[b], keys) * SCALE
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    out[b] = np.einsum('kgn,knh->kgh', probs, values)
  return out


def check(out, q, want):
  assert out.shape == q.shape and out.dtype == q.dtype
  np.testing.assert_allclose(np.asarray(out.astype(jnp.float32)), want, **TOL[q.dtype.type])


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize('groups', [1, 4])
@pytest.mark.parametrize('n_splits', [1, 2, 0])
def test_matches_reference(dtype, groups, n_splits):
  q, k, v = make_inputs(groups, dtype)
  lengths = jnp.asarray(LENGTHS)
  for layer in (0, 1):
    out = attend(q, k, v, layer, lengths, window=S, scale=SCALE, block_s=BLOCK,
                           n_splits=n_splits)
    check(out, q, reference(q, k, v, layer, LENGTHS))


@pytest.mark.parametrize('groups,products', [(1, 'dot'), (4, 'reduce')])
def test_products_forced(groups, products):
  """Either way of forming q.k and p.v computes the same attention, whatever G."""
  q, k, v = make_inputs(groups, jnp.bfloat16, seed=5)
  for n_splits in (1, 2):
    out = attend(q, k, v, 1, jnp.asarray(LENGTHS), window=S, scale=SCALE,
                           block_s=BLOCK, n_splits=n_splits, products=products)
    check(out, q, reference(q, k, v, 1, LENGTHS))


@pytest.mark.parametrize('groups', [3, 8])
def test_float32_queries_over_bf16_cache(groups):
  """G > 1 over a 16-bit cache runs on tensor-core dots (G padded to 16 rows, float32 operands
  split into hi + lo halves): the float32 output still matches to ~float32 accuracy."""
  q, k, v = make_inputs(groups, jnp.bfloat16, seed=4, q_dtype=np.float32)
  for n_splits in (1, 0):
    out = attend(q, k, v, 1, jnp.asarray(LENGTHS), window=S, scale=SCALE,
                           block_s=BLOCK, n_splits=n_splits)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out), reference(q, k, v, 1, LENGTHS), atol=5e-5,
                               rtol=5e-5)


def poison(cache, layer, lengths, value):
  """`value` in every slot at or beyond each row's length of `layer`, and all other layers."""
  dead_BxS = np.arange(S)[None, :] >= lengths[:, None]
  c = np.array(jnp.asarray(cache, jnp.float32))
  c[layer][dead_BxS[:, None, :, None].repeat(K, 1).repeat(H, 3)] = value
  c[np.arange(L) != layer] = value
  return jnp.asarray(c, cache.dtype)


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize('groups,n_splits', [(1, 1), (4, 0)])
@pytest.mark.parametrize('value', [np.nan, 1e4])
def test_dead_slots_never_read(dtype, groups, n_splits, value):
  q, k, v = make_inputs(groups, dtype, seed=1)
  layer = 1
  want = reference(q, k, v, layer, LENGTHS)
  k_bad, v_bad = (poison(c, layer, LENGTHS, value) for c in (k, v))
  out = attend(q, k_bad, v_bad, layer, jnp.asarray(LENGTHS), window=S, scale=SCALE,
                         block_s=BLOCK, n_splits=n_splits)
  check(out, q, want)


def test_window_below_cache_size():
  """Slots in [window, S) are never read; lengths above the window are clipped to it."""
  q, k, v = make_inputs(4, jnp.float32, seed=2)
  window, lengths = 48, np.array([1, 37, 32, 48], np.int32)
  want = reference(q, k, v, 0, lengths)
  k_bad, v_bad = (poison(c, 0, lengths, np.nan) for c in (k, v))
  for n_splits in (1, 0):
    out = attend(q, k_bad, v_bad, 0, jnp.asarray(lengths), window=window,
                           scale=SCALE, block_s=BLOCK, n_splits=n_splits)
    check(out, q, want)
  over = attend(q, k, v, 0, jnp.asarray([1, 37, 32, 60]), window=window,
                          scale=SCALE, block_s=BLOCK)
  check(over, q, want)


def test_traced_layer_under_jit_and_scan():
  """A traced layer index (as in a scan over layers) reads the same slots as a static one."""
  q, k, v = make_inputs(4, jnp.bfloat16, seed=3)
  lengths = jnp.asarray(LENGTHS)

  @jax.jit
  def all_layers(q, k, v, lengths):
    def step(_, layer):
      return None, attend(q, k, v, layer, lengths, window=S, scale=SCALE,
                                    block_s=BLOCK, n_splits=2)
    return jax.lax.scan(step, None, jnp.arange(L))[1]

  outs = all_layers(q, k, v, lengths)
  for layer in range(L):
    check(outs[layer], q, reference(q, k, v, layer, LENGTHS))


def _append_inputs(groups, dtype, seed):
  """Raw projections [B, K * (G + 2), H], per-row sums of squares and RoPE angles, and the
  expected (scaled, rotated) new keys and values."""
  from ttc_jax.model.transformer import rope, rope_frequencies
  rng = np.random.default_rng(seed)
  qkv = jnp.asarray(rng.standard_normal((B, K * (groups + 2), H), np.float32).astype(dtype))
  ss = jnp.asarray(rng.uniform(5.0, 50.0, B).astype(np.float32))
  pos = jnp.asarray(LENGTHS - 1)
  ang = pos[:, None].astype(jnp.float32) * rope_frequencies(H, 10_000.0)
  r = np.asarray(jax.lax.rsqrt(ss / D_MODEL + 1e-6))
  q = rope(qkv[:, None, :K * groups], pos[:, None], 10_000.0)[:, 0].reshape(B, K, groups, H)
  raw_k = jnp.asarray(qkv[:, K * groups:K * (groups + 1)], jnp.float32) * r[:, None, None]
  k_new = rope(raw_k[:, None], pos[:, None], 10_000.0)[:, 0]
  v_new = jnp.asarray(qkv[:, K * (groups + 1):], jnp.float32) * r[:, None, None]
  return qkv, ss, jnp.cos(ang), jnp.sin(ang), q, r, k_new, v_new


D_MODEL = 24


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize('groups', [1, 4])
@pytest.mark.parametrize('n_splits', [1, 3])
def test_append_writes_the_step_and_attends_to_it(dtype, groups, n_splits):
  """decode_attention_append equals: write rope(r k) and r v at slot length - 1 of the rows
  that write, then decode_attention with queries r q over the cache with those slots; rows
  that do not write keep their cache; every other slot is untouched."""
  _, k, v = make_inputs(groups, dtype, seed=3)
  qkv, ss, cos, sin, q, r, k_new, v_new = _append_inputs(groups, dtype, seed=4)
  cache = jnp.stack([k, v], axis=2)
  write = np.array([True, True, False, True])
  layer = 1
  out, got = decode_attention_append(
      q, qkv, ss, cos, sin, cache, layer, jnp.asarray(LENGTHS), jnp.asarray(write),
      d_model=D_MODEL, norm_eps=1e-6, window=S, scale=SCALE, block_s=BLOCK,
      n_splits=n_splits)
  want = np.array(cache)
  full = np.array(cache, np.float32)   # every row's new slot, unrounded (as the kernel uses)
  for b, n in enumerate(LENGTHS):
    full[layer, b, 0, :, n - 1], full[layer, b, 1, :, n - 1] = k_new[b], v_new[b]
    if write[b]:
      want[layer, b, 0, :, n - 1] = np.asarray(k_new[b].astype(dtype))
      want[layer, b, 1, :, n - 1] = np.asarray(v_new[b].astype(dtype))
  written = np.zeros(want.shape, bool)
  for b, n in enumerate(LENGTHS):
    written[layer, b, :, :, n - 1] = write[b]
  got = np.asarray(got)
  np.testing.assert_array_equal(got[~written], want[~written])   # all else untouched
  np.testing.assert_allclose(got[written].astype(np.float32),
                             want[written].astype(np.float32), **TOL[dtype])
  q_scaled = np.asarray(q, np.float32) * r[:, None, None, None]
  check(out, q, reference(q_scaled, full[:, :, 0], full[:, :, 1], layer, LENGTHS))


def test_append_rejects_a_traced_layer_and_bad_shapes():
  qkv, ss, cos, sin, q, *_ = _append_inputs(1, jnp.float32, seed=5)
  _, k, v = make_inputs(1, jnp.float32)
  cache, lengths, write = jnp.stack([k, v], axis=2), jnp.asarray(LENGTHS), jnp.ones(B, bool)
  opts = dict(d_model=D_MODEL, norm_eps=1e-6, window=S, scale=SCALE, block_s=BLOCK)
  with pytest.raises(ValueError, match='Python int layer'):
    decode_attention_append(q, qkv, ss, cos, sin, cache, jnp.int32(1), lengths, write, **opts)
  with pytest.raises(ValueError, match='cos_BxH2'):
    decode_attention_append(q, qkv, ss, cos[:, :2], sin, cache, 1, lengths, write, **opts)


@pytest.mark.parametrize('groups,dtype,products', [
    (1, jnp.bfloat16, 'auto'), (4, jnp.bfloat16, 'auto'), (1, jnp.float32, 'auto'),
    (1, jnp.bfloat16, 'dot'), (4, jnp.bfloat16, 'reduce')])
def test_lowers_to_triton_for_cuda(monkeypatch, groups, dtype, products):
  """The kernel, plain and appending, lowers through Pallas' Triton backend for a CUDA target
  (jax.export, no GPU needed): the interpreter used by the other tests does not catch Triton
  lowering errors."""
  from jax._src.pallas.triton import gpu_info
  monkeypatch.setattr(gpu_info, 'get_gpu_info', lambda: gpu_info.GpuInfo(
      gpu_version=None, arch_name='9.0', compute_capability=90))   # an H100 / H200
  b, k, s, h, n_layers = 8, 2, 128, 64, 2
  spec = jax.ShapeDtypeStruct
  q, kv = spec((b, k, groups, h), dtype), spec((n_layers, b, 2, k, s, h), dtype)
  lengths = spec((b,), jnp.int32)
  opts = dict(window=s, scale=0.125, block_s=64, products=products, interpret=False)
  for n_splits in (1, 2):
    for layer in (1, spec((), jnp.int32)):   # static, then traced
      traced = not isinstance(layer, int)
      fn = lambda q, kvc, ln, *lay: decode_attention(
          q, kvc, lay[0] if lay else 1, ln, n_splits=n_splits, **opts)
      args = (q, kv, lengths)
      _export_for_cuda(fn, *args, *((layer,) if traced else ()))
    append = lambda q, qkv, ss, c, s_, kvc, ln, w: decode_attention_append(
        q, qkv, ss, c, s_, kvc, 1, ln, w, d_model=256, norm_eps=1e-6, n_splits=n_splits,
        **opts)
    _export_for_cuda(append, q, spec((b, k * (groups + 2), h), dtype),
                     spec((b,), jnp.float32), spec((b, h // 2), jnp.float32),
                     spec((b, h // 2), jnp.float32), kv, lengths, spec((b,), bool))


def _export_for_cuda(fn, *args):
  """Lower fn for CUDA through jax.export (Pallas' Triton lowering runs; no GPU needed)."""
  try:
    jax.export.export(jax.jit(fn), platforms=['cuda'])(*args)
  except ValueError as e:   # lowered: only export's check of custom-call targets objects
    if 'custom call safety check' not in str(e):
      raise


def test_auto_splits():
  assert auto_splits(3, 2, 64, 16) == 4  # capped by the 4 blocks of the window
  assert auto_splits(16, 4, 1024, 64) == 5  # ceil(264 / 64)
  assert auto_splits(4096, 4, 128, 64) == 1


@pytest.mark.parametrize('change,match', [
    (dict(window=S + 16), 'window'),
    (dict(window=0), 'window'),
    (dict(block_s=24), 'block_s'),
    (dict(window=48, block_s=32), 'block_s'),
    (dict(n_splits=-1), 'n_splits'),
    (dict(num_warps=0), 'num_warps'),
    (dict(num_stages=1.5), 'num_stages'),
    (dict(products='mma'), 'products'),
    (dict(products='dot', block_s=8, window=64), 'products'),
    (dict(layer=L), 'layer'),
    (dict(q=jnp.zeros((B, K, 1, 2 * H))), 'q_BxKxGxH'),
    (dict(q=jnp.zeros((B, K, H))), 'q_BxKxGxH'),
    (dict(kv=jnp.zeros((L, B, 3, K, S, H))), 'kv_LxBx2xKxSxH'),
    (dict(kv=jnp.zeros((B, 2, K, S, H))), 'kv_LxBx2xKxSxH'),
    (dict(lengths=jnp.ones((B + 1,), jnp.int32)), 'lengths_B'),
    (dict(lengths=jnp.ones((B,), jnp.float32)), 'lengths_B'),
])
def test_bad_inputs(change, match):
  q, k, v = make_inputs(1, jnp.float32)
  args = dict(q=q, kv=jnp.stack([k, v], axis=2), layer=0, lengths=jnp.asarray(LENGTHS))
  opts = dict(window=S, scale=SCALE, block_s=BLOCK, n_splits=0)
  for key, value in change.items():
    (args if key in args else opts)[key] = value
  with pytest.raises(ValueError, match=match):
    decode_attention(args['q'], args['kv'], args['layer'], args['lengths'], **opts)
