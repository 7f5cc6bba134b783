"""The revision model and the revision-aware ORM, both fine-tuned through the shared train loop.

Revision model: the base policy's parameters, trained on `data.encode_revision_examples` rows
(loss on the final, correct attempt only). RoPE has no learned positions, so the same
parameters run with a longer cache: the revision model's config is the policy's with
max_len = revisions.context_len (room for the question, 4 earlier attempts and a new one).

Checkpoint choice (paper: "slightly after validation loss starts rising"): the run writes a
checkpoint every `eval_every` steps and keeps them all; afterwards the validation loss (held
out PROBLEMS, never seen in training) is computed at step 0 and every checkpoint, and
  select='min_val':   the checkpoint with the lowest validation loss;
  select='after_min': the one `patience` evaluations after that minimum (capped at the last),
                      i.e. slightly past the turn, where the model revises more boldly.

Revision-aware ORM (a minimal value head; ttc_jax/verify/prm.py had no API yet when this was
written): sigmoid(w . h + b) on the final hidden state h at an attempt's EOS, where the input
is BOS + context (earlier attempts, `context.format_context`) + attempt + EOS. Trained with
binary cross-entropy on the attempt's correctness, initialised from the base policy.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

from ttc_jax import io
from ttc_jax.data.tokenizer import Tokenizer
from ttc_jax.model import ModelConfig, apply, apply_features
from ttc_jax.model.config import ConfigError
from ttc_jax.revise.context import MAX_ATTEMPTS, fit_context
from ttc_jax.revise.data import encode_revision_examples, problem_rng
from ttc_jax.sample.decode import bucket_length
from ttc_jax.train import pretrain as pretrain_lib
from ttc_jax.train.loop import TrainConfig, load_params, train

SELECT_RULES = ('min_val', 'after_min')


@dataclasses.dataclass(frozen=True)
class RevisionConfig:
  """Every knob of the revisions stage (config key `revisions`). Units: tokens, steps.

  Data: train_problems training problems, samples_per_problem samples each at
    sample_temperature (paper: 64 at a high temperature); max_incorrect caps k in a
    trajectory; val_fraction of those problems are held out for the validation curve.
  Context: max_attempts earlier attempts kept (paper: 4); context_len the revision model's
    max_len in tokens; max_new_tokens per attempt (0: the task's longest solution + EOS).
  Fine-tune: steps, batch_size (packed rows of context_len tokens), lr, warmup_steps,
    min_lr_ratio (1.0 = constant after warmup), weight_decay, eval_every (steps between
    checkpoints/validation points), select and patience (see the module docstring). The
    paper's lr 1e-5 is for PaLM 2-S; the embedded task's small models need ~1e-3 (at 1e-4
    and 400 steps the model had not learnt to read long contexts, and its revisions turned
    87% of correct answers incorrect).
  ORM: orm_steps (0: no revision-aware ORM; hierarchical selection is then skipped),
    orm_lr, orm_batch_size, orm_sequences_per_problem (random attempt sequences per
    training problem), score_batch (rows per scoring call).
  Inference: eval_split / eval_problems; max_budget (generations per problem, a power of 2;
    every N = 1, 2, 4, .. max_budget and every ratio seq:par with seq * par = N is
    evaluated), temperature, batch_rows (rows per sampler call; rounds are chunked to it),
    decode_windows (the sampler's static attention windows with the XLA attention: fewer
    compile faster, more decode long caches faster; the Pallas kernel always uses one).
  seed: seeds data, splits and sampling (with the stage key).
  """
  train_problems: int = 512
  samples_per_problem: int = 64
  sample_temperature: float = 1.0
  sample_batch: int = 2048
  max_incorrect: int = 4
  val_fraction: float = 0.1
  max_attempts: int = MAX_ATTEMPTS
  context_len: int = 384
  max_new_tokens: int = 0
  steps: int = 1500
  batch_size: int = 64
  lr: float = 1e-3
  warmup_steps: int = 50
  min_lr_ratio: float = 1.0
  weight_decay: float = 0.0
  eval_every: int = 100
  select: str = 'after_min'
  patience: int = 1
  orm_steps: int = 600
  orm_lr: float = 1e-3
  orm_batch_size: int = 32
  orm_sequences_per_problem: int = 16
  score_batch: int = 256
  eval_split: str = 'test'
  eval_problems: int = 100
  max_budget: int = 16
  temperature: float = 0.8
  batch_rows: int = 1024
  decode_windows: int = 8
  seed: int = 0

  def validate(self, key: str = 'revisions') -> 'RevisionConfig':
    """Raises ConfigError naming `key.field` for the first impossible value; returns self."""
    ints = ('train_problems', 'samples_per_problem', 'sample_batch', 'max_incorrect',
            'max_attempts', 'context_len', 'max_new_tokens', 'steps', 'batch_size',
            'warmup_steps', 'eval_every', 'patience', 'orm_steps', 'orm_batch_size',
            'orm_sequences_per_problem', 'score_batch', 'eval_problems', 'max_budget',
            'batch_rows', 'decode_windows', 'seed')
    for f in ints:
      v = getattr(self, f)
      if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
        raise ConfigError(f'{key}.{f} must be an integer, got {v!r}.')
    for f in ('train_problems', 'samples_per_problem', 'sample_batch', 'context_len', 'steps',
              'batch_size', 'eval_every', 'orm_batch_size', 'orm_sequences_per_problem',
              'score_batch', 'eval_problems', 'max_budget', 'batch_rows', 'decode_windows'):
      if getattr(self, f) < 1:
        raise ConfigError(f'{key}.{f} must be >= 1, got {getattr(self, f)}.')
    for f in ('max_incorrect', 'max_attempts', 'max_new_tokens', 'warmup_steps', 'patience',
              'orm_steps', 'seed'):
      if getattr(self, f) < 0:
        raise ConfigError(f'{key}.{f} must be >= 0, got {getattr(self, f)}.')
    if self.max_budget & (self.max_budget - 1):
      raise ConfigError(f'{key}.max_budget must be a power of 2 (budgets 1, 2, 4, .. are '
                        f'swept), got {self.max_budget}.')
    if not 0 < self.val_fraction < 1:
      raise ConfigError(f'{key}.val_fraction must lie in (0, 1), got {self.val_fraction}.')
    for f in ('sample_temperature', 'temperature'):
      v = getattr(self, f)
      if not np.isfinite(v) or v < 0:
        raise ConfigError(f'{key}.{f} must be finite and >= 0, got {v}.')
    for f in ('lr', 'orm_lr'):
      if not getattr(self, f) > 0:
        raise ConfigError(f'{key}.{f} must be positive, got {getattr(self, f)}.')
    if not 0 <= self.min_lr_ratio <= 1:
      raise ConfigError(f'{key}.min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}.')
    if self.weight_decay < 0:
      raise ConfigError(f'{key}.weight_decay must be >= 0, got {self.weight_decay}.')
    if self.select not in SELECT_RULES:
      raise ConfigError(f'{key}.select must be one of {SELECT_RULES}, got {self.select!r}.')
    if self.eval_split not in ('train', 'validation', 'test'):
      raise ConfigError(f"{key}.eval_split must be 'train', 'validation' or 'test', got "
                        f'{self.eval_split!r}.')
    return self

  def new_tokens(self, task) -> int:
    """Tokens allowed per attempt, EOS included."""
    if self.max_new_tokens:
      return int(self.max_new_tokens)
    return int(task.max_text_len - task.max_prompt_len)

  def check_fits(self, task, key: str = 'revisions') -> None:
    """The bare prompt plus one attempt must fit context_len (else no context ever fits)."""
    need = task.max_prompt_len + self.new_tokens(task)
    if need > self.context_len:
      raise ConfigError(f'{key}.context_len={self.context_len} cannot hold the longest prompt '
                        f'and one attempt ({need} tokens); raise it (4 earlier attempts need '
                        f'about {need + 4 * (self.new_tokens(task) + 1)}).')

  def model_config(self, policy_cfg: ModelConfig) -> ModelConfig:
    return dataclasses.replace(policy_cfg, max_len=int(self.context_len))


def split_problems(problem_ids: Sequence[str], val_fraction: float, seed: int):
  """(train ids, validation ids): a seeded permutation of the distinct ids, sorted within
  each part; at least one problem goes to each part when there are two or more."""
  ids = np.asarray(sorted(set(map(str, problem_ids))), dtype=object)
  perm = np.random.default_rng([int(seed), 0x5e1]).permutation(len(ids))
  n_val = int(round(val_fraction * len(ids)))
  n_val = min(max(n_val, 1), len(ids) - 1) if len(ids) > 1 else 0
  val = sorted(ids[perm[:n_val]].tolist())
  tr = sorted(ids[perm[n_val:]].tolist())
  return tr, val


# ---- validation loss --------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=('config',))
def _ce_sums(params, batch, *, config: ModelConfig):
  """(sum of masked next-token cross-entropy in nats, number of masked targets)."""
  tokens, seg = batch['tokens'], batch['segments']
  seg_in = seg[:, :-1]
  visible = (seg_in[:, :, None] == seg_in[:, None, :]) & (seg_in[:, None, :] > 0)
  logits, _ = apply(params, tokens[:, :-1], batch['positions'][:, :-1], None, visible,
                    config=config)
  ce = pretrain_lib.token_cross_entropy(logits, tokens[:, 1:])
  mask = batch['loss_mask'][:, 1:]
  return (ce * mask).sum(), mask.sum()


def masked_loss(params, data: dict[str, np.ndarray], config: ModelConfig,
                batch_size: int) -> float:
  """Mean next-token loss (nats per target token) over all rows of `data`, in fixed-size
  batches (the last padded with rows whose mask is 0, so one compile serves every batch)."""
  n = len(data['tokens'])
  total, count = 0.0, 0.0
  for start in range(0, n, batch_size):
    idx = np.arange(start, start + batch_size)
    real = idx < n
    batch = {k: v[np.minimum(idx, n - 1)] for k, v in data.items()}
    batch['loss_mask'] = batch['loss_mask'] * real[:, None]
    s, c = jax.device_get(_ce_sums(params, batch, config=config))
    total, count = total + float(s), count + float(c)
  return total / max(count, 1.0)


def choose_step(curve: Sequence[tuple[int, float]], select: str, patience: int) -> int:
  """The checkpoint step picked from a validation curve [(step, loss)] (steps ascending)."""
  if not curve:
    raise ValueError('empty validation curve.')
  losses = np.asarray([l for _, l in curve], np.float64)
  best = int(np.argmin(np.where(np.isfinite(losses), losses, np.inf)))
  if select == 'min_val':
    return int(curve[best][0])
  if select == 'after_min':
    return int(curve[min(best + patience, len(curve) - 1)][0])
  raise ValueError(f'select must be one of {SELECT_RULES}, got {select!r}.')


def _train_config(rcfg: RevisionConfig, steps: int, batch_size: int, lr: float,
                  eval_every: int) -> TrainConfig:
  return TrainConfig(
      steps=(steps,), batch_size=batch_size, seq_len=rcfg.context_len - 1, lr=lr,
      warmup_steps=min(rcfg.warmup_steps, max(steps - 1, 0)), min_lr_ratio=rcfg.min_lr_ratio,
      weight_decay=rcfg.weight_decay, log_every=max(1, min(eval_every, 50)),
      ckpt_every=eval_every, max_to_keep=steps // eval_every + 2).validate('revisions')


def _pad_rows(data: dict[str, np.ndarray], at_least: int) -> dict[str, np.ndarray]:
  """Repeat rows (with zero loss mask) so one batch can be drawn from a tiny dataset."""
  n = len(data['tokens'])
  if n >= at_least:
    return data
  idx = np.arange(at_least) % n
  out = {k: v[idx] for k, v in data.items()}
  out['loss_mask'] = out['loss_mask'] * (np.arange(at_least) < n)[:, None]
  return out


def finetune_revision_model(policy_params, policy_cfg: ModelConfig, trajectories: pd.DataFrame,
                            prompts: dict[str, str], tokenizer: Tokenizer,
                            rcfg: RevisionConfig, workdir, mesh, seed: int,
                            progress: bool = False) -> tuple[Any, dict]:
  """Fine-tunes the revision model and returns (chosen params, record).

  Trajectories are split by problem (`split_problems`); the validation curve and the chosen
  step are written to workdir/val_curve.json, checkpoints to workdir/ckpt. Resumable: a
  finished curve file means only the chosen checkpoint is loaded.
  record: {'curve': [[step, val_loss]], 'chosen_step', 'select', 'patience',
           'train_examples', 'val_examples', 'train_rows', 'train_tokens', 'train_flops'}.
  """
  workdir = Path(workdir)
  cfg = rcfg.model_config(policy_cfg)
  abstract = jax.eval_shape(lambda: policy_params)
  curve_path = workdir / 'val_curve.json'
  if curve_path.exists():
    rec = io.read_json(curve_path)
    if rec['chosen_step'] == 0:
      return policy_params, rec
    params, _ = load_params(workdir, abstract, step=rec['chosen_step'])
    return params, rec
  tr_ids, val_ids = split_problems(trajectories['problem_id'], rcfg.val_fraction, seed)
  tr = trajectories[trajectories['problem_id'].isin(tr_ids)]
  val = trajectories[trajectories['problem_id'].isin(val_ids)]
  if tr.empty:
    # Nothing to learn from (the policy solved no training problem): the chains then run the
    # base policy itself, and the record says so, rather than failing a long run here.
    rec = {'chosen_step': 0, 'curve': [], 'select': rcfg.select, 'patience': rcfg.patience,
           'skipped': 'no revision trajectories: the policy solved none of the training '
                      'problems; raise revisions.train_problems or samples_per_problem'}
    io.write_json(curve_path, rec)
    return policy_params, rec
  seq_len = rcfg.context_len - 1
  tr_data = encode_revision_examples(tr, prompts, tokenizer, seq_len, rcfg.max_attempts)
  tr_data = _pad_rows(tr_data, rcfg.batch_size)
  val_data = (encode_revision_examples(val, prompts, tokenizer, seq_len, rcfg.max_attempts)
              if not val.empty else None)
  tcfg = _train_config(rcfg, rcfg.steps, rcfg.batch_size, rcfg.lr, rcfg.eval_every)
  tokens_per_step = rcfg.batch_size * seq_len
  result = train(
      loss_fn=functools.partial(pretrain_lib.lm_loss, config=cfg),
      init_fn=lambda: jax.tree.map(jnp.asarray, policy_params),
      batch_fn=pretrain_lib.epoch_batches(tr_data, rcfg.batch_size, seed), cfg=tcfg,
      total_steps=rcfg.steps, mesh=mesh, workdir=workdir, tokens_per_step=tokens_per_step,
      flops_per_token=cfg.train_flops_per_token(seq_len), seed=seed,
      metadata={'non_embedding_params': cfg.param_counts()['non_embedding'],
                'kind': 'revision_model'},
      progress=progress, desc='revision model')
  steps = sorted({*range(rcfg.eval_every, rcfg.steps + 1, rcfg.eval_every), rcfg.steps})
  curve: list[tuple[int, float]] = []
  if val_data is not None:
    curve.append((0, masked_loss(policy_params, val_data, cfg, rcfg.batch_size)))
    for s in steps:
      params = (result.params if s == result.step else load_params(workdir, abstract, step=s)[0])
      curve.append((s, masked_loss(params, val_data, cfg, rcfg.batch_size)))
    chosen = choose_step(curve, rcfg.select, rcfg.patience)
  else:
    chosen = rcfg.steps   # no held-out problem: nothing to choose by
  rec = {'curve': [[int(s), float(l)] for s, l in curve], 'chosen_step': int(chosen),
         'select': rcfg.select, 'patience': rcfg.patience, 'train_examples': int(len(tr)),
         'val_examples': int(len(val)), 'train_rows': int(len(tr_data['tokens'])),
         'train_tokens': int(rcfg.steps * tokens_per_step),
         'train_flops': float(result.metadata['train_flops_analytic'])}
  io.write_json(curve_path, rec)
  if chosen == 0:
    return policy_params, rec
  if chosen == result.step:
    return result.params, rec
  return load_params(workdir, abstract, step=chosen)[0], rec


# ---- the revision-aware ORM -------------------------------------------------------------------
def init_orm(lm_params, cfg: ModelConfig) -> dict:
  """ORM parameters: the language model's plus a zero-initialised scalar head (score 0.5)."""
  return {'lm': lm_params, 'head': {'w': jnp.zeros((cfg.d_model,), jnp.float32),
                                    'b': jnp.zeros((), jnp.float32)}}


def orm_logits(params, tokens_BxT, positions_BxT, visible, *, config: ModelConfig):
  """[B, T] float32 logits of P(correct) read at every position."""
  h_BxTxD, _ = apply_features(params['lm'], tokens_BxT, positions_BxT, None, visible,
                              config=config)
  return h_BxTxD.astype(jnp.float32) @ params['head']['w'] + params['head']['b']


def orm_loss(params, batch, rng, *, config: ModelConfig):
  """Binary cross-entropy at each example's EOS (batch['score_mask']) against batch['label']."""
  del rng
  seg = batch['segments']
  visible = (seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] > 0)
  logits_BxT = orm_logits(params, batch['tokens'], batch['positions'], visible, config=config)
  mask = batch['score_mask']
  bce = optax.sigmoid_binary_cross_entropy(logits_BxT, batch['label'])
  denom = jnp.maximum(mask.sum(), 1.0)
  acc = (((logits_BxT > 0) == (batch['label'] > 0.5)) * mask).sum() / denom
  return (bce * mask).sum() / denom, {'orm_accuracy': acc}


def orm_examples(samples: pd.DataFrame, prompts: dict[str, str], n_per_problem: int,
                 max_attempts: int, seed: int):
  """(prompts, previous attempts, finals, labels [n] float32) for the revision-aware ORM.

  Per training problem, `n_per_problem` random sequences of distinct samples: j ~
  Uniform{0..max_attempts} earlier attempts (capped by availability) then a final attempt,
  labelled with the final attempt's correctness. Mixing correct and incorrect attempts in the
  context teaches the ORM to judge the final attempt itself, including a correct answer
  revised into an incorrect one.
  """
  out_prompts, previous, finals, labels = [], [], [], []
  df = samples.sort_values(['problem_id', 'sample_index'], kind='stable')
  for pid, group in df.groupby('problem_id', sort=True):
    texts = [str(t) for t in group['text']]
    correct = group['correct'].astype(bool).to_numpy()
    rng = problem_rng(seed, pid, salt=1)
    for _ in range(n_per_problem):
      j = min(int(rng.integers(0, max_attempts + 1)), len(texts) - 1)
      pick = rng.choice(len(texts), size=j + 1, replace=False)
      out_prompts.append(prompts[str(pid)])
      previous.append([texts[i] for i in pick[:-1]])
      finals.append(texts[pick[-1]])
      labels.append(float(correct[pick[-1]]))
  return out_prompts, previous, finals, np.asarray(labels, np.float32)


def encode_orm_examples(prompts: Sequence[str], previous: Sequence[Sequence[str]],
                        finals: Sequence[str], labels: np.ndarray, tokenizer: Tokenizer,
                        seq_len: int, max_attempts: int = MAX_ATTEMPTS) -> dict[str, np.ndarray]:
  """Packed ORM rows: `pretrain.encode_examples` layout plus 'score_mask' (1 at each
  example's EOS) and 'label' (its correctness there), float32 [R, seq_len + 1]. Contexts
  too long for a row lose their oldest attempts (the `fit_context` rule)."""
  contexts = [fit_context(p, list(prev), tokenizer, seq_len + 1,
                          len(tokenizer.encode(fin)) + 1, max_attempts)[0]
              for p, prev, fin in zip(prompts, previous, finals, strict=True)]
  data = pretrain_lib.encode_examples(contexts, list(finals), tokenizer, seq_len)
  seg = data['segments']
  nxt = np.concatenate([seg[:, 1:], np.zeros_like(seg[:, :1])], axis=1)
  ends = (seg > 0) & (nxt != seg)
  # Packing keeps examples in order, so the j-th end (row-major) is example j's EOS.
  label = np.zeros(seg.shape, np.float32)
  label[ends] = labels
  data['score_mask'] = ends.astype(np.float32)
  data['label'] = label
  return data


def train_orm(policy_params, policy_cfg: ModelConfig, samples: pd.DataFrame,
              prompts: dict[str, str], tokenizer: Tokenizer, rcfg: RevisionConfig, workdir,
              mesh, seed: int, progress: bool = False) -> tuple[Any, dict]:
  """Trains the revision-aware ORM (from the base policy) on `orm_examples`; resumable.
  Returns (ORM params, record with 'examples', 'positive_fraction', 'final_loss')."""
  workdir = Path(workdir)
  cfg = rcfg.model_config(policy_cfg)
  init = lambda: init_orm(jax.tree.map(jnp.asarray, policy_params), cfg)
  done = workdir / 'orm.json'
  if done.exists():
    params, _ = load_params(workdir, jax.eval_shape(init))
    return params, io.read_json(done)
  ex_prompts, previous, finals, labels = orm_examples(
      samples, prompts, rcfg.orm_sequences_per_problem, rcfg.max_attempts, seed)
  seq_len = rcfg.context_len - 1
  data = encode_orm_examples(ex_prompts, previous, finals, labels, tokenizer, seq_len,
                             rcfg.max_attempts)
  n = len(data['tokens'])
  if n < rcfg.orm_batch_size:
    idx = np.arange(rcfg.orm_batch_size) % n
    keep = (np.arange(rcfg.orm_batch_size) < n)[:, None]
    data = {k: v[idx] for k, v in data.items()}
    data['score_mask'] = data['score_mask'] * keep
  every = max(1, rcfg.orm_steps)
  tcfg = _train_config(rcfg, rcfg.orm_steps, rcfg.orm_batch_size, rcfg.orm_lr, every)
  result = train(
      loss_fn=functools.partial(orm_loss, config=cfg), init_fn=init,
      batch_fn=pretrain_lib.epoch_batches(data, rcfg.orm_batch_size, seed), cfg=tcfg,
      total_steps=rcfg.orm_steps, mesh=mesh, workdir=workdir,
      tokens_per_step=rcfg.orm_batch_size * seq_len,
      flops_per_token=cfg.train_flops_per_token(seq_len), seed=seed,
      metadata={'non_embedding_params': cfg.param_counts()['non_embedding'], 'kind': 'orm'},
      progress=progress, desc='revision ORM')
  rec = {'examples': int(len(labels)), 'positive_fraction': float(labels.mean()),
         'final_loss': float(result.metrics[-1]['loss']) if result.metrics else None,
         'train_flops': float(result.metadata['train_flops_analytic'])}
  io.write_json(done, rec)
  return result.params, rec


@functools.partial(jax.jit, static_argnames=('config',))
def _score_rows(params, tokens_BxT, lengths_B, *, config: ModelConfig):
  b, t = tokens_BxT.shape
  positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
  valid = jnp.arange(t)[None, :] < lengths_B[:, None]
  visible = jnp.tril(jnp.ones((t, t), bool))[None] & valid[:, None, :]
  logits_BxT = orm_logits(params, tokens_BxT, positions, visible, config=config)
  last = jnp.take_along_axis(logits_BxT, (lengths_B - 1)[:, None], axis=1)[:, 0]
  return jax.nn.sigmoid(last)


def orm_score(params, cfg: ModelConfig, prompts: Sequence[str],
              previous: Sequence[Sequence[str]], finals: Sequence[str], tokenizer: Tokenizer,
              *, max_attempts: int = MAX_ATTEMPTS, batch_size: int = 256) -> np.ndarray:
  """[n] float64 P(correct) of each final attempt given its prompt and earlier attempts.

  Inputs are BOS + fit_context(prompt, previous) + final + EOS (cfg.max_len tokens at most;
  a final attempt too long for that is cut, keeping its start). Batches are padded to
  `batch_size` rows and a length bucket, so few shapes compile.
  """
  n = len(finals)
  seqs = []
  for p, prev, fin in zip(prompts, previous, finals, strict=True):
    fin_ids = tokenizer.encode(fin)[:cfg.max_len - 2 - len(tokenizer.encode(p))]
    ctx, _ = fit_context(p, list(prev), tokenizer, cfg.max_len, len(fin_ids) + 1, max_attempts)
    seqs.append([tokenizer.bos_id] + tokenizer.encode(ctx) + fin_ids + [tokenizer.eos_id])
  out = np.zeros((n,), np.float64)
  order = np.argsort([len(s) for s in seqs], kind='stable')   # similar lengths share a batch
  for start in range(0, n, batch_size):
    idx = order[start:start + batch_size]
    width = min(bucket_length(max(len(seqs[i]) for i in idx)), cfg.max_len)
    tokens = np.full((batch_size, width), tokenizer.pad_id, np.int32)
    lengths = np.ones((batch_size,), np.int32)
    for r, i in enumerate(idx):
      tokens[r, :len(seqs[i])] = seqs[i]
      lengths[r] = len(seqs[i])
    scores = np.asarray(jax.device_get(_score_rows(params, tokens, lengths, config=cfg)))
    out[idx] = scores[:len(idx)]
  return out
