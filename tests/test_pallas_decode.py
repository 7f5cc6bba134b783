"""Pallas split-K decode attention (interpret mode on CPU): equality with a per-row reference,
dead cache slots never affecting the output, split counts, traced layers, argument errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttc_jax.model.pallas_decode import auto_block, auto_splits, decode_attention

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


@pytest.mark.parametrize('dtype,groups', [(jnp.float32, 1), (jnp.bfloat16, 1),
                                          (jnp.float32, 4), (jnp.bfloat16, 4)])
def test_one_block_matches_reference(dtype, groups):
  """block_s = window (the default for windows up to 128 slots) reads each row in one
  masked block with no loop; dead slots (NaN here) are never used, and a traced layer reads
  the same slots. G = 4 over bf16 keeps the dot path, so it checks the default routing."""
  q, k, v = make_inputs(groups, dtype, seed=6)
  lengths = jnp.asarray(LENGTHS)
  k_bad, v_bad = (poison(c, 1, LENGTHS, np.nan) for c in (k, v))
  for block_s in (S, 0):   # explicit, then automatic (auto_block(64) == 64)
    out = attend(q, k_bad, v_bad, 1, lengths, window=S, scale=SCALE, block_s=block_s)
    check(out, q, reference(q, k, v, 1, LENGTHS))
  traced = jax.jit(lambda layer: attend(q, k, v, layer, lengths, window=S, scale=SCALE,
                                        block_s=S))(jnp.int32(0))
  check(traced, q, reference(q, k, v, 0, LENGTHS))


def test_auto_block():
  assert [auto_block(w) for w in (8, 64, 128)] == [8, 64, 128]   # one block
  assert [auto_block(w) for w in (256, 1024, 96, 40)] == [64, 64, 32, 8]


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


@pytest.mark.parametrize('groups,dtype,products', [
    (1, jnp.bfloat16, 'auto'), (4, jnp.bfloat16, 'auto'), (1, jnp.float32, 'auto'),
    (1, jnp.bfloat16, 'dot'), (4, jnp.bfloat16, 'reduce')])
def test_lowers_to_triton_for_cuda(monkeypatch, groups, dtype, products):
  """The kernel lowers through Pallas' Triton backend for a CUDA target (jax.export, no GPU
  needed): the interpreter used by the other tests does not catch Triton lowering errors."""
  from jax._src.pallas.triton import gpu_info
  monkeypatch.setattr(gpu_info, 'get_gpu_info', lambda: gpu_info.GpuInfo(
      gpu_version=None, arch_name='9.0', compute_capability=90))   # an H100 / H200
  b, k, s, h, n_layers = 8, 2, 128, 64, 2
  spec = jax.ShapeDtypeStruct
  q, kv = spec((b, k, groups, h), dtype), spec((n_layers, b, 2, k, s, h), dtype)
  lengths = spec((b,), jnp.int32)
  opts = dict(window=s, scale=0.125, products=products, interpret=False)
  for n_splits, block_s in ((1, 64), (2, 64), (0, s)):   # (0, s): one block, no loop
    for layer in (1, spec((), jnp.int32)):   # static, then traced
      traced = not isinstance(layer, int)
      fn = lambda q, kvc, ln, *lay: decode_attention(
          q, kvc, lay[0] if lay else 1, ln, n_splits=n_splits, block_s=block_s, **opts)
      args = (q, kv, lengths)
      try:
        jax.export.export(jax.jit(fn), platforms=['cuda'])(*args, *((layer,) if traced else ()))
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


# ---- decode_attention_append: RoPE, the cache write and attention in one kernel ----------
WRITE = np.array([True, True, False, True])   # row 2 only reads


def append_inputs(groups, dtype, seed):
  """qkv [B, N + 2K, H] before RoPE, a random cache [L, B, 2, K, S, H], RoPE tables for
  position lengths - 1 (the slot each row appends)."""
  from ttc_jax.model import transformer
  rng = np.random.default_rng(seed)
  qkv = jnp.asarray(rng.standard_normal((B, K * groups + 2 * K, H), np.float32), dtype)
  kv = jnp.asarray(rng.standard_normal((L, B, 2, K, S, H), np.float32), dtype)
  cos, sin = transformer.rope_tables(jnp.asarray(LENGTHS - 1), H, 10_000.0)
  return qkv, kv, cos, sin


def rope_scatter_attend(qkv, kv, layer, groups, row_scale=None, bias=None, **opts):
  """The unfused path: the projections scaled and offset (as the fused-weights layer does),
  transformer.rope on q and k, a scatter of (k, v) into the writing rows' slots, then
  decode_attention over the updated cache."""
  from ttc_jax.model import transformer
  n = K * groups
  x = qkv.astype(jnp.float32)
  x = x if row_scale is None else x * row_scale[:, None, None]
  qkv = (x if bias is None else x + bias.astype(jnp.float32)).astype(qkv.dtype)
  pos_Bx1 = jnp.asarray(LENGTHS - 1)[:, None]
  rot = lambda x: transformer.rope(x[:, None], pos_Bx1, 10_000.0)[:, 0]
  q, k, v = rot(qkv[:, :n]), rot(qkv[:, n:n + K]), qkv[:, n + K:]
  slots = np.where(WRITE, LENGTHS - 1, S)   # out of range: dropped
  kv = kv.at[layer, np.arange(B), :, :, slots].set(jnp.stack([k, v], axis=1), mode='drop')
  return decode_attention(q.reshape(B, K, groups, H), kv, layer, jnp.asarray(LENGTHS),
                          **opts), kv


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize('groups,block_s,n_splits,scaled', [
    (1, S, 1, True), (1, BLOCK, 2, False), (4, BLOCK, 0, True), (4, S, 1, False)])
def test_append_equals_rope_scatter_attend(dtype, groups, block_s, n_splits, scaled):
  """One kernel = the projections' row scale and bias + RoPE of q and k + the scatter of
  k, v + attention, for the one-block and the looping kernel, one and several splits; the
  cache changes only in the writing rows' new slots, and the reading row (WRITE False) is
  left untouched."""
  from ttc_jax.model.pallas_decode import decode_attention_append
  qkv, kv, cos, sin = append_inputs(groups, dtype, seed=7)
  rng = np.random.default_rng(17)
  prologue = dict(row_scale=jnp.asarray(rng.uniform(0.5, 2.0, B), jnp.float32),
                  bias=jnp.asarray(rng.standard_normal(qkv.shape[1:]), dtype)) if scaled else {}
  opts = dict(window=S, scale=SCALE, block_s=block_s, n_splits=n_splits)
  for layer in (1, jnp.int32(0)):   # static, then traced
    want_out, want_kv = rope_scatter_attend(qkv, kv, layer, groups, products='reduce',
                                            **prologue, **opts)
    out, new_kv = jax.jit(lambda qkv, kv, layer: decode_attention_append(
        qkv, kv, layer, jnp.asarray(LENGTHS), jnp.asarray(WRITE), rope_cos_BxH=cos,
        rope_sin_BxH=sin, row_scale_B=prologue.get('row_scale'),
        bias_CxH=prologue.get('bias'), **opts))(qkv, kv, layer)
    assert out.dtype == dtype and out.shape == (B, K, groups, H)
    # RoPE in the kernel may round differently from XLA's by one unit in the last place.
    np.testing.assert_allclose(np.asarray(new_kv, np.float32), np.asarray(want_kv, np.float32),
                               rtol=1e-2 if dtype == jnp.bfloat16 else 1e-6, atol=1e-6)
    changed = np.asarray(new_kv != kv)
    want_changed = np.zeros(kv.shape, bool)
    for b in np.flatnonzero(WRITE):
      want_changed[int(layer), b, :, :, LENGTHS[b] - 1] = True
    assert not (changed & ~want_changed).any()
    assert changed[want_changed].mean() > 0.9   # (a random value may round to itself)
    rows = WRITE   # the reading row attends to its new key and value without writing them
    np.testing.assert_allclose(np.asarray(out, np.float32)[rows],
                               np.asarray(want_out, np.float32)[rows], **TOL[dtype])


def test_append_without_rope_and_dead_slots():
  """Without tables the key and value go in as given; slots at or past the new one (NaN
  here, the new slot included) are never read."""
  from ttc_jax.model.pallas_decode import decode_attention_append
  qkv, kv, _, _ = append_inputs(1, jnp.float32, seed=8)
  dead = np.arange(S)[None, :] >= (LENGTHS - 1)[:, None]
  kv_bad = np.array(kv)
  kv_bad[1][dead[:, None, None, :, None].repeat(2, 1).repeat(K, 2).repeat(H, 4)] = np.nan
  out, new_kv = decode_attention_append(qkv, jnp.asarray(kv_bad), 1, jnp.asarray(LENGTHS),
                                        jnp.ones(B, bool), window=S, scale=SCALE)
  k_new, v_new = qkv[:, K:2 * K], qkv[:, 2 * K:]
  np.testing.assert_array_equal(np.asarray(new_kv)[1, np.arange(B), 0, :, LENGTHS - 1], k_new)
  np.testing.assert_array_equal(np.asarray(new_kv)[1, np.arange(B), 1, :, LENGTHS - 1], v_new)
  want = reference(qkv[:, :K, None], new_kv[:, :, 0], new_kv[:, :, 1], 1, LENGTHS)
  check(out, qkv[:, :K, None], want)


@pytest.mark.parametrize('block_s', [64, 128])
def test_append_lowers_to_triton_for_cuda(monkeypatch, block_s):
  """The appending kernel (one block, and a 64-slot loop; with row scale, bias and RoPE)
  lowers for a CUDA target."""
  from jax._src.pallas.triton import gpu_info
  from ttc_jax.model.pallas_decode import decode_attention_append
  monkeypatch.setattr(gpu_info, 'get_gpu_info', lambda: gpu_info.GpuInfo(
      gpu_version=None, arch_name='9.0', compute_capability=90))
  b, k, s, h, n_layers = 8, 2, 128, 64, 2
  spec = jax.ShapeDtypeStruct
  args = (spec((b, 3 * k, h), jnp.bfloat16), spec((n_layers, b, 2, k, s, h), jnp.bfloat16),
          spec((b,), jnp.int32), spec((b,), jnp.bool_), spec((b, h), jnp.float32),
          spec((b, h), jnp.float32), spec((b,), jnp.float32), spec((3 * k, h), jnp.bfloat16))
  for layer in (1, spec((), jnp.int32)):
    fn = lambda qkv, kv, ln, wr, cos, sin, scale, bias, *lay: decode_attention_append(
        qkv, kv, lay[0] if lay else 1, ln, wr, rope_cos_BxH=cos, rope_sin_BxH=sin,
        row_scale_B=scale, bias_CxH=bias, window=s, scale=0.125, block_s=block_s,
        interpret=False)
    try:
      jax.export.export(jax.jit(fn), platforms=['cuda'])(
          *args, *(() if isinstance(layer, int) else (layer,)))
    except ValueError as e:
      if 'custom call safety check' not in str(e):
        raise


@pytest.mark.parametrize('change,match', [
    (dict(qkv=jnp.zeros((B, 3 * K + 1, H))), 'qkv_BxCxH'),
    (dict(qkv=jnp.zeros((B, 3 * K, 2 * H))), 'qkv_BxCxH'),
    (dict(write=jnp.ones((B + 1,), bool)), 'write_B'),
    (dict(rope_cos_BxH=jnp.zeros((B, H))), 'rope_cos_BxH'),
    (dict(rope_cos_BxH=jnp.zeros((B, H // 2)), rope_sin_BxH=jnp.zeros((B, H // 2))),
     'rope_cos_BxH'),
    (dict(window=S + 1), 'window'),
    (dict(row_scale_B=jnp.ones((B, 1))), 'row_scale_B'),
    (dict(bias_CxH=jnp.ones((3 * K, H + 1))), 'bias_CxH'),
])
def test_append_bad_inputs(change, match):
  from ttc_jax.model.pallas_decode import decode_attention_append
  qkv, kv, _, _ = append_inputs(1, jnp.float32, seed=9)
  args = dict(qkv=qkv, write=jnp.ones((B,), bool))
  opts = dict(window=S, scale=SCALE)
  for key, value in change.items():
    (args if key in args else opts)[key] = value
  with pytest.raises(ValueError, match=match):
    decode_attention_append(args['qkv'], kv, 0, jnp.asarray(LENGTHS), args['write'], **opts)
