"""PRM / ORM training through the shared train loop, early stopping, and quality metrics.

  run_prm_pipeline(policy_params, policy_cfg, task, bank_df, vcfg, workdir, mesh, key)
    workdir/labels/     MC-rollout label shards (labels.py; PRM only)
    workdir/train/      the shared loop's checkpoints and metrics.jsonl
    workdir/best/       the best held-out checkpoint: items 'params' and 'meta' (orbax)
    workdir/evals.json  held-out loss per evaluation [{step, heldout_loss}]
    workdir/bank_scores.parquet    step scores (and last/min/prod) of every evaluation-bank sample
    workdir/verifier_summary.json  the returned metrics

Early stopping: one call of the shared loop, whose checkpoint hook runs every `eval_every`
steps; there the held-out loss (soft BCE on the 10% of training *problems* held out) is
recorded, and the parameters are saved to best/
when they improve on every earlier evaluation. A rerun resumes from the loop's last
checkpoint and does not evaluate a step twice; `patience` evaluations without improvement
stop training.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pandas as pd

from ttc_jax import io
from ttc_jax.analysis import estimators
from ttc_jax.data.problems import ProblemSet
from ttc_jax.model.config import ConfigError, ModelConfig
from ttc_jax.train.loop import TrainConfig, train
from ttc_jax.train.pretrain import epoch_batches
from ttc_jax.verify import aggregate, labels as labels_lib, prm


@dataclasses.dataclass(frozen=True)
class VerifierConfig:
  """Verifier labels, training and evaluation (paper values by default; units in names).

  kind: 'prm' (a score at every step end, MC-rollout labels) or 'orm' (final token only,
    labelled by the bank's correctness; no rollouts).
  policy: family member name the verifier is initialised from and whose bank it labels.
  checkpoint: override of the policy checkpoint workdir ('' = the run's default for policy).
  samples_per_problem: K solutions per training problem; rollouts: R per step prefix.
  n_problems: training problems to label (0 = every problem in the bank).
  rollout_temperature: sampling temperature of the rollouts (the bank's, normally).
  rollout_rows: sampler rows per rollout call; shard_problems: problems per label shard.
  label: 'soft' (fraction of correct rollouts) or 'hard' (any correct) training targets.
  lr, batch_size (solutions), steps, warmup_steps, weight_decay, b1, b2, clip_norm: AdamW.
  holdout_fraction: training problems held out for early stopping and quality metrics.
  eval_every: steps between held-out evaluations; patience: stop after this many
    evaluations without improvement (0 = never stop early, still keep the best).
  ece_bins: bins of the expected calibration error. seed: data order and held-out split.
  """
  kind: str = 'prm'
  policy: str = ''
  checkpoint: str = ''
  samples_per_problem: int = 16
  rollouts: int = 16
  n_problems: int = 0
  rollout_temperature: float = 1.0
  rollout_rows: int = 1024
  shard_problems: int = 64
  label: str = 'soft'
  lr: float = 3e-5
  batch_size: int = 128
  steps: int = 2000
  warmup_steps: int = 50
  weight_decay: float = 0.0
  b1: float = 0.9
  b2: float = 0.95
  clip_norm: float = 1.0
  holdout_fraction: float = 0.1
  eval_every: int = 200
  patience: int = 0
  ece_bins: int = 10
  seed: int = 0

  def validate(self, key: str = 'verifier') -> 'VerifierConfig':
    """Raises ConfigError naming `key.field` for the first impossible value; returns self."""
    if self.kind not in ('prm', 'orm'):
      raise ConfigError(f"{key}.kind must be 'prm' or 'orm', got {self.kind!r}.")
    if self.label not in ('soft', 'hard'):
      raise ConfigError(f"{key}.label must be 'soft' or 'hard', got {self.label!r}.")
    for f in ('samples_per_problem', 'rollouts', 'rollout_rows', 'shard_problems',
              'batch_size', 'steps', 'eval_every', 'ece_bins'):
      v = getattr(self, f)
      if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0:
        raise ConfigError(f'{key}.{f} must be a positive integer, got {v!r}.')
    for f in ('n_problems', 'warmup_steps', 'patience', 'seed'):
      v = getattr(self, f)
      if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
        raise ConfigError(f'{key}.{f} must be an integer >= 0, got {v!r}.')
    if not (self.lr > 0 and np.isfinite(self.lr)):
      raise ConfigError(f'{key}.lr must be positive, got {self.lr!r} (paper: 3e-5; the CPU '
                        'quickstart needs about 1e-3).')
    if self.rollout_temperature < 0:
      raise ConfigError(f'{key}.rollout_temperature must be >= 0, got '
                        f'{self.rollout_temperature}.')
    if not 0 < self.holdout_fraction < 1:
      raise ConfigError(f'{key}.holdout_fraction must lie in (0, 1), got '
                        f'{self.holdout_fraction} (paper: 0.1).')
    if not (0 <= self.b1 < 1 and 0 <= self.b2 < 1):
      raise ConfigError(f'{key}.b1 and {key}.b2 must lie in [0, 1).')
    if self.weight_decay < 0 or self.clip_norm <= 0:
      raise ConfigError(f'{key}.weight_decay must be >= 0 and {key}.clip_norm > 0.')
    return self

  def train_config(self, seq_len: int) -> TrainConfig:
    """The shared loop's config: a checkpoint (and held-out evaluation) every eval_every
    steps; constant lr after warmup (min_lr_ratio 1), so an early-stopped run is a prefix of
    the full one."""
    return TrainConfig(steps=(self.steps,), batch_size=self.batch_size, seq_len=seq_len,
                       lr=self.lr, warmup_steps=self.warmup_steps, min_lr_ratio=1.0,
                       weight_decay=self.weight_decay, b1=self.b1, b2=self.b2,
                       clip_norm=self.clip_norm, log_every=min(self.eval_every, 20),
                       ckpt_every=self.eval_every, max_to_keep=1).validate('verifier')


# ---- data -------------------------------------------------------------------------------------
def split_problems(problem_ids, fraction: float, seed: int) -> tuple[list[str], list[str]]:
  """(train ids, held-out ids): a seeded `fraction` of the problems (at least 1, at most all
  but 1) is held out; every sample of a problem lands on the same side."""
  ids = sorted(str(p) for p in dict.fromkeys(problem_ids))
  if len(ids) < 2:
    raise ValueError(f'need at least 2 problems to hold some out, got {len(ids)}.')
  n_out = min(max(1, int(round(fraction * len(ids)))), len(ids) - 1)
  perm = np.random.default_rng([seed, 0x5e1d]).permutation(len(ids))
  out = {ids[i] for i in perm[:n_out]}
  return [p for p in ids if p not in out], [p for p in ids if p in out]


def build_examples(labels_df: pd.DataFrame, bank_df: pd.DataFrame, problems: ProblemSet, *,
                   pad_id: int, kind: str = 'prm', target: str = 'soft',
                   width: int | None = None, max_len: int | None = None) -> dict[str, np.ndarray]:
  """One training example per labelled solution.

  Returns {'tokens' int32 [E, T], 'targets' float32 [E, T] (the label at each step-end token),
  'weights' float32 [E, T] (1 where a label sits), 'hard' bool [E, T], 'prompt_lengths',
  'problem_id', 'sample_index' [E] (for joins)}; only 'tokens', 'targets' and 'weights' go to
  the train loop. kind 'orm' keeps only the final step's label.
  """
  df = labels_df if kind == 'prm' else labels_df[labels_df['final']]
  keys = df[['problem_id', 'sample_index']].drop_duplicates()
  sols = keys.merge(bank_df, on=['problem_id', 'sample_index'], how='left', validate='1:1')
  if sols['tokens'].isna().any():
    raise ValueError('some labelled solutions are missing from the bank (problem_id, '
                     'sample_index); pass the bank the labels were made from.')
  tokens, _, _, plen_E = prm.encode_solutions(sols, problems, pad_id=pad_id, width=width,
                                              max_len=max_len)
  row = {(p, s): e for e, (p, s) in enumerate(zip(sols['problem_id'], sols['sample_index']))}
  e_L = np.asarray([row[k] for k in zip(df['problem_id'], df['sample_index'])], np.int64)
  t_L = plen_E[e_L] + df['step_end'].to_numpy(np.int64)
  targets = np.zeros(tokens.shape, np.float32)
  weights = np.zeros(tokens.shape, np.float32)
  hard = np.zeros(tokens.shape, bool)
  y = df['soft_label' if target == 'soft' else 'hard_label'].to_numpy(np.float32)
  targets[e_L, t_L] = y
  weights[e_L, t_L] = 1.0
  hard[e_L, t_L] = df['hard_label'].to_numpy(bool)
  return {'tokens': tokens, 'targets': targets, 'weights': weights, 'hard': hard,
          'prompt_lengths': plen_E, 'problem_id': sols['problem_id'].to_numpy(str),
          'sample_index': sols['sample_index'].to_numpy(np.int64)}


# ---- loss and evaluation ----------------------------------------------------------------------
def verifier_loss(params, batch, rng, *, config: ModelConfig):
  """Soft binary cross-entropy at the labelled tokens, averaged over labels.
  batch: 'tokens' int32 [B, T], 'targets' / 'weights' float32 [B, T]."""
  del rng
  logits_BxT, _ = prm.token_logits(params, batch['tokens'], config=config)
  w_BxT = batch['weights']
  bce_BxT = optax.sigmoid_binary_cross_entropy(logits_BxT, batch['targets'])
  denom = jnp.maximum(w_BxT.sum(), 1.0)
  pred_mean = (jax.nn.sigmoid(logits_BxT) * w_BxT).sum() / denom
  return (bce_BxT * w_BxT).sum() / denom, {'pred_mean': pred_mean,
                                           'label_mean': (batch['targets'] * w_BxT).sum() / denom}


@functools.partial(jax.jit, static_argnames=('config',))
def _token_logits(params, tokens_BxT, *, config):
  return prm.token_logits(params, tokens_BxT, config=config)[0]


def predict_logits(params, config: ModelConfig, tokens_ExT: np.ndarray,
                   batch_size: int = 256) -> np.ndarray:
  """Value logits at every token [E, T] float32 (host), in fixed-size batches."""
  fn = functools.partial(_token_logits, config=config)
  out = []
  for i in range(0, len(tokens_ExT), batch_size):
    tok = tokens_ExT[i:i + batch_size]
    real = len(tok)
    if real < batch_size and len(tokens_ExT) > batch_size:
      tok = np.concatenate([tok, np.repeat(tok[:1], batch_size - real, 0)])
    out.append(np.asarray(jax.device_get(fn(params, tok)))[:real])
  return np.concatenate(out) if out else np.zeros(tokens_ExT.shape, np.float32)


def soft_bce(logits, targets) -> np.ndarray:
  """Elementwise -(y log s(z) + (1 - y) log(1 - s(z))), stable in z."""
  z = np.asarray(logits, np.float64)
  y = np.asarray(targets, np.float64)
  return np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))


def heldout_loss(params, config: ModelConfig, ex: dict, batch_size: int = 256) -> float:
  logits = predict_logits(params, config, ex['tokens'], batch_size)
  w = ex['weights']
  return float((soft_bce(logits, ex['targets']) * w).sum() / max(w.sum(), 1.0))


@dataclasses.dataclass
class VerifierTrainResult:
  params: Any
  best_step: int
  best_loss: float
  evals: list[dict]
  metadata: dict


def _best_manager(workdir: Path) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      (workdir / 'best').absolute(),
      options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True),
      item_names=('params', 'meta'))


def train_verifier(base_params, config: ModelConfig, train_ex: dict, heldout_ex: dict,
                   vcfg: VerifierConfig, workdir, mesh, *, metadata: dict | None = None,
                   progress: bool = True) -> VerifierTrainResult:
  """Trains (or resumes) a verifier from `base_params` with held-out early stopping.

  train_ex / heldout_ex: from `build_examples` (same T). metadata: stored with the best
  checkpoint (policy checkpoint, labels file, tokenizer fingerprint, ...).
  Returns the best parameters (lowest held-out loss over evaluations), its step, every
  evaluation, and the metadata saved with it.
  """
  vcfg.validate()
  workdir = Path(workdir)
  seq_len = train_ex['tokens'].shape[1]
  if heldout_ex['tokens'].shape[1] != seq_len:
    raise ValueError('train and held-out examples must share one width T (build them with the '
                     'same `width`).')
  n = len(train_ex['tokens'])
  if n < vcfg.batch_size:
    raise ConfigError(f'verifier.batch_size={vcfg.batch_size} exceeds the {n} training '
                      'solutions; lower it or label more problems.')
  tcfg = vcfg.train_config(seq_len)
  data = {k: train_ex[k] for k in ('tokens', 'targets', 'weights')}
  batch_fn = epoch_batches(data, vcfg.batch_size, vcfg.seed)
  meta = {**(metadata or {}), 'kind': vcfg.kind, 'verifier_config': dataclasses.asdict(vcfg),
          'model_config': dataclasses.asdict(config), 'vocab_size': config.vocab_size,
          'non_embedding_params': config.param_counts()['non_embedding']}
  evals_path = workdir / 'evals.json'
  evals = io.read_json(evals_path, [])
  manager = _best_manager(workdir)

  def stale_after(evals) -> int:
    """Evaluations since the best one (ties keep the earliest)."""
    if not evals:
      return 0
    i_best = min(range(len(evals)), key=lambda i: (evals[i]['heldout_loss'], i))
    return len(evals) - 1 - i_best

  def hook(step: int, params) -> bool:
    """Every eval_every steps (the loop's checkpoints): held-out loss, keep the best,
    stop after `patience` evaluations without improvement."""
    if any(e['step'] == step for e in evals):   # evaluated before a resume
      return bool(vcfg.patience) and stale_after(evals) >= vcfg.patience
    loss = heldout_loss(params, config, heldout_ex)
    if not np.isfinite(loss):
      raise FloatingPointError(f'held-out loss is {loss} at step {step}.')
    if not evals or loss < min(e['heldout_loss'] for e in evals):
      if step not in manager.all_steps():
        manager.save(step, args=ocp.args.Composite(
            params=ocp.args.StandardSave(params),
            meta=ocp.args.JsonSave({**meta, 'step': step, 'heldout_loss': loss})))
        manager.wait_until_finished()
    # Written after the best checkpoint, so a recorded evaluation always has its checkpoint.
    evals.append({'step': step, 'heldout_loss': loss})
    io.write_json(evals_path, evals)
    return bool(vcfg.patience) and stale_after(evals) >= vcfg.patience

  done = (evals and (evals[-1]['step'] >= vcfg.steps or
                     (vcfg.patience and stale_after(evals) >= vcfg.patience)))
  if not done:
    # One train() call (one compile); early stopping and the best checkpoint live in the hook.
    train(loss_fn=lambda p, b, r: verifier_loss(p, b, r, config=config), init_fn=None,
          init_params=prm.init_verifier_params(base_params, config), batch_fn=batch_fn,
          cfg=tcfg, total_steps=vcfg.steps, mesh=mesh, workdir=workdir / 'train',
          tokens_per_step=vcfg.batch_size * seq_len,
          flops_per_token=config.train_flops_per_token(seq_len), seed=vcfg.seed,
          metadata=meta, progress=progress, desc=f'{vcfg.kind} train', hook=hook)
  manager.close()
  params, saved = load_verifier(workdir)
  return VerifierTrainResult(params=params, best_step=int(saved['step']),
                             best_loss=float(saved['heldout_loss']), evals=evals, metadata=saved)


def load_verifier(workdir, policy_cfg: ModelConfig | None = None, tokenizer=None):
  """(params, metadata) of the best checkpoint in `workdir`/best.

  Raises FileNotFoundError naming the path (and `verifier.checkpoint`) if there is none, and
  prm.VerifierMismatch naming both sides if `policy_cfg` / `tokenizer` are given and differ
  from the verifier's.
  """
  path = (Path(workdir) / 'best').absolute()
  step = None
  if path.exists():
    manager = ocp.CheckpointManager(path, item_names=('params', 'meta'))
    step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f'no verifier checkpoint in {path}: train the verifier first, or '
                            'point verifier.checkpoint at a verifier workdir.')
  restored = manager.restore(step, args=ocp.args.Composite(
      params=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
  manager.close()
  meta = dict(restored.meta)
  prm.check_compatible(meta, policy_cfg, tokenizer, where=str(Path(workdir)))
  params = jax.tree.map(jnp.asarray, restored.params)
  return params, meta


def verifier_config_from_meta(meta: dict) -> ModelConfig:
  """The verifier's ModelConfig as saved in its checkpoint metadata."""
  return ModelConfig(**meta['model_config'])


def resolve_policy_checkpoint(vcfg: VerifierConfig, default_dir) -> Path:
  """verifier.checkpoint if set, else `default_dir`; FileNotFoundError naming both if the
  chosen directory holds no checkpoint."""
  path = Path(vcfg.checkpoint or default_dir)
  if not (path / 'ckpt').exists():
    raise FileNotFoundError(
        f'policy checkpoint for verifier.policy={vcfg.policy!r} not found: {path / "ckpt"} '
        f'(verifier.checkpoint={vcfg.checkpoint!r}, default {default_dir}); pretrain that '
        'member first or fix verifier.checkpoint.')
  return path


# ---- quality metrics --------------------------------------------------------------------------
def auroc(scores, labels) -> float:
  """Area under the ROC curve by ranks (Mann-Whitney U, ties count 1/2); NaN if one class."""
  s = np.asarray(scores, np.float64).ravel()
  y = np.asarray(labels, bool).ravel()
  n_pos, n_neg = int(y.sum()), int((~y).sum())
  if n_pos == 0 or n_neg == 0:
    return float('nan')
  _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
  # Average rank of each distinct value (1-based): ties share the mean of their ranks.
  avg_rank = np.cumsum(counts) - (counts - 1) / 2.0
  u = avg_rank[inverse][y].sum() - n_pos * (n_pos + 1) / 2.0
  return float(u / (n_pos * n_neg))


def expected_calibration_error(probs, targets, n_bins: int = 10) -> float:
  """Sum over equal-width bins of (bin share) * |mean prob - mean target|; targets may be
  soft (MC fractions) or 0/1. NaN for no data."""
  p = np.asarray(probs, np.float64).ravel()
  y = np.asarray(targets, np.float64).ravel()
  if p.size == 0:
    return float('nan')
  bins = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
  gap = np.bincount(bins, p - y, minlength=n_bins)
  return float(np.abs(gap).sum() / p.size)


def oracle_step_labels(labels_df: pd.DataFrame, bank_df: pd.DataFrame, problems: ProblemSet,
                       tokenizer, step_correctness) -> np.ndarray:
  """The oracle's verdict on each label row's prefix: [rows] bool, the cumulative correctness
  of the prefix's last line (`step_correctness(question, prefix text)[-1]`)."""
  question = dict(zip(map(str, problems.ids), problems.questions))
  toks = {(p, s): t for p, s, t in zip(bank_df['problem_id'], bank_df['sample_index'],
                                       bank_df['tokens'])}
  out = np.zeros(len(labels_df), bool)
  for i, (p, s, e) in enumerate(zip(labels_df['problem_id'], labels_df['sample_index'],
                                    labels_df['step_end'])):
    text = tokenizer.decode(np.asarray(toks[(p, s)])[:e + 1])
    verdict = step_correctness(question[str(p)], text)
    out[i] = bool(verdict[-1]) if verdict else False
  return out


def step_quality(params, config: ModelConfig, heldout_labels: pd.DataFrame, heldout_ex: dict,
                 *, oracle=None, ece_bins: int = 10) -> dict:
  """Step-level quality of the verifier on held-out problems.

  heldout_ex: build_examples of heldout_labels (with kind 'prm', so every step is present).
  oracle: optional [rows of heldout_labels] bool oracle verdicts (`oracle_step_labels`).
  Returns JSON-able floats: steps, bce_vs_mc, auroc_vs_mc_hard, auroc_vs_mc_majority (soft >=
  0.5), ece_vs_mc_soft, and with an oracle auroc_vs_oracle, ece_vs_oracle; the same AUROC on
  final steps only (outcome prediction).
  """
  logits = predict_logits(params, config, heldout_ex['tokens'])
  row = {(p, s): e for e, (p, s) in enumerate(zip(heldout_ex['problem_id'],
                                                  heldout_ex['sample_index']))}
  e_L = np.asarray([row[k] for k in zip(heldout_labels['problem_id'].astype(str),
                                         heldout_labels['sample_index'])], np.int64)
  t_L = heldout_ex['prompt_lengths'][e_L] + heldout_labels['step_end'].to_numpy(np.int64)
  z = logits[e_L, t_L].astype(np.float64)
  p = 1.0 / (1.0 + np.exp(-z))
  soft = heldout_labels['soft_label'].to_numpy(np.float64)
  hard = heldout_labels['hard_label'].to_numpy(bool)
  final = heldout_labels['final'].to_numpy(bool)
  out = {'steps': int(len(p)), 'pred_mean': float(p.mean()), 'label_mean': float(soft.mean()),
         'bce_vs_mc': float(soft_bce(z, soft).mean()),
         'auroc_vs_mc_hard': auroc(p, hard), 'auroc_vs_mc_majority': auroc(p, soft >= 0.5),
         'ece_vs_mc_soft': expected_calibration_error(p, soft, ece_bins),
         'auroc_final_vs_correct': auroc(p[final], hard[final])}
  if oracle is not None:
    o = np.asarray(oracle, bool)
    out.update(auroc_vs_oracle=auroc(p, o), ece_vs_oracle=expected_calibration_error(
        p, o, ece_bins), oracle_mean=float(o.mean()),
        mc_hard_agrees_with_oracle=float((hard == o).mean()))
  return out


def bank_curves(scores_PxNxS, mask_PxNxS, answers_PxN, correct_PxN, budgets=None) -> dict:
  """Accuracy vs budget from a bank: pass@1, majority and, for each step aggregation
  (last/min/prod), plain and weighted best-of-N. Means over problems, JSON-able lists.
  budgets: default 1, 2, 4, ... up to the bank's N (and N)."""
  a = np.asarray(answers_PxN)
  n = a.shape[1]
  if budgets is None:   # powers of two (the paper's grid) and n itself
    budgets = sorted({1 << i for i in range(n.bit_length()) if 1 << i <= n} | {n})
  budgets = [int(b) for b in budgets]
  curves = {'budgets': budgets}
  for how in ('pass@1', 'majority'):
    curves[how] = estimators.accuracy_curve(a, None, correct_PxN, budgets, how).mean(0).tolist()
  for agg in ('last', 'min', 'prod'):
    s = aggregate.aggregate_steps(scores_PxNxS, mask_PxNxS, agg)
    for how, name in (('best', 'best_of_n'), ('weighted', 'weighted_best_of_n')):
      curves[f'{name}/{agg}'] = estimators.accuracy_curve(a, s, correct_PxN, budgets,
                                                          how).mean(0).tolist()
  return curves


def text_diversity(bank_df: pd.DataFrame, problem_ids) -> dict:
  """Distinct solution texts per problem, among its correct and among its incorrect samples
  (means over the problems that have any), with the mean sample counts beside them.

  Plain best-of-N reads one score per text: when every correct sample of a problem is the
  same text, as on a task with one derivation, that one score competes with the highest of
  many distinct wrong texts, and a noisy verifier loses more often as N grows."""
  df = bank_df[bank_df['problem_id'].astype(str).isin(set(map(str, problem_ids)))]
  by = [df['problem_id'].astype(str).to_numpy(), df['correct'].astype(bool).to_numpy()]
  texts = df['text'].astype(str).groupby(by)
  distinct, count = texts.nunique(), texts.size()
  out = {}
  for flag, name in ((True, 'correct'), (False, 'incorrect')):
    d = distinct[distinct.index.get_level_values(1) == flag]
    c = count[count.index.get_level_values(1) == flag]
    out[f'distinct_{name}_texts'] = float(d.mean()) if len(d) else None
    out[f'{name}_samples'] = float(c.mean()) if len(c) else None
    out[f'problems_with_{name}'] = int(len(d))
  return out


def bank_arrays(bank_df: pd.DataFrame, problem_ids):
  """(answers_PxN int ids, correct_PxN bool) of a bank in problem_ids order."""
  df = prm.bank_matrix(bank_df, problem_ids)
  p = len(problem_ids)
  answers = df['answer'].tolist()
  n = len(answers) // p
  ids = aggregate.answer_ids([answers[i * n:(i + 1) * n] for i in range(p)])
  return ids, df['correct'].to_numpy(bool).reshape(p, n)


# ---- the stage -----------------------------------------------------------------------------------
def _labels_digest(out_dir: Path) -> str:
  h = hashlib.sha1()
  for path in sorted(out_dir.glob('shard-*.parquet')):
    h.update(path.name.encode() + str(path.stat().st_size).encode())
  return h.hexdigest()[:16]


def run_prm_pipeline(policy_params, policy_cfg: ModelConfig, task, bank_df: pd.DataFrame,
                     vcfg: VerifierConfig, workdir, mesh, key, *,
                     problems: ProblemSet | None = None, max_new_tokens: int | None = None,
                     sampling: dict | None = None, policy_checkpoint: str = '',
                     eval_bank_df: pd.DataFrame | None = None,
                     eval_problems: ProblemSet | None = None, progress: bool = True) -> dict:
  """Labels -> training -> metrics for one verifier; every part resumes from `workdir`.

  Args:
    policy_params, policy_cfg: the base policy (labels' rollouts and the initialisation).
    task: has tokenizer, is_correct, problem_set (and optionally step_correctness: oracle).
    bank_df: the policy's sample bank on TRAINING problems (K samples are used per problem).
    vcfg: the verifier config. key: PRNG key for the rollouts.
    problems: ProblemSet holding the bank's problems (default: task.problem_set('train')).
    max_new_tokens: the bank's cap on generated tokens (default: the longest bank sample).
    sampling: extra rollout sampling settings as in the bank (top_p, top_k, max_step_tokens,
      max_steps).
    policy_checkpoint: recorded in the verifier's metadata.
    eval_bank_df, eval_problems: a bank (e.g. test split) for accuracy curves; default: the
      held-out training problems' bank.
  Returns:
    Strict-JSON dict (undefined metrics are None): labels stats (rollout tokens/s), training
    (best step, held-out losses), held-out step quality, curves (mean accuracy per budget);
    also written to workdir/verifier_summary.json.
  """
  vcfg.validate()
  workdir = Path(workdir)
  tok = task.tokenizer
  if tok.vocab_size > policy_cfg.vocab_size:
    raise prm.VerifierMismatch(f'tokenizer has {tok.vocab_size} ids but the policy '
                               f'{policy_cfg.name} has vocab_size={policy_cfg.vocab_size}.')
  problems = problems if problems is not None else task.problem_set('train')
  in_bank = set(bank_df['problem_id'].astype(str))
  keep = np.asarray([str(p) in in_bank for p in problems.ids])
  problems = problems.take(np.flatnonzero(keep))
  if vcfg.n_problems:
    problems = problems.take(np.arange(min(vcfg.n_problems, len(problems))))
  train_ids, held_ids = split_problems(problems.ids, vcfg.holdout_fraction, vcfg.seed)
  max_new = int(max_new_tokens or bank_df['n_generated_tokens'].max())
  label_dir = workdir / 'labels'
  label_stats: dict = {}
  if vcfg.kind == 'prm':
    labels_df, label_stats = labels_lib.mc_labels(
        policy_params, policy_cfg, problems, bank_df, tokenizer=tok, grader=task.is_correct,
        key=key, out_dir=label_dir, samples_per_problem=vcfg.samples_per_problem,
        rollouts=vcfg.rollouts, max_new_tokens=max_new, temperature=vcfg.rollout_temperature,
        rollout_rows=vcfg.rollout_rows, shard_problems=vcfg.shard_problems, mesh=mesh,
        progress=progress, **(sampling or {}))
  else:
    sols = labels_lib.select_solutions(bank_df, list(problems.ids), vcfg.samples_per_problem)
    labels_df = labels_lib.final_step_labels(
        sols, dict(zip(map(str, problems.ids), problems.lengths.tolist())))
  labels_df = labels_df.assign(problem_id=labels_df['problem_id'].astype(str))
  held = set(held_ids)
  is_held = labels_df['problem_id'].isin(held).to_numpy()
  all_ex = build_examples(labels_df, bank_df, problems, pad_id=tok.pad_id, kind=vcfg.kind,
                          target=vcfg.label, max_len=policy_cfg.max_len)
  width = all_ex['tokens'].shape[1]
  train_ex = build_examples(labels_df[~is_held], bank_df, problems, pad_id=tok.pad_id,
                            kind=vcfg.kind, target=vcfg.label, width=width)
  held_ex = build_examples(labels_df[is_held], bank_df, problems, pad_id=tok.pad_id,
                           kind=vcfg.kind, target=vcfg.label, width=width)
  meta = {'policy': vcfg.policy or policy_cfg.name, 'policy_checkpoint': policy_checkpoint,
          'labels': str(label_dir) if vcfg.kind == 'prm' else 'bank:correct',
          'labels_digest': _labels_digest(label_dir) if vcfg.kind == 'prm' else '',
          'tokenizer': prm.tokenizer_fingerprint(tok), 'train_problems': len(train_ids),
          'heldout_problems': len(held_ids)}
  result = train_verifier(policy_params, policy_cfg, train_ex, held_ex, vcfg, workdir, mesh,
                          metadata=meta, progress=progress)
  held_labels = labels_df[is_held].reset_index(drop=True)
  oracle = None
  if hasattr(task, 'step_correctness'):
    oracle = oracle_step_labels(held_labels, bank_df, problems, tok, task.step_correctness)
  quality = step_quality(result.params, policy_cfg, held_labels, held_ex, oracle=oracle,
                         ece_bins=vcfg.ece_bins)
  if eval_bank_df is None:
    eval_bank_df, eval_problems = bank_df, problems.take(
        np.flatnonzero(np.isin(problems.ids.astype(str), held_ids)))
  eval_problems = eval_problems if eval_problems is not None else task.problem_set('test')
  scores, mask, ids = prm.score_bank(result.params, policy_cfg, eval_bank_df, eval_problems,
                                     pad_id=tok.pad_id)
  write_bank_scores(workdir / 'bank_scores.parquet', scores, mask, ids)
  answers, correct = bank_arrays(eval_bank_df, list(ids))
  if vcfg.kind == 'orm':
    # An ORM has one meaningful score, at the final token: every step aggregation reads it.
    last = aggregate.aggregate_steps(scores, mask, 'last')
    scores, mask = last[..., None], np.ones(last.shape + (1,), bool)
  summary = {
      'kind': vcfg.kind, 'policy': meta['policy'], 'labels': label_stats,
      'label_rows': int(len(labels_df)), 'label_soft_mean': float(labels_df['soft_label'].mean()),
      'train': {'best_step': result.best_step, 'best_heldout_loss': result.best_loss,
                'evals': result.evals},
      'heldout_quality': quality,
      'curves': bank_curves(scores, mask, answers, correct),
      'bank_texts': text_diversity(eval_bank_df, list(ids)),
      'checkpoint': str((workdir / 'best').absolute())}
  summary = _finite_or_none(json.loads(json.dumps(summary, default=io._jsonable)))
  io.write_json(workdir / 'verifier_summary.json', summary)
  return summary


def write_bank_scores(path, scores_PxNxS, mask_PxNxS, ids_P) -> None:
  """One row per bank sample: its step scores and their last / min / prod aggregates."""
  p, n, _ = scores_PxNxS.shape
  table = {'problem_id': np.repeat(np.asarray(ids_P).astype(str), n),
           'sample_index': np.tile(np.arange(n, dtype=np.int32), p)}
  for how in ('last', 'min', 'prod'):
    table[how] = (aggregate.aggregate_steps(scores_PxNxS, mask_PxNxS, how).reshape(-1)
                  .astype(np.float32))
  flat_s, flat_m = scores_PxNxS.reshape(p * n, -1), mask_PxNxS.reshape(p * n, -1)
  table['step_scores'] = [s[m].astype(np.float32).tolist() for s, m in zip(flat_s, flat_m)]
  io.write_parquet(path, table)


def _finite_or_none(x):
  """NaN/inf (an AUROC with one class present) -> None, so the summary is strict JSON."""
  if isinstance(x, dict):
    return {k: _finite_or_none(v) for k, v in x.items()}
  if isinstance(x, list):
    return [_finite_or_none(v) for v in x]
  if isinstance(x, float) and not np.isfinite(x):
    return None
  return x
