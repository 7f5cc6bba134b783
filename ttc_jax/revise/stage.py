"""`run_revisions`: the whole revisions stage, data -> fine-tune -> chains -> selection.

Artifacts under `workdir` (each step is skipped when its file is already there, so a cut
run resumes; the two train loops also resume from their checkpoints):

  samples.parquet       the policy's samples on training problems (sample-bank columns)
  trajectories.parquet  revision trajectories (`data.build_trajectories`)
  revision_model/       fine-tune checkpoints, metrics.jsonl, val_curve.json (chosen step)
  orm/                  revision-aware ORM checkpoints and orm.json
  attempts.parquet      every attempt of every chain on the evaluation problems
  scores.parquet        per attempt: aware_score (revision-aware ORM) and plain_score
  metrics.json          what `run_revisions` returns
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import jax
import numpy as np
import pandas as pd

from ttc_jax import io
from ttc_jax.model.config import ModelConfig
from ttc_jax.revise import data as data_lib
from ttc_jax.revise import infer, model, select
from ttc_jax.sample.bank import sample_bank, write_bank

# plain ORM: (prompts, final attempts) -> [n] scores, higher = more likely correct.
PlainScorer = Callable[[Sequence[str], Sequence[str]], np.ndarray]


def _seed(key, salt: int) -> int:
  data = np.asarray(jax.random.key_data(key)).ravel().tolist()
  return int(np.random.default_rng([*map(int, data), salt]).integers(2**31 - 1))


def _key(key):
  if not jax.dtypes.issubdtype(getattr(key, 'dtype', np.uint32), jax.dtypes.prng_key):
    key = jax.random.wrap_key_data(np.asarray(key, np.uint32))
  return key


def run_revisions(policy_params, policy_cfg: ModelConfig, task, rcfg: model.RevisionConfig,
                  workdir, mesh, key, orm_scorer: PlainScorer | None = None, *,
                  samples: pd.DataFrame | None = None, progress: bool = False) -> dict:
  """Runs (or resumes) the revisions stage and returns its JSON-able metrics.

  policy_params / policy_cfg: the base policy (the revision model and the ORM start there).
  task: an `ArithTask`-like object (problems, problem_set, tokenizer, is_correct,
    parse_answer, max_text_len, max_prompt_len).
  key: the stage's PRNG key (every seed and sampling key derives from it and rcfg.seed).
  orm_scorer: optional plain (context-free) ORM for 'orm_best_of_n' (e.g. the PRM's final
    score); without it, the revision-aware ORM scores each attempt with an empty context.
  samples: optional precomputed sample table of training problems (e.g. from the sample
    bank), used instead of sampling; it needs problem_id, sample_index, text, correct.
  """
  rcfg = rcfg.validate()
  rcfg.check_fits(task)
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  key = jax.random.fold_in(_key(key), rcfg.seed)
  tok = task.tokenizer
  new_tokens = rcfg.new_tokens(task)
  rev_cfg = rcfg.model_config(policy_cfg)
  record: dict = {}

  # 1. Samples of the policy on training problems.
  train_problems = task.problems('train', rcfg.train_problems)
  prompts = {p.id: p.prompt for p in train_problems}
  path = workdir / 'samples.parquet'
  if samples is None and path.exists():
    samples = io.read_parquet(path)
  elif samples is None:
    ps = task.problem_set('train', rcfg.train_problems)
    samples, stats = sample_bank(
        policy_params, policy_cfg, ps, rcfg.samples_per_problem, jax.random.fold_in(key, 0),
        tok, task.is_correct, task.parse_answer, max_new_tokens=new_tokens,
        temperature=rcfg.sample_temperature, batch_size=rcfg.sample_batch, mesh=mesh,
        progress=progress)
    write_bank(samples, path)
    record['sampling'] = stats
  unknown = set(map(str, samples['problem_id'])) - set(prompts)
  if unknown:
    raise ValueError(f'the sample table has {len(unknown)} problem ids that are not among the '
                     f'first revisions.train_problems={rcfg.train_problems} training problems '
                     f'(e.g. {sorted(unknown)[0]!r}).')
  record['sample_accuracy'] = float(samples['correct'].mean())

  # 2. Trajectories.
  path = workdir / 'trajectories.parquet'
  if path.exists():
    traj = data_lib.read_trajectories(path)
  else:
    traj = data_lib.build_trajectories(samples, _seed(key, 1), rcfg.max_incorrect)
    data_lib.write_trajectories(traj, path)
  record['trajectories'] = {'count': int(len(traj)),
                            'k_histogram': np.bincount(traj['k'].to_numpy(np.int64),
                                                       minlength=rcfg.max_incorrect + 1).tolist()}

  # 3. The revision model.
  rev_params, record['finetune'] = model.finetune_revision_model(
      policy_params, policy_cfg, traj, prompts, tok, rcfg, workdir / 'revision_model', mesh,
      _seed(key, 2), progress=progress)

  # 4. The revision-aware ORM.
  orm_params = None
  if rcfg.orm_steps:
    orm_params, record['orm'] = model.train_orm(
        policy_params, policy_cfg, samples, prompts, tok, rcfg, workdir / 'orm', mesh,
        _seed(key, 3), progress=progress)

  # 5. Chains on the evaluation problems.
  eval_problems = task.problems(rcfg.eval_split, rcfg.eval_problems)
  ids = [p.id for p in eval_problems]
  path = workdir / 'attempts.parquet'
  if path.exists():
    attempts = io.read_parquet(path)
  else:
    attempts = infer.run_chains(
        rev_params, rev_cfg, ids, [p.prompt for p in eval_problems],
        [p.answer for p in eval_problems], tok, task.is_correct, task.parse_answer,
        jax.random.fold_in(key, 4), max_budget=rcfg.max_budget, max_new_tokens=new_tokens,
        temperature=rcfg.temperature, max_attempts=rcfg.max_attempts,
        batch_rows=rcfg.batch_rows, mesh=mesh, n_windows=rcfg.decode_windows,
        progress=progress)
    infer.write_attempts(attempts, path)

  # 6. Scores.
  aware = plain = None
  path = workdir / 'scores.parquet'
  if path.exists():
    scores = io.read_parquet(path)
    aware = scores['aware_score'].to_numpy() if 'aware_score' in scores else None
    plain = scores['plain_score'].to_numpy() if 'plain_score' in scores else None
  else:
    eval_prompt = {p.id: p.prompt for p in eval_problems}
    row_prompts = [eval_prompt[str(p)] for p in attempts['problem_id']]
    finals = attempts['text'].astype(str).tolist()
    if orm_params is not None:
      aware = model.orm_score(orm_params, rev_cfg, row_prompts,
                              infer.previous_attempts(attempts, rcfg.max_attempts), finals,
                              tok, max_attempts=rcfg.max_attempts, batch_size=rcfg.score_batch)
    if orm_scorer is not None:
      plain = np.asarray(orm_scorer(row_prompts, finals), np.float64)
    elif orm_params is not None:
      plain = model.orm_score(orm_params, rev_cfg, row_prompts, [[]] * len(finals), finals, tok,
                              max_attempts=rcfg.max_attempts, batch_size=rcfg.score_batch)
    cols = {k: v for k, v in (('aware_score', aware), ('plain_score', plain)) if v is not None}
    io.write_parquet(path, {'problem_id': attempts['problem_id'].astype(str).tolist(),
                            'chain': attempts['chain'].to_numpy(np.int32),
                            'position': attempts['position'].to_numpy(np.int32), **cols})
  record['plain_scorer'] = ('given' if orm_scorer is not None else
                            'revision_orm_empty_context' if orm_params is not None else None)

  metrics = {**select.revision_metrics(attempts, ids, rcfg.max_budget, aware, plain), **record}
  io.write_json(workdir / 'metrics.json', metrics)
  return metrics
