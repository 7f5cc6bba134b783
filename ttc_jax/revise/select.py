"""Selection over revision chains, accuracy per budget and ratio, and the stage's metrics.

The attempts table of `infer.run_chains` becomes dense arrays [P, C, L] (problems, chains,
positions; C = L = max_budget, cells past a chain's length invalid). For budget N and ratio
seq:par the rules read chains 0..par-1, positions 0..seq-1 (exactly N attempts):

  majority       majority vote over all N answers.
  hierarchical   revision-aware ORM scores (each attempt scored given its own context):
                 best-of-N weighted within each chain picks the chain's answer, weighted by
                 that answer's summed score in the chain; then best-of-N weighted across
                 chains over those (answer, weight) pairs.
  orm_best_of_n  plain best-of-N: the single attempt with the highest context-free ORM score.
  oracle         pass@N: some attempt is correct (a ceiling, not a selection rule).

Ties and unparseable answers follow ttc_jax/verify/aggregate.py.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ttc_jax.revise.infer import budgets, chain_lengths, ratios
from ttc_jax.verify import aggregate

RULES = ('majority', 'hierarchical', 'orm_best_of_n', 'oracle')


def used_mask(max_budget: int, budget: int, seq: int) -> np.ndarray:
  """[C, L] bool: the attempts that ratio seq:(budget // seq) reads (chains x positions)."""
  par = budget // seq
  m = np.zeros((max_budget, max_budget), bool)
  m[:par, :seq] = True
  return m


def to_arrays(df: pd.DataFrame, problem_ids: Sequence[str], max_budget: int,
              columns: dict[str, np.ndarray] | None = None):
  """Dense [P, C, L] arrays from an attempts table.

  Returns {'answer': int64 ids (per problem, `aggregate.answer_ids`; -1 unparseable or
  missing), 'correct': bool, 'valid': bool (the attempt exists)} plus, for each extra
  `columns` entry (a per-row array aligned with df), a float64 [P, C, L] array (NaN missing).
  """
  p_index = {str(p): i for i, p in enumerate(problem_ids)}
  pi = np.asarray([p_index[str(p)] for p in df['problem_id']], np.int64)
  ci = df['chain'].to_numpy(np.int64)
  li = df['position'].to_numpy(np.int64)
  shape = (len(problem_ids), max_budget, max_budget)
  valid = np.zeros(shape, bool)
  valid[pi, ci, li] = True
  correct = np.zeros(shape, bool)
  correct[pi, ci, li] = df['correct'].to_numpy(bool)
  # Answer ids are per problem over all its attempts, so chains of one problem compare.
  per_problem: list[list[str | None]] = [[None] * (max_budget * max_budget)
                                          for _ in problem_ids]
  for p, c, l, a in zip(pi, ci, li, df['answer']):
    per_problem[p][c * max_budget + l] = None if a is None or pd.isna(a) else str(a)
  ids = aggregate.answer_ids(per_problem)
  answer = np.full(shape, aggregate.NO_ANSWER, np.int64)
  if ids.size:
    answer = ids.reshape(shape)
  out = {'answer': answer, 'correct': correct, 'valid': valid}
  for name, values in (columns or {}).items():
    arr = np.full(shape, np.nan)
    arr[pi, ci, li] = np.asarray(values, np.float64)
    out[name] = arr
  return out


def _flat(x_PxCxL, par: int, seq: int):
  return x_PxCxL[:, :par, :seq].reshape(x_PxCxL.shape[0], par * seq)


def pick_correct(arrays: dict, rule: str, budget: int, seq: int) -> np.ndarray:
  """[P] bool: whether `rule` picks a correct answer at budget N, ratio seq:(N // seq)."""
  par = budget // seq
  answer, correct = arrays['answer'], arrays['correct']
  if not arrays['valid'][:, :par, :seq].all():
    raise ValueError(f'ratio {seq}:{par} reads attempts the chains do not have; run them with '
                     f'max_budget >= {budget}.')
  if rule == 'oracle':
    return _flat(correct, par, seq).any(axis=-1)
  if rule == 'majority':
    pick = aggregate.majority_vote(_flat(answer, par, seq))
    return aggregate.take_picked(_flat(correct, par, seq), pick, False).astype(bool)
  if rule == 'orm_best_of_n':
    pick = aggregate.best_of_n(_flat(answer, par, seq), _flat(arrays['plain_score'], par, seq))
    return aggregate.take_picked(_flat(correct, par, seq), pick, False).astype(bool)
  if rule == 'hierarchical':
    a_PxCxL = answer[:, :par, :seq]
    s_PxCxL = np.nan_to_num(arrays['aware_score'][:, :par, :seq], nan=0.0)
    within_PxC = aggregate.best_of_n_weighted(a_PxCxL, s_PxCxL)
    chain_answer_PxC = aggregate.take_picked(a_PxCxL, within_PxC, aggregate.NO_ANSWER)
    chain_correct_PxC = aggregate.take_picked(correct[:, :par, :seq], within_PxC, False)
    # The chain's vote weighs what best-of-N weighted summed for its winning answer.
    weight_PxC = np.where(a_PxCxL == chain_answer_PxC[..., None], s_PxCxL, 0.0).sum(-1)
    across_P = aggregate.best_of_n_weighted(chain_answer_PxC, weight_PxC)
    return aggregate.take_picked(chain_correct_PxC, across_P, False).astype(bool)
  raise ValueError(f'rule must be one of {RULES}, got {rule!r}.')


def accuracy_table(arrays: dict, max_budget: int,
                   rules: Sequence[str] = RULES) -> dict[str, dict[str, dict[str, float]]]:
  """{rule: {str(N): {'seq:par': accuracy}}} for every budget up to max_budget."""
  out: dict = {}
  for rule in rules:
    out[rule] = {}
    for n in budgets(max_budget):
      out[rule][str(n)] = {f'{s}:{p}': float(pick_correct(arrays, rule, n, s).mean())
                           for s, p in ratios(n)}
  return out


def best_ratios(table: dict) -> dict[str, dict[str, str]]:
  """{rule: {str(N): best 'seq:par'}}; ties go to the more sequential ratio (listed last)."""
  out = {}
  for rule, per_budget in table.items():
    out[rule] = {}
    for n, accs in per_budget.items():
      keys = list(accs)
      out[rule][n] = max(reversed(keys), key=lambda k: accs[k])
  return out


def chain_metrics(df: pd.DataFrame) -> dict:
  """pass@1 per chain position and how often a revision flips correctness.

  pass_at_1_by_position[r]: mean correctness over every chain's attempt r (all problems).
  correct_to_incorrect: of attempts that were correct and got revised (a next attempt in the
    same chain exists), the fraction whose revision is incorrect (paper: about 38%);
  incorrect_to_correct: the same for incorrect attempts turned correct.
  """
  d = df.sort_values(['problem_id', 'chain', 'position'], kind='stable')
  by_pos = d.groupby('position')['correct'].mean()
  same = ((d['problem_id'].to_numpy()[1:] == d['problem_id'].to_numpy()[:-1])
          & (d['chain'].to_numpy()[1:] == d['chain'].to_numpy()[:-1]))
  cur = d['correct'].to_numpy(bool)[:-1][same]
  nxt = d['correct'].to_numpy(bool)[1:][same]
  n_c, n_i = int(cur.sum()), int((~cur).sum())
  return {
      'pass_at_1_by_position': [float(by_pos.get(r, np.nan)) for r in range(
          int(d['position'].max()) + 1)] if len(d) else [],
      'attempts_by_position': [int(x) for x in d.groupby('position').size().tolist()],
      'correct_to_incorrect': float((cur & ~nxt).sum() / n_c) if n_c else None,
      'incorrect_to_correct': float((~cur & nxt).sum() / n_i) if n_i else None,
      'revised_correct': n_c, 'revised_incorrect': n_i,
  }


def revision_metrics(df: pd.DataFrame, problem_ids: Sequence[str], max_budget: int,
                     aware_scores: np.ndarray | None = None,
                     plain_scores: np.ndarray | None = None) -> dict:
  """The stage's JSON-able metrics: chain_metrics plus accuracy per rule, budget and ratio
  ('accuracy') and the best ratio per budget ('best_ratio'). Rules whose scores are None
  are left out."""
  cols = {}
  rules = ['majority', 'oracle']
  if aware_scores is not None:
    cols['aware_score'] = aware_scores
    rules.insert(1, 'hierarchical')
  if plain_scores is not None:
    cols['plain_score'] = plain_scores
    rules.insert(-1, 'orm_best_of_n')
  arrays = to_arrays(df, problem_ids, max_budget, cols)
  table = accuracy_table(arrays, max_budget, rules)
  return {**chain_metrics(df), 'n_problems': len(problem_ids), 'max_budget': int(max_budget),
          'chain_lengths': chain_lengths(max_budget).tolist(),
          'generations_per_problem': int(chain_lengths(max_budget).sum()),
          'generated_tokens': int(df['n_generated_tokens'].sum()),
          'context_tokens': int(df['n_context_tokens'].sum()),
          'accuracy': table, 'best_ratio': best_ratios(table)}
