"""Pallas kernels of the decode step's elementwise work (interpret mode on CPU): each equals
the plain-JAX computation of the fused-weights layer exactly, writes only the rows and slots
it should, lowers for a CUDA target, and rejects bad arguments by name."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttc_jax.model import pallas_step
from ttc_jax.model.transformer import rope, rope_tables

L, B, K, S, H = 3, 16, 2, 12, 16


def _inputs(groups, seed=0, dtype=jnp.bfloat16):
  rng = np.random.default_rng(seed)
  c = K * groups + 2 * K
  qkv = jnp.asarray(rng.standard_normal((B, c, H), np.float32), dtype)
  cache = jnp.asarray(rng.standard_normal((L, B, 2, K, S, H), np.float32), dtype)
  # Slots in range, and two out of it (S, -1) that must be dropped like XLA's scatter drops.
  slots = jnp.asarray(np.r_[rng.integers(0, S, B - 2), S, -1], jnp.int32)
  write = jnp.asarray(np.arange(B) % 5 != 3)   # rows 3, 8, 13 write nothing
  sumsq = jnp.asarray(rng.uniform(5, 50, B), jnp.float32)
  bias = jnp.asarray(rng.standard_normal((c, H), np.float32), dtype)
  return qkv, cache, slots, write, sumsq, bias


@pytest.mark.parametrize('groups', [1, 3])
@pytest.mark.parametrize('parts', ['none', 'scale', 'bias', 'rope', 'all'])
@pytest.mark.parametrize('layer', [1, 'traced'])
def test_qkv_append_equals_reference(groups, parts, layer):
  qkv, cache, slots, write, sumsq, bias = _inputs(groups)
  cos, sin = rope_tables(slots, H, 10000.0)
  kw = {}
  if parts in ('scale', 'all'):
    kw.update(sumsq_B=sumsq, d_model=40, eps=1e-6)
  if parts in ('bias', 'all'):
    kw.update(bias_CxH=bias)
  if parts in ('rope', 'all'):
    kw.update(rope_cos_BxH=cos, rope_sin_BxH=sin)
  lay = jnp.int32(2) if layer == 'traced' else layer
  q, got = pallas_step.qkv_append(qkv, cache, lay, slots, write, rows=4, **kw)
  q_want, want = pallas_step.reference_qkv_append(qkv, cache, lay, slots, write, **kw)
  assert q.shape == (B, K, groups, H) and q.dtype == qkv.dtype
  np.testing.assert_array_equal(q, q_want)
  np.testing.assert_array_equal(got, want)
  # Only writing rows with a slot in range changed, and only in that slot of that layer.
  lay = int(lay)
  changed = np.asarray(jnp.any(got != cache, axis=(2, 3, 5)))   # [L, B, S]
  ok = np.asarray(write & (slots >= 0) & (slots < S))
  expect = np.zeros((L, B, S), bool)
  expect[lay, np.flatnonzero(ok), np.asarray(slots)[ok]] = True
  np.testing.assert_array_equal(changed, expect)


def test_qkv_append_rope_matches_the_model():
  """The tables' x * cos + swap(x) * sin is the model's `rope` (half-split), rounded alike."""
  qkv, cache, slots, write, _, _ = _inputs(1, seed=1)
  scaling = (8.0, 1.0, 4.0, 64)   # Llama-3 frequency scaling too
  cos, sin = rope_tables(slots, H, 500000.0, scaling)
  q, got = pallas_step.qkv_append(qkv, cache, 0, slots, jnp.ones((B,), bool),
                                  rope_cos_BxH=cos, rope_sin_BxH=sin)
  positions = slots[:, None]
  want_q = rope(qkv[:, None, :K], positions, 500000.0, scaling)[:, 0]
  np.testing.assert_array_equal(q[:, :, 0], want_q)
  want_k = rope(qkv[:, None, K:2 * K], positions, 500000.0, scaling)[:, 0]
  rows = np.flatnonzero((slots >= 0) & (slots < S))
  np.testing.assert_array_equal(got[0, rows, 0, :, np.asarray(slots)[rows]], want_k[rows])
  np.testing.assert_array_equal(got[0, rows, 1, :, np.asarray(slots)[rows]],
                                qkv[rows, 2 * K:])


@pytest.mark.parametrize('activation', ['silu', 'gelu_tanh'])
@pytest.mark.parametrize('scaled', [False, True])
def test_swiglu_equals_reference(activation, scaled):
  rng = np.random.default_rng(2)
  gate_up = jnp.asarray(3 * rng.standard_normal((B, 2 * 96), np.float32), jnp.bfloat16)
  kw = dict(sumsq_B=jnp.asarray(rng.uniform(5, 50, B), jnp.float32), d_model=40,
            eps=1e-5) if scaled else {}
  got = pallas_step.swiglu(gate_up, activation=activation, block_rows=4, **kw)
  want = pallas_step.reference_swiglu(gate_up, activation=activation, **kw)
  assert got.shape == (B, 96) and got.dtype == jnp.bfloat16
  if activation == 'silu':
    np.testing.assert_array_equal(got, want)
  else:   # XLA:CPU vectorises tanh differently inside the kernel: one bfloat16 step at most
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                               rtol=2 ** -7, atol=1e-6)
  # The gate is the first half: swapping halves changes the result.
  swapped = jnp.concatenate([gate_up[:, 96:], gate_up[:, :96]], axis=1)
  assert not np.array_equal(pallas_step.swiglu(swapped, activation=activation, **kw), want)


def test_lower_to_triton_for_cuda(monkeypatch):
  """Both kernels lower through Pallas' Triton backend for a CUDA target (jax.export, no GPU
  needed), at issue 3's M shape, with a static and a traced layer."""
  from jax._src.pallas.triton import gpu_info
  monkeypatch.setattr(gpu_info, 'get_gpu_info', lambda: gpu_info.GpuInfo(
      gpu_version=None, arch_name='9.0', compute_capability=90))
  spec = jax.ShapeDtypeStruct
  b, k, s, h, n_layers = 1024, 12, 128, 64, 12
  f32 = lambda *shape: spec(shape, jnp.float32)
  args = (spec((b, 3 * k, h), jnp.bfloat16), spec((n_layers, b, 2, k, s, h), jnp.bfloat16),
          spec((b,), jnp.int32), spec((b,), jnp.bool_), f32(b), f32(b, h), f32(b, h),
          spec((3 * k, h), jnp.bfloat16))
  fns = [lambda qkv, kv, sl, wr, ss, cos, sin, bias, *lay: pallas_step.qkv_append(
      qkv, kv, lay[0] if lay else 1, sl, wr, sumsq_B=ss, d_model=768, eps=1e-6, bias_CxH=bias,
      rope_cos_BxH=cos, rope_sin_BxH=sin, interpret=False)]
  cases = [(fns[0], args), (fns[0], args + (spec((), jnp.int32),)),
           (lambda gu, ss: pallas_step.swiglu(gu, sumsq_B=ss, d_model=768, eps=1e-6,
                                              interpret=False),
            (spec((b, 6144), jnp.bfloat16), f32(b)))]
  for fn, fn_args in cases:
    try:
      jax.export.export(jax.jit(fn), platforms=['cuda'])(*fn_args)
    except ValueError as e:   # lowered: only export's check of custom-call targets objects
      if 'custom call safety check' not in str(e):
        raise


@pytest.mark.parametrize('change,match', [
    (dict(qkv=jnp.zeros((B, 5, H))), 'qkv_BxCxH'),
    (dict(qkv=jnp.zeros((B, 3 * K))), 'qkv_BxCxH'),
    (dict(cache=jnp.zeros((B, 2, K, S, H))), 'kv_LxBx2xKxSxH'),
    (dict(slots=jnp.zeros((B + 1,), jnp.int32)), 'slots_B'),
    (dict(write=jnp.ones((2,), bool)), 'write_B'),
    (dict(sumsq_B=jnp.ones((B,)), d_model=0), 'sumsq_B'),
    (dict(bias_CxH=jnp.zeros((3 * K, H + 1))), 'bias_CxH'),
    (dict(rope_cos_BxH=jnp.zeros((B, H))), 'rope_cos_BxH'),
    (dict(rows=3), 'rows'),
    (dict(rows=32), 'rows'),
    (dict(layer=L), 'layer'),
])
def test_qkv_append_bad_inputs(change, match):
  qkv, cache, slots, write, _, _ = _inputs(1)
  args = dict(qkv=qkv, cache=cache, layer=0, slots=slots, write=write)
  opts = {}
  for key, value in change.items():
    (args if key in args else opts)[key] = value
  with pytest.raises(ValueError, match=match):
    pallas_step.qkv_append(args['qkv'], args['cache'], args['layer'], args['slots'],
                           args['write'], **opts)


@pytest.mark.parametrize('kw,match', [
    (dict(gate_up=jnp.zeros((B, 7))), 'gate_up_BxF2'),
    (dict(block_rows=3), 'block_rows'),
    (dict(block_cols=64), 'block_cols'),
    (dict(activation='relu'), 'activation'),
    (dict(sumsq_B=jnp.ones((B + 1,)), d_model=8), 'sumsq_B'),
])
def test_swiglu_bad_inputs(kw, match):
  gate_up = kw.pop('gate_up', jnp.zeros((B, 2 * 96), jnp.bfloat16))
  with pytest.raises(ValueError, match=match):
    pallas_step.swiglu(gate_up, **kw)
