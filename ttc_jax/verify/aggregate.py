"""Step aggregation (one score per answer) and answer aggregation (one pick per problem).

Pure numpy, vectorised over any leading axes: a bank [P, N], or subsets [P, C, k].

Answers are integer ids per sample, -1 meaning unparseable (no final answer); `answer_ids`
builds them from strings. Selection functions return the *index* of the picked sample (the
first sample, along the last axis, that carries the winning answer), or -1 for "no answer";
`take_picked` turns indices into answer ids or correctness flags.

Rules shared by every selection function:
  * An unparseable sample (id -1) never wins unless every sample is unparseable; then the
    pick is -1, "no answer", which graders count as incorrect.
  * Ties are broken by position: among tied answers, the one whose first occurrence has the
    smallest sample index wins (plain best-of-N: the tied sample with the smallest index).
  * NaN scores count as the lowest possible score (best-of-N) or as weight 0 (weighted).
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np

StepAggregation = Literal['last', 'min', 'prod']
AnswerAggregation = Literal['majority', 'weighted', 'best']
NO_ANSWER = -1


# ---- step aggregation -----------------------------------------------------------------------
def aggregate_steps(step_scores_xS, step_mask_xS=None, how: StepAggregation = 'last',
                    empty: float = 0.0) -> np.ndarray:
  """One score per answer from its per-step PRM scores.

  Args:
    step_scores_xS: [..., S] PRM scores at the end of each step (padded).
    step_mask_xS: [..., S] bool, True on real steps. Real steps need not be a prefix; 'last'
      takes the last True position. None means every step is real.
    how: 'last' (score of the final step), 'min' or 'prod' over real steps.
    empty: the score of an answer with no real step.
  Returns:
    [...] float64 scores.
  """
  s = np.asarray(step_scores_xS, dtype=np.float64)
  m = np.ones(s.shape, bool) if step_mask_xS is None else np.asarray(step_mask_xS, bool)
  if m.shape != s.shape:
    raise ValueError(f'step mask shape {m.shape} != step scores shape {s.shape}.')
  has = m.any(axis=-1)
  if how == 'last':
    last = s.shape[-1] - 1 - np.argmax(m[..., ::-1], axis=-1)
    out = np.take_along_axis(s, last[..., None], axis=-1)[..., 0]
  elif how == 'min':
    out = np.min(np.where(m, s, np.inf), axis=-1)
  elif how == 'prod':
    out = np.prod(np.where(m, s, 1.0), axis=-1)
  else:
    raise ValueError(f"step aggregation must be 'last', 'min' or 'prod', got {how!r}.")
  return np.where(has, out, empty)


# ---- answers to ids ---------------------------------------------------------------------------
def answer_ids(answers: Sequence[Sequence[str | None]], normalize=str.strip) -> np.ndarray:
  """Integer ids per problem: [P][N] strings (None or '' = unparseable) -> [P, N] int64.

  Within a problem, ids number distinct (normalised) answers in order of first occurrence,
  from 0; unparseable answers (None, NaN, anything not a string, or '') get -1. Ids are only
  comparable within one problem. Rows may have different lengths; short rows are padded with
  -1.
  """
  width = max((len(row) for row in answers), default=0)
  out = np.full((len(answers), width), NO_ANSWER, np.int64)
  for p, row in enumerate(answers):  # String hashing has no vector form; one pass per row.
    seen: dict[str, int] = {}
    for i, a in enumerate(row):
      if not isinstance(a, str):   # None, or NaN where pandas read an all-missing column
        continue
      key = normalize(a) if normalize else a
      if key == '':
        continue
      out[p, i] = seen.setdefault(key, len(seen))
  return out


# ---- answer aggregation -----------------------------------------------------------------------
def weighted_vote(answers_xN, weights_xN=None) -> np.ndarray:
  """Index of the sample whose answer has the largest summed weight: [..., N] -> [...].

  With weights=None every sample weighs 1 (majority vote). Ties: the answer whose first
  occurrence comes first. Unparseable (-1) answers never win unless all are.
  """
  a = np.asarray(answers_xN)
  lead, n = a.shape[:-1], a.shape[-1]
  if n == 0:
    raise ValueError('answer aggregation needs at least one sample per problem.')
  rows = int(np.prod(lead, dtype=np.int64))
  a2 = a.reshape(rows, n)
  w2 = (np.ones(a2.shape) if weights_xN is None else
        np.broadcast_to(np.asarray(weights_xN, np.float64), a.shape).reshape(rows, n))
  w2 = np.where(np.isnan(w2), 0.0, w2)
  # One stable argsort of a combined int64 key (row, answer, index) makes each (row, answer)
  # group contiguous, starting at its first occurrence (2-3x faster than a 3-key lexsort).
  a64 = a2.astype(np.int64)
  span = int(a64.max(initial=-1)) + 2           # answers -1 .. max -> 0 .. max + 1
  key = ((np.arange(rows, dtype=np.int64)[:, None] * span + (a64 + 1)) * n
         + np.arange(n, dtype=np.int64)).ravel()
  order = np.argsort(key, kind='stable')
  skey = key[order]
  group = skey // n
  start = np.ones(order.size, bool)
  start[1:] = group[1:] != group[:-1]
  starts = np.flatnonzero(start)
  total = np.add.reduceat(w2.ravel()[order], starts)
  g_row, g_ans, g_first = group[starts] // span, group[starts] % span - 1, skey[starts] % n
  total = np.where(g_ans < 0, -np.inf, total)
  # Best group per row: sort by (row, -total, first index) and keep each row's first group.
  best = np.lexsort((g_first, -total, g_row))
  keep = np.ones(best.size, bool)
  keep[1:] = g_row[best][1:] != g_row[best][:-1]
  chosen = best[keep]  # one group per row, rows in order
  pick = np.where(g_ans[chosen] < 0, NO_ANSWER, g_first[chosen])
  return pick.reshape(lead)


def majority_vote(answers_xN) -> np.ndarray:
  """Index of a sample carrying the most frequent parseable answer: [..., N] -> [...]."""
  return weighted_vote(answers_xN, None)


def best_of_n_weighted(answers_xN, scores_xN) -> np.ndarray:
  """Best-of-N weighted: the answer with the largest sum of aggregated scores."""
  return weighted_vote(answers_xN, scores_xN)


def best_of_n(answers_xN, scores_xN) -> np.ndarray:
  """Plain best-of-N: index of the highest-scoring parseable sample; ties: smallest index."""
  a = np.asarray(answers_xN)
  valid = a >= 0
  s = np.broadcast_to(np.asarray(scores_xN, np.float64), a.shape)
  s = np.where(valid & ~np.isnan(s), s, -np.inf)
  # Candidates are parseable samples at the top score, so a parseable sample scored -inf or
  # NaN still beats every unparseable one.
  cand = valid & (s == s.max(axis=-1, keepdims=True))
  pick = np.argmax(cand, axis=-1)  # argmax returns the first True: smallest index wins ties
  return np.where(valid.any(axis=-1), pick, NO_ANSWER)


def select(answers_xN, scores_xN=None, how: AnswerAggregation = 'weighted') -> np.ndarray:
  """Dispatch: 'majority', 'weighted' (best-of-N weighted) or 'best' (plain best-of-N)."""
  if how == 'majority':
    return majority_vote(answers_xN)
  if scores_xN is None:
    raise ValueError(f'answer aggregation {how!r} needs scores.')
  if how == 'weighted':
    return best_of_n_weighted(answers_xN, scores_xN)
  if how == 'best':
    return best_of_n(answers_xN, scores_xN)
  raise ValueError(f"answer aggregation must be 'majority', 'weighted' or 'best', got {how!r}.")


def take_picked(values_xN, pick_x, fill=NO_ANSWER) -> np.ndarray:
  """values[..., pick] per row, `fill` where pick is -1 (e.g. correct flags with fill=False)."""
  v = np.asarray(values_xN)
  p = np.asarray(pick_x)
  got = np.take_along_axis(v, np.maximum(p, 0)[..., None], axis=-1)[..., 0]
  return np.where(p < 0, fill, got)
