"""The one train loop: pretraining, PRM/ORM training and revision fine-tuning supply only a loss
and a batch function.

- Parameters are created already sharded (eval_shape -> shardings -> jit(init, out_shardings)).
- The step is jitted with in/out shardings and donates its state.
- Batches are a pure function of the step number, so a resumed run sees exactly the batches an
  uninterrupted one would, and ends with the same parameters.
- The next step is dispatched before the previous step's metrics are read (no host stall);
  a NaN/inf loss stops training with a message naming the step, and the last checkpoint that
  was written (always after a finite check) is kept.
- Checkpoints: orbax CheckpointManager, with a JSON metadata item (tokens seen, FLOPs).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import struct

from ttc_jax.model.config import ConfigError
from ttc_jax.sharding import batch_sharding, param_shardings, replicated


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Optimiser and loop settings (units: steps, examples, tokens)."""
  steps: tuple[int, ...] = (200,)   # per family member, or one value for all
  batch_size: int = 64
  seq_len: int = 64
  lr: float = 3e-3
  warmup_steps: int = 50
  min_lr_ratio: float = 0.1
  weight_decay: float = 0.1
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  clip_norm: float = 1.0
  log_every: int = 20
  ckpt_every: int = 200
  max_to_keep: int = 2
  seed_offset: int = 0

  def validate(self, key: str = 'train') -> 'TrainConfig':
    if not self.steps or any(s <= 0 for s in self.steps):
      raise ConfigError(f'{key}.steps must be positive step counts, got {self.steps!r}.')
    for f in ('batch_size', 'seq_len', 'log_every', 'ckpt_every', 'max_to_keep'):
      if getattr(self, f) <= 0:
        raise ConfigError(f'{key}.{f} must be positive, got {getattr(self, f)!r}.')
    if self.lr <= 0:
      raise ConfigError(f'{key}.lr must be positive, got {self.lr}.')
    if self.warmup_steps < 0:
      raise ConfigError(f'{key}.warmup_steps must be >= 0, got {self.warmup_steps}.')
    if not 0 <= self.min_lr_ratio <= 1:
      raise ConfigError(f'{key}.min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}.')
    if not (0 <= self.b1 < 1 and 0 <= self.b2 < 1):
      raise ConfigError(f'{key}.b1 and {key}.b2 must lie in [0, 1).')
    if self.clip_norm <= 0:
      raise ConfigError(f'{key}.clip_norm must be positive, got {self.clip_norm}.')
    return self

  def steps_for(self, index: int) -> int:
    return self.steps[min(index, len(self.steps) - 1)]


class TrainingDiverged(RuntimeError):
  pass


@struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


def make_optimizer(cfg: TrainConfig, total_steps: int) -> optax.GradientTransformation:
  """AdamW with linear warmup and cosine decay to min_lr_ratio * lr; global-norm clipping.
  Weight decay applies to matrices only (not norms, biases)."""
  warmup = min(cfg.warmup_steps, max(total_steps - 1, 0))
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, cfg.lr, warmup, max(total_steps, warmup + 1), end_value=cfg.lr * cfg.min_lr_ratio)
  decay_mask = lambda p: jax.tree.map(lambda x: x.ndim >= 2, p)
  return optax.chain(
      optax.clip_by_global_norm(cfg.clip_norm),
      optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                  mask=decay_mask))


LossFn = Callable[[Any, dict, jax.Array], tuple[jax.Array, dict]]


@dataclasses.dataclass
class TrainResult:
  params: Any
  step: int
  metrics: list[dict]
  metadata: dict


def _state_shardings(init_fn, tx, mesh, fsdp):
  """Shardings of the train state: optimiser moments follow their parameter's sharding
  (optax.tree_map_params finds them); counters and other scalars are replicated."""
  abstract_params = jax.eval_shape(init_fn)
  p_sh = param_shardings(abstract_params, mesh, fsdp)
  abstract_opt = jax.eval_shape(tx.init, abstract_params)
  opt_sh = optax.tree_map_params(tx, lambda _, sh: sh, abstract_opt, p_sh,
                                 transform_non_params=lambda _: replicated(mesh))
  return TrainState(step=replicated(mesh), params=p_sh, opt_state=opt_sh)


def train(*, loss_fn: LossFn, init_fn: Callable[[], Any] | None, batch_fn: Callable[[int], dict],
          cfg: TrainConfig, total_steps: int, mesh, workdir: str | Path,
          tokens_per_step: int, flops_per_token: float, seed: int,
          metadata: dict | None = None, fsdp: bool = False, progress: bool = True,
          peak_flops: float | None = None, desc: str = 'train',
          hook: Callable[[int, Any], bool] | None = None,
          init_params: Any = None) -> TrainResult:
  """Runs (or resumes) training to `total_steps` and returns the final parameters.

  loss_fn(params, batch, rng) -> (scalar loss, dict of scalar metrics); must be pure.
  init_fn() -> params (traced under jit so parameters are created sharded).
  batch_fn(step) -> dict of numpy arrays with a leading batch axis (a pure function of step).
  tokens_per_step / flops_per_token: for throughput, MFU and the FLOPs metadata.
  workdir: checkpoints in workdir/ckpt, metrics in workdir/metrics.jsonl.
  hook(step, params) -> stop: called after every checkpoint (every cfg.ckpt_every steps, and
    at the end) with the parameters of that step, e.g. to evaluate on held-out data and keep
    the best; returning True stops training there (early stopping). On resume, steps whose
    checkpoint exists are not hooked again.
  init_params: concrete initial parameters (e.g. a policy a verifier starts from), placed
    with the parameter shardings; passing them instead of closing over them in init_fn keeps
    large weights out of the compiled program as constants.
  """
  workdir = Path(workdir)
  tx = make_optimizer(cfg, total_steps)

  if init_params is not None:
    init_fn = lambda: init_params   # only its shapes are traced (eval_shape)

  def init_state():
    params = init_fn()
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

  state_sh = _state_shardings(init_fn, tx, mesh, fsdp)
  example = batch_fn(0)
  b_sh = {k: batch_sharding(mesh, np.ndim(v)) for k, v in example.items()}
  base_key = jax.random.key(seed)

  def step_fn(state: TrainState, batch):
    rng = jax.random.fold_in(base_key, state.step)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = jnp.sqrt(sum(jnp.vdot(g, g).real for g in jax.tree.leaves(grads)))
    metrics = {'loss': loss, 'grad_norm': grad_norm, **aux}
    return TrainState(state.step + 1, params, opt_state), metrics

  step_jit = jax.jit(step_fn, in_shardings=(state_sh, b_sh),
                     out_shardings=(state_sh, replicated(mesh)), donate_argnums=(0,))

  manager = ocp.CheckpointManager(
      (workdir / 'ckpt').absolute(),
      options=ocp.CheckpointManagerOptions(max_to_keep=cfg.max_to_keep, create=True),
      item_names=('state', 'meta'))
  latest = manager.latest_step()
  if latest is not None:
    abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                            jax.eval_shape(init_state), state_sh)
    restored = manager.restore(latest, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    state = restored.state
  elif init_params is not None:
    params = jax.device_put(init_params, state_sh.params)
    state = jax.jit(lambda p: TrainState(jnp.zeros((), jnp.int32), p, tx.init(p)),
                    out_shardings=state_sh)(params)
  else:
    state = jax.jit(init_state, out_shardings=state_sh)()
  start = int(state.step)

  def meta_at(step):
    tokens = step * tokens_per_step
    return {**(metadata or {}), 'step': step, 'tokens_seen': tokens,
            'train_flops_6nd': 6.0 * (metadata or {}).get('non_embedding_params', 0) * tokens,
            'train_flops_analytic': flops_per_token * tokens}

  def save(step, st):
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(st),
                                               meta=ocp.args.JsonSave(meta_at(step))))

  log_path = workdir / 'metrics.jsonl'
  log_path.parent.mkdir(parents=True, exist_ok=True)
  metrics_log: list[dict] = []
  bar = None
  if progress and start < total_steps:
    from tqdm.auto import tqdm
    bar = tqdm(total=total_steps, initial=start, desc=desc, unit='step', leave=False)

  def check(step, m):
    host = jax.device_get(m)
    if not np.isfinite(host['loss']):
      manager.wait_until_finished()
      good = manager.latest_step()
      raise TrainingDiverged(
          f'{desc}: loss became {host["loss"]} at step {step}; stopped. The last good '
          f'checkpoint (step {good}) is kept in {workdir / "ckpt"}. Lower the learning rate '
          'or raise warmup, then rerun to resume from it.')
    return host

  pending = None
  t_last, step_last = time.perf_counter(), start
  with log_path.open('a') as log:
    for step in range(start, total_steps):
      batch = batch_fn(step)
      state, m = step_jit(state, batch)
      # Read the previous step's metrics only now: the device already has the next step.
      if pending is not None:
        prev_step, prev_m = pending
        host = check(prev_step, prev_m)
        if (prev_step + 1) % cfg.log_every == 0 or prev_step + 1 == total_steps:
          now = time.perf_counter()
          rate = (prev_step + 1 - step_last) * tokens_per_step / max(now - t_last, 1e-9)
          t_last, step_last = now, prev_step + 1
          rec = {'step': prev_step + 1, **{k: float(v) for k, v in host.items()},
                 'tokens_per_s': rate, 'tflops_per_s': rate * flops_per_token / 1e12}
          if peak_flops:
            rec['mfu'] = rate * flops_per_token / peak_flops
          log.write(json.dumps(rec) + '\n')
          log.flush()
          metrics_log.append(rec)
          if bar is not None:
            bar.set_postfix(loss=f'{rec["loss"]:.3f}', tok_s=f'{rate:,.0f}')
      pending = (step, m)
      stop = False
      if (step + 1) % cfg.ckpt_every == 0 or step + 1 == total_steps:
        check(step, m)   # never write a checkpoint of a diverged state
        save(step + 1, state)
        # Before the next step is dispatched: that step donates (invalidates) `state`.
        stop = bool(hook(step + 1, state.params)) if hook is not None else False
      if bar is not None:
        bar.update(1)
      if stop:
        break
    if pending is not None:
      prev_step, prev_m = pending
      host = check(prev_step, prev_m)
      if not metrics_log or metrics_log[-1]['step'] != prev_step + 1:
        rec = {'step': prev_step + 1, **{k: float(v) for k, v in host.items()}}
        log.write(json.dumps(rec) + '\n')
        metrics_log.append(rec)
  if bar is not None:
    bar.close()
  manager.wait_until_finished()
  manager.close()
  if not metrics_log and log_path.exists():
    metrics_log = [json.loads(l) for l in log_path.read_text().splitlines() if l.strip()]
  return TrainResult(params=state.params, step=int(state.step), metrics=metrics_log,
                     metadata=meta_at(int(state.step)))


def load_params(workdir: str | Path, abstract_params=None, step: int | None = None):
  """Restores parameters (and metadata) from a train workdir written by `train`."""
  path = (Path(workdir) / 'ckpt').absolute()
  if not path.exists():
    raise FileNotFoundError(f'no checkpoint directory {path}: train it first or fix the path.')
  manager = ocp.CheckpointManager(path, item_names=('state', 'meta'))
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f'{path} holds no finished checkpoint.')
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
  manager.close()
  st = restored.state
  params = st['params'] if isinstance(st, dict) else st.params
  if abstract_params is not None:
    params = jax.tree.map(lambda a, x: jnp.asarray(x, a.dtype), abstract_params, params)
  return params, dict(restored.meta)
