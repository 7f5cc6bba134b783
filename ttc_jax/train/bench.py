"""Training throughput and MFU of one model shape, against a peak measured in the same run.

  PYTHONPATH=. python3 -m ttc_jax.train.bench --d-model 768 --layers 12 --heads 12 \
      --kv-heads 12 --head-dim 64 --d-ff 3072 --vocab 32000 --batch 64 --seq 512 \
      --dtype bfloat16 --attention cudnn --loss fused --steps 40 --warmup 5 \
      --variants 'unroll=1;attention=xla,loss=std;base' --out /tmp/bench_train.json

(or `ttc bench train ARGS`). Each variant is the base arguments with a few overrides
(`key=value` pairs: attention, remat, unroll, loss, batch, breakdown); the default is the
base alone. A step is the train loop's step (AdamW from `make_optimizer`, global-norm
clipping, parameters and optimiser state created sharded and donated), on one random batch
that stays on the device, so the data pipeline is not timed.

Reported per variant: compile seconds, the median step time over --windows timed windows
(warm-up steps excluded, each window ended by block_until_ready), tokens/s (targets per
step / step time), model FLOPs per token three ways (6 x non-embedding params, 6 x matmul
params, and `ModelConfig.train_flops_per_token` = 3 x forward with causal-mean attention),
MFU = tokens/s x analytic FLOPs/token / peak (recomputation from remat is not counted), and
XLA's cost analysis of the compiled step (meaningful only with unroll = layers, since XLA
counts a while-loop body once; on CPU it lands within ~10% of the analytic count, on the
H200 it did not: see experiments/bench_train.md). The peak is the matmul rate in the compute
dtype on random data, measured before and after the variants; the higher of the two is used.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ttc_jax.model import ModelConfig, apply_features, init_params
from ttc_jax.sharding import MeshConfig, batch_sharding, make_mesh, replicated
from ttc_jax.train import pretrain
from ttc_jax.train.loop import TrainConfig, TrainState, _state_shardings, make_optimizer

VARIANT_KEYS = ('attention', 'remat', 'unroll', 'loss', 'batch', 'breakdown')


def measure_peak_flops(n: int, dtype: str, chain: int = 8, repeats: int = 7) -> float:
  """FLOP/s of n x n x n matmuls in `dtype` on random normal data (float32 accumulation).

  One jitted call runs `chain` dependent products (x <- x @ b, b scaled by n^-1/2 so values
  stay near unit size), so a host sync is paid once per `chain` products; returns the median
  over `repeats` calls after a warm-up.
  """
  ka, kb = jax.random.split(jax.random.key(0))
  x_NxN = jax.random.normal(ka, (n, n), dtype)
  b_NxN = (jax.random.normal(kb, (n, n), jnp.float32) * n ** -0.5).astype(dtype)

  @jax.jit
  def products(x, b):
    for _ in range(chain):
      x = jnp.dot(x, b, preferred_element_type=jnp.float32).astype(dtype)
    return x

  products(x_NxN, b_NxN).block_until_ready()
  secs = []
  for _ in range(repeats):
    t = time.perf_counter()
    out = products(x_NxN, b_NxN).block_until_ready()
    secs.append(time.perf_counter() - t)
  if not bool(jnp.isfinite(out.astype(jnp.float32)).all()):
    raise FloatingPointError('the peak matmul chain overflowed; its timing is not valid.')
  return 2.0 * n ** 3 * chain / statistics.median(secs)


def fused_lm_loss(params, batch, rng, *, config: ModelConfig):
  """`pretrain.lm_loss` without the float32 [B, T, V] logits and the accuracy metric.

  The unembedding writes logits in the compute dtype; log-sum-exp and the target logit are
  float32 reductions that XLA fuses with the read, and the backward is one elementwise pass
  (softmax - one-hot) in front of the two unembedding matmuls.
  """
  del rng
  tokens = batch['tokens']
  inputs, targets, mask = tokens[:, :-1], tokens[:, 1:], batch['loss_mask'][:, 1:]
  positions = jnp.broadcast_to(jnp.arange(inputs.shape[1]), inputs.shape)
  h_BxTxD, _ = apply_features(params, inputs, positions, config=config)
  if config.tie_embeddings:
    w_DxV = params['embed']['embedding'].T
  else:
    w_DxV = params['unembed']['kernel']
  logits_BxTxV = jnp.einsum('btd,dv->btv', h_BxTxD, w_DxV.astype(h_BxTxD.dtype))
  ce_BxT = pretrain.token_cross_entropy(logits_BxTxV, targets)
  denom = jnp.maximum(mask.sum(), 1.0)
  return (ce_BxT * mask).sum() / denom, {}


def _cost(compiled) -> dict:
  """XLA's FLOPs and bytes accessed of a compiled computation ({} where unavailable)."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return {}
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  if not cost:
    return {}
  return {k: float(cost[name]) for k, name in (('flops', 'flops'),
                                               ('bytes', 'bytes accessed')) if name in cost}


def _memory_gib(compiled) -> float | None:
  try:
    m = compiled.memory_analysis()
    return (m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes
            - m.alias_size_in_bytes) / 2 ** 30
  except Exception:  # pylint: disable=broad-except
    return None


def _timed_windows(run_steps, n_windows: int, steps_per_window: int) -> list[float]:
  """Seconds per step of each window; run_steps(k) dispatches k steps and blocks."""
  out = []
  for _ in range(n_windows):
    t = time.perf_counter()
    run_steps(steps_per_window)
    out.append((time.perf_counter() - t) / steps_per_window)
  return out


def bench_variant(cfg: ModelConfig, *, batch: int, seq: int, loss: str, warmup: int,
                  steps: int, n_windows: int, breakdown: bool, peak: float) -> dict:
  """Compiles and times one train step; returns its record (units in the key names)."""
  mesh = make_mesh(MeshConfig())
  tcfg = TrainConfig(steps=(warmup + steps,), batch_size=batch, seq_len=seq, warmup_steps=2)
  tx = make_optimizer(tcfg, warmup + steps)
  loss_impl = pretrain.lm_loss if loss == 'std' else fused_lm_loss
  loss_fn = lambda p, b, r: loss_impl(p, b, r, config=cfg)
  init_fn = lambda: init_params(cfg, jax.random.key(0))

  def init_state():
    params = init_fn()
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

  # The train loop's step (loop.train), here so it can be lowered and timed on its own.
  def step_fn(state: TrainState, batch_):
    rng = jax.random.fold_in(jax.random.key(0), state.step)
    (loss_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch_, rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = jnp.sqrt(sum(jnp.vdot(g, g).real for g in jax.tree.leaves(grads)))
    return TrainState(state.step + 1, params, opt_state), {'loss': loss_, 'grad_norm': grad_norm,
                                                           **aux}

  state_sh = _state_shardings(init_fn, tx, mesh, False)
  # One unpacked sequence per row, in the layout of pretrain.encode_examples.
  tokens = jax.random.randint(jax.random.key(1), (batch, seq + 1), 0, cfg.vocab_size,
                              jnp.int32)
  batch_ = {'tokens': tokens, 'loss_mask': jnp.ones(tokens.shape, jnp.float32),
            'positions': jnp.broadcast_to(jnp.arange(seq + 1, dtype=jnp.int32), tokens.shape),
            'segments': jnp.ones(tokens.shape, jnp.int32)}
  b_sh = {k: batch_sharding(mesh, 2) for k in batch_}
  batch_ = jax.device_put(batch_, b_sh)
  state = jax.jit(init_state, out_shardings=state_sh)()
  jax.block_until_ready(state)

  step_jit = jax.jit(step_fn, in_shardings=(state_sh, b_sh),
                     out_shardings=(state_sh, replicated(mesh)), donate_argnums=(0,))
  t = time.perf_counter()
  compiled = step_jit.lower(state, batch_).compile()
  compile_s = time.perf_counter() - t

  holder = {'state': state, 'metrics': None}

  def run_steps(k):
    st, m = holder['state'], None
    for _ in range(k):
      st, m = compiled(st, batch_)
    jax.block_until_ready((st, m))
    holder['state'], holder['metrics'] = st, m

  run_steps(warmup)
  per_window = max(1, steps // n_windows)
  windows_s = _timed_windows(run_steps, n_windows, per_window)
  step_s = statistics.median(windows_s)
  last = jax.device_get(holder['metrics'])
  if not np.isfinite(last['loss']):
    raise FloatingPointError(f'loss became {last["loss"]} in the benchmark; the step is wrong.')

  tokens_per_step = batch * seq
  tok_s = tokens_per_step / step_s
  flops_analytic = cfg.train_flops_per_token(seq)
  rec = {
      'compile_s': compile_s, 'step_s': step_s, 'step_s_windows': windows_s,
      'steps_per_window': per_window, 'tokens_per_step': tokens_per_step,
      'tokens_per_s': tok_s,
      'flops_per_token_6n': 6.0 * cfg.param_counts()['non_embedding'],
      'flops_per_token_6n_matmul': 6.0 * cfg.matmul_params(),
      'flops_per_token_analytic': flops_analytic,
      'model_tflops_per_s': tok_s * flops_analytic / 1e12,
      'mfu': tok_s * flops_analytic / peak,
      'mfu_6n_matmul': tok_s * 6.0 * cfg.matmul_params() / peak,
      'final_loss': float(last['loss']), 'memory_gib': _memory_gib(compiled),
  }
  cost = _cost(compiled)
  if cost:
    rec['xla_flops_per_step'] = cost.get('flops')
    rec['xla_bytes_per_step'] = cost.get('bytes')
    rec['xla_cost_loop_free'] = cfg.scan_unroll == cfg.n_layers
    if cost.get('flops'):
      rec['xla_flops_per_token'] = cost['flops'] / tokens_per_step
  del compiled

  if breakdown:
    # Forward (loss only) and forward + backward (no optimiser), on the same parameters:
    # the differences give the backward's and the optimiser's share of a step.
    params = holder['state'].params
    fwd = jax.jit(lambda p, b: loss_fn(p, b, None)[0])
    grad = jax.jit(lambda p, b: jax.grad(lambda q: loss_fn(q, b, None)[0])(p))
    for name, fn in (('forward_s', fwd), ('forward_backward_s', grad)):
      compiled_part = fn.lower(params, batch_).compile()
      compiled_part(params, batch_)
      jax.block_until_ready(compiled_part(params, batch_))
      run = lambda k, f=compiled_part: jax.block_until_ready([f(params, batch_)
                                                               for _ in range(k)])
      rec[name] = statistics.median(_timed_windows(run, n_windows, per_window))
    rec['optimizer_s'] = step_s - rec['forward_backward_s']
  del holder
  return rec


def _parse_variants(spec: str | None) -> list[dict[str, str]]:
  """'attention=xla,loss=std;base' -> [{'attention': 'xla', 'loss': 'std'}, {}]."""
  if not spec:
    return [{}]
  out = []
  for part in spec.split(';'):
    over = {}
    for kv in filter(lambda x: x and x != 'base', (x.strip() for x in part.split(','))):
      k, sep, v = kv.partition('=')
      if not sep or k not in VARIANT_KEYS:
        raise SystemExit(f'--variants: {kv!r} is not key=value with key one of '
                         f'{", ".join(VARIANT_KEYS)}.')
      over[k] = v
    out.append(over)
  return out


def _parser() -> argparse.ArgumentParser:
  ap = argparse.ArgumentParser(prog='ttc bench train', description=__doc__.split('\n')[0])
  a = ap.add_argument
  a('--d-model', type=int, default=768)
  a('--layers', type=int, default=12)
  a('--heads', type=int, default=12)
  a('--kv-heads', type=int, default=12)
  a('--head-dim', type=int, default=64)
  a('--d-ff', type=int, default=3072)
  a('--vocab', type=int, default=32000)
  a('--tie', action='store_true', help='tie the unembedding to the embedding')
  a('--batch', type=int, default=64, help='sequences per step')
  a('--seq', type=int, default=512, help='tokens per sequence (targets per row)')
  a('--dtype', default='bfloat16', help='compute dtype; parameters stay float32')
  a('--attention', default='cudnn', choices=('xla', 'dot_product', 'cudnn'))
  a('--remat', default='none', choices=('none', 'dots', 'full'))
  a('--unroll', type=int, default=0,
    help='layers per iteration of the layer scan; 0 (default): all layers, no loop')
  a('--loss', default='fused', choices=('std', 'fused'),
    help='std: pretrain.lm_loss as pretraining runs it (float32 logits, accuracy, the '
    'packed-segment mask, so always the einsum attention); fused: fused_lm_loss')
  a('--steps', type=int, default=40, help='timed steps (split into --windows windows)')
  a('--warmup', type=int, default=5, help='untimed steps after compilation')
  a('--windows', type=int, default=4)
  a('--breakdown', action='store_true', help='also time forward and forward+backward')
  a('--variants', default=None, help="';'-separated override sets, e.g. 'attention=xla;"
    "remat=dots,unroll=2' (keys: " + ', '.join(VARIANT_KEYS) + ')')
  a('--peak-n', type=int, default=8192, help='matmul size of the peak measurement')
  a('--out', default=None, help='write the JSON record here')
  return ap


def _variant_name(over: dict[str, str]) -> str:
  return ','.join(f'{k}={v}' for k, v in over.items()) or 'base'


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
  device = jax.devices()[0]
  print(f'device: {device.device_kind} x{jax.device_count()} ({jax.default_backend()}), '
        f'jax {jax.__version__}', flush=True)
  peak_before = measure_peak_flops(args.peak_n, args.dtype)
  print(f'peak {args.dtype} matmul ({args.peak_n}^3, random data): '
        f'{peak_before / 1e12:.1f} TFLOP/s', flush=True)

  records = []
  for over in _parse_variants(args.variants):
    batch = int(over.get('batch', args.batch))
    loss = over.get('loss', args.loss)
    name = _variant_name(over)
    print(f'[{name}] compiling ...', flush=True)
    try:
      cfg = ModelConfig(
          vocab_size=args.vocab, d_model=args.d_model, n_layers=args.layers,
          n_heads=args.heads, n_kv_heads=args.kv_heads, head_dim=args.head_dim,
          d_ff=args.d_ff, max_len=args.seq, tie_embeddings=args.tie, dtype=args.dtype,
          param_dtype='float32', attention_impl=over.get('attention', args.attention),
          remat=over.get('remat', args.remat),
          scan_unroll=int(over.get('unroll', args.unroll)) or args.layers,
          name='bench').validate('bench')
      if loss not in ('std', 'fused'):
        raise ValueError(f"--variants: loss must be 'std' or 'fused', got {loss!r}.")
      rec = bench_variant(cfg, batch=batch, seq=args.seq, loss=loss, warmup=args.warmup,
                          steps=args.steps, n_windows=args.windows,
                          breakdown=bool(int(over.get('breakdown', args.breakdown))),
                          peak=peak_before)
    except Exception as e:  # pylint: disable=broad-except
      # One failing variant (e.g. no cuDNN kernel) must not lose the others' numbers.
      print(f'[{name}] FAILED: {type(e).__name__}: {str(e)[:400]}', flush=True)
      records.append({'variant': name, 'error': f'{type(e).__name__}: {str(e)[:2000]}'})
      continue
    rec = {'variant': name, 'attention': cfg.attention_impl, 'remat': cfg.remat,
           'unroll': cfg.scan_unroll, 'loss': loss, 'batch': batch, **rec}
    records.append(rec)
    print(f'[{name}] compile {rec["compile_s"]:.1f} s, step {rec["step_s"] * 1e3:.2f} ms, '
          f'{rec["tokens_per_s"]:,.0f} tokens/s, {rec["model_tflops_per_s"]:.1f} TFLOP/s, '
          f'MFU {rec["mfu"]:.1%}', flush=True)

  peak_after = measure_peak_flops(args.peak_n, args.dtype)
  peak = max(peak_before, peak_after)
  for rec in records:
    if 'mfu' in rec:   # against the higher peak: the conservative MFU
      rec['mfu'] = rec['tokens_per_s'] * rec['flops_per_token_analytic'] / peak
      rec['mfu_6n_matmul'] = rec['tokens_per_s'] * rec['flops_per_token_6n_matmul'] / peak
  base = ModelConfig(
      vocab_size=args.vocab, d_model=args.d_model, n_layers=args.layers, n_heads=args.heads,
      n_kv_heads=args.kv_heads, head_dim=args.head_dim, d_ff=args.d_ff, max_len=args.seq,
      tie_embeddings=args.tie, dtype=args.dtype)
  out = {'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
         'device': device.device_kind, 'n_devices': jax.device_count(),
         'backend': jax.default_backend(), 'jax': jax.__version__,
         'peak_flops': peak, 'peak_flops_before': peak_before, 'peak_flops_after': peak_after,
         'peak_method': f'{args.peak_n}^3 {args.dtype} matmul chain, random normal data, '
                        'median of 7 calls; the higher of before/after',
         'model': dataclasses.asdict(base), 'params': base.param_counts(),
         'flops_per_token_analytic': base.train_flops_per_token(args.seq),
         'seq': args.seq, 'args': vars(args), 'variants': records}

  print(f'\npeak {peak / 1e12:.1f} TFLOP/s (before {peak_before / 1e12:.1f}, after '
        f'{peak_after / 1e12:.1f}); {base.param_counts()["total"] / 1e6:.1f}M params; '
        f'{out["flops_per_token_analytic"] / 1e6:.1f} MFLOP/token analytic')
  print(f'{"variant":44s} {"step ms":>8s} {"tokens/s":>10s} {"TFLOP/s":>8s} {"MFU":>6s} '
        f'{"compile s":>9s}')
  for rec in records:
    if 'error' in rec:
      print(f'{rec["variant"]:44s} FAILED')
      continue
    print(f'{rec["variant"]:44s} {rec["step_s"] * 1e3:8.2f} {rec["tokens_per_s"]:10,.0f} '
          f'{rec["model_tflops_per_s"]:8.1f} {rec["mfu"]:6.1%} {rec["compile_s"]:9.1f}')
  if args.out:
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1, default=float))
    print(f'wrote {args.out}')
  return 0 if all('error' not in r for r in records) else 1


if __name__ == '__main__':
  sys.exit(main())
