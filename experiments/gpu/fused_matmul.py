"""A matmul with the decode layer's elementwise work folded in, in Pallas (Triton): a measured
dead end, kept as the record of what was tried (experiments/bench_sampling.md, 2026-11-29
seventh session). On an H200 its programs ran the M model's matmuls about half as fast as
XLA's own Triton GEMMs, so the sampler wired through it was slower end to end (0.513M against
0.601M tokens/s at M/1024, 6.196M against 6.332M at S/4096) and was removed.

  y = epilogue(prologue(x) @ w)

- prologue, `rms_eps` set: RMSNorm of x's rows without the norm's gain (fold the gain into w's
  rows first, `w * gain[:, None]`). Each program sums x^2 over its rows and applies the row
  scale rsqrt(mean(x^2) + eps) to the float32 accumulator, so the normalised activations never
  go to memory.
- epilogue, `glu` set ('silu' or 'gelu_tanh'): w holds [gate | up] (2F columns) and y is
  act(x @ w_gate) * (x @ w_up), F columns; each program keeps both accumulators, so the 2F-wide
  product never goes to memory.
- epilogue, `residual` given: y = residual + (x @ w), added in float32.

In a decode step at batch 1024 (issue 3's M model) these are the per-layer kernels that sit
between the matmuls: the two norm fusions, the SwiGLU product and the residual adds.

The grid is (M / block_m, N / block_n); a program loops over D in block_k slices, and the dots
run on tensor cores (16-bit operands, float32 accumulation). block_m must divide M, block_k
D and block_n N (the caller falls back to XLA otherwise; see `supported`).

Micro-benchmark (GPU), against XLA's matmul plus the separate elementwise kernels:
  PYTHONPATH=. python3 experiments/gpu/fused_matmul.py --rows 1024 --d-model 768 \
      --d-ff 3072 --configs 64:128:64:4:3,128:128:64:8:3
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

_ACTS = {'silu': jax.nn.silu, 'gelu_tanh': functools.partial(jax.nn.gelu, approximate=True)}


def supported(m: int, d: int, n_out: int, block_m: int, block_n: int, block_k: int) -> bool:
  """Whether fused_matmul tiles an [m, d] x [d, n_out] product with these blocks."""
  return m % block_m == 0 and d % block_k == 0 and n_out % block_n == 0


def _kernel(*refs, block_m, block_n, block_k, n_k, d, n_out, rms_eps, glu, has_residual):
  x_ref, w_ref = refs[:2]
  res_ref = refs[2] if has_residual else None
  o_ref = refs[-1]
  i, j = pl.program_id(0), pl.program_id(1)
  rows = pl.ds(pl.multiple_of(i * block_m, block_m), block_m)
  cols = pl.multiple_of(j * block_n, block_n)
  dims = dict(preferred_element_type=jnp.float32)

  def tile(t):
    return pl.ds(pl.multiple_of(t * block_k, block_k), block_k)

  def body(t, carry):
    acc, acc_up = carry
    ks = tile(t)
    x = x_ref[rows, ks]
    acc += jnp.dot(x, w_ref[ks, pl.ds(cols, block_n)], **dims)
    if glu:
      acc_up += jnp.dot(x, w_ref[ks, pl.ds(cols + n_out, block_n)], **dims)
    return acc, acc_up

  zeros = jnp.zeros((block_m, block_n), jnp.float32)
  acc, acc_up = lax.fori_loop(0, n_k, body, (zeros, zeros if glu else jnp.float32(0)))
  if rms_eps is not None:
    # A pass of its own over the program's x rows (L2-resident after the dot loop): summing
    # the dot loop's own x tiles gave wrong results on an H200 for some tilings.
    def squares(t, ss):
      xf = x_ref[rows, tile(t)].astype(jnp.float32)
      return ss + jnp.sum(xf * xf, axis=1)
    ss = lax.fori_loop(0, n_k, squares, jnp.zeros((block_m,), jnp.float32))
    scale = lax.rsqrt(ss / d + rms_eps)[:, None]
    acc = acc * scale
    acc_up = acc_up * scale if glu else acc_up
  if glu:
    acc = _ACTS[glu](acc) * acc_up
  if has_residual:
    acc = acc + res_ref[rows, pl.ds(cols, block_n)].astype(jnp.float32)
  o_ref[rows, pl.ds(cols, block_n)] = acc.astype(o_ref.dtype)


def fused_matmul(x_MxD: jax.Array, w_DxN: jax.Array, *, rms_eps: float | None = None,
                 glu: str | None = None, residual_MxN: jax.Array | None = None,
                 out_dtype=None, block_m: int = 64, block_n: int = 128, block_k: int = 64,
                 num_warps: int = 4, num_stages: int = 3,
                 interpret: bool | None = None) -> jax.Array:
  """epilogue(prologue(x) @ w); see the module docstring.

  Args:
    x_MxD: activations (16-bit for tensor-core dots).
    w_DxN: weights in x's dtype; with `glu`, N = 2F columns, gate first.
    rms_eps: RMSNorm's epsilon: normalise x's rows (no gain) before the product.
    glu: 'silu' or 'gelu_tanh': gated product of the two halves of w's columns.
    residual_MxN: added to the product (not with `glu`).
    out_dtype: the output's dtype; default x's.
    block_m, block_n, block_k, num_warps, num_stages: tiling and Triton launch settings;
      the blocks must divide M, N (F with glu) and D.
    interpret: run the Pallas interpreter; None means interpret unless the backend is 'gpu'.

  Returns:
    [M, N] (or [M, F] with glu).

  Raises:
    ValueError: mismatched shapes, an unknown glu, a residual with glu, or blocks that do
      not divide the shape.
  """
  if x_MxD.ndim != 2 or w_DxN.ndim != 2 or x_MxD.shape[1] != w_DxN.shape[0]:
    raise ValueError(f'fused_matmul needs x [M, D] and w [D, N], got {x_MxD.shape} and '
                     f'{w_DxN.shape}')
  m, d = x_MxD.shape
  n = w_DxN.shape[1]
  if glu is not None:
    if glu not in _ACTS:
      raise ValueError(f'glu={glu!r} must be one of {sorted(_ACTS)} or None')
    if n % 2:
      raise ValueError(f'glu needs an even number of weight columns, got {n}')
    if residual_MxN is not None:
      raise ValueError('fused_matmul takes a residual or a glu, not both')
  n_out = n // 2 if glu else n
  if residual_MxN is not None and residual_MxN.shape != (m, n_out):
    raise ValueError(f'residual_MxN shape {residual_MxN.shape} must be {(m, n_out)}')
  if not supported(m, d, n_out, block_m, block_n, block_k):
    raise ValueError(f'blocks (block_m={block_m}, block_n={block_n}, block_k={block_k}) must '
                     f'divide (M={m}, N={n_out}, D={d})')
  if interpret is None:
    interpret = jax.default_backend() != 'gpu'
  kernel = functools.partial(
      _kernel, block_m=block_m, block_n=block_n, block_k=block_k, n_k=d // block_k, d=d,
      n_out=n_out, rms_eps=None if rms_eps is None else float(rms_eps), glu=glu,
      has_residual=residual_MxN is not None)
  operands = [x_MxD, w_DxN] + ([residual_MxN] if residual_MxN is not None else [])
  whole = lambda a: pl.BlockSpec(a.shape, lambda i, j: (0, 0))
  return pl.pallas_call(
      kernel,
      grid=(m // block_m, n_out // block_n),
      in_specs=[whole(a) for a in operands],
      out_specs=pl.BlockSpec((m, n_out), lambda i, j: (0, 0)),
      out_shape=jax.ShapeDtypeStruct((m, n_out), out_dtype or x_MxD.dtype),
      compiler_params=plgpu.CompilerParams(num_warps=num_warps, num_stages=num_stages),
      interpret=bool(interpret),
      name='fused_matmul',
  )(*operands)


def reference_fused_matmul(x_MxD, w_DxN, *, rms_eps=None, glu=None, residual_MxN=None,
                           out_dtype=None):
  """Plain JAX, as XLA runs the unfused layer: norm, cast, matmul, elementwise epilogue."""
  h = x_MxD
  if rms_eps is not None:
    xf = x_MxD.astype(jnp.float32)
    h = (xf * lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + rms_eps)
         ).astype(x_MxD.dtype)
  y = jnp.dot(h, w_DxN, preferred_element_type=jnp.float32)
  if glu:
    gate, up = jnp.split(y.astype(x_MxD.dtype), 2, axis=-1)
    y = _ACTS[glu](gate) * up
  if residual_MxN is not None:
    y = residual_MxN + y.astype(x_MxD.dtype)
  return y.astype(out_dtype or x_MxD.dtype)


def _main():
  import argparse
  import time
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--rows', type=int, default=1024)
  ap.add_argument('--d-model', type=int, default=768)
  ap.add_argument('--d-ff', type=int, default=3072)
  ap.add_argument('--heads', type=int, default=0, help='q/k/v heads of 64 (0: d_model / 64)')
  ap.add_argument('--configs', default='64:128:64:4:3',
                  help='comma-separated block_m:block_n:block_k:num_warps:num_stages')
  ap.add_argument('--reps', type=int, default=32, help='calls chained per timed jit')
  a = ap.parse_args()
  m, d, f = a.rows, a.d_model, a.d_ff
  heads = a.heads or d // 64
  ks = jax.random.split(jax.random.key(0), 6)
  bf = jnp.bfloat16
  x = jax.random.normal(ks[0], (m, d), bf)
  h = jax.random.normal(ks[1], (m, f), bf)
  w = {'qkv': jax.random.normal(ks[2], (d, 3 * heads * 64), bf) * d ** -0.5,
       'o': jax.random.normal(ks[3], (heads * 64, d), bf) * d ** -0.5,
       'gate_up': jax.random.normal(ks[4], (d, 2 * f), bf) * d ** -0.5,
       'down': jax.random.normal(ks[5], (f, d), bf) * f ** -0.5}
  o_in = jax.random.normal(ks[1], (m, heads * 64), bf)
  # (name, x, w, options): the four matmuls of a decode layer with what XLA runs beside them.
  cases = [('qkv+norm', x, w['qkv'], dict(rms_eps=1e-6)),
           ('o+residual', o_in, w['o'], dict(residual_MxN=x)),
           ('gate_up+norm+swiglu', x, w['gate_up'], dict(rms_eps=1e-6, glu='silu')),
           ('down+residual', h, w['down'], dict(residual_MxN=x)),
           ('gate_up (plain)', x, w['gate_up'], {})]
  print(f'backend={jax.default_backend()} rows={m} d_model={d} d_ff={f} heads={heads}')

  def timed(fn, x, w):
    """us per call of fn(x, w): `reps` calls chained in one jit (an optimisation barrier
    orders each after the last, so XLA can neither merge nor hoist them and the dispatch cost
    is shared), median of 5 runs."""
    def chain(x, w):
      outs = []
      for _ in range(a.reps):
        y = fn(x, w)
        x, y = lax.optimization_barrier((x, y))
        outs.append(y[:1])
      return y, outs
    run = jax.jit(chain)
    out = jax.block_until_ready(run(x, w))[0]
    times = []
    for _ in range(5):
      t0 = time.perf_counter()
      jax.block_until_ready(run(x, w))
      times.append((time.perf_counter() - t0) / a.reps * 1e6)
    return sorted(times)[2], out

  for name, xx, ww, opts in cases:
    flops = 2 * m * ww.shape[0] * ww.shape[1]
    ref_us, want = timed(functools.partial(reference_fused_matmul, **opts), xx, ww)
    print(f'{name:>22} xla      : {ref_us:7.1f} us  {flops / ref_us / 1e6:6.1f} TFLOP/s',
          flush=True)
    for spec in a.configs.split(','):
      bm, bn, bk, warps, stages = (int(v) for v in spec.split(':'))
      fn = functools.partial(fused_matmul, block_m=bm, block_n=bn, block_k=bk,
                             num_warps=warps, num_stages=stages, **opts)
      try:
        us, out = timed(fn, xx, ww)
      except Exception as e:  # a setting the compiler rejects: report it, time the others
        print(f'{name:>22} {spec:>14}: failed: {type(e).__name__}: {str(e)[:200]}')
        continue
      err = float(jnp.max(jnp.abs(out.astype(jnp.float32) - want.astype(jnp.float32))))
      print(f'{name:>22} {spec:>14}: {us:7.1f} us  {flops / us / 1e6:6.1f} TFLOP/s  '
            f'x{ref_us / us:.2f}  max|diff| {err:.3g}', flush=True)


if __name__ == '__main__':
  _main()
