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
