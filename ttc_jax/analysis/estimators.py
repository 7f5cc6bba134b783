"""Accuracy-vs-budget curves from a sample bank, by unbiased subsampling.

A bank holds n samples per problem: answers_PxN (int ids, -1 unparseable), scores_PxN
(aggregated verifier scores) and correct_PxN (bool). The accuracy of a method at budget k <= n
is estimated as its expected correctness over all size-k subsets of the n samples drawn
without replacement; this is unbiased for the accuracy of the method run on k fresh samples.

Within a subset, samples keep their bank order, so the tie rules of
`ttc_jax.verify.aggregate` (earliest sample wins) refer to bank indices.

  * pass@1: mean correctness (independent of k).
  * plain best-of-N: exact in closed form (`best_of_n_exact`).
  * majority and best-of-N weighted: exact by enumerating subsets when C(n, k) is small
    (`subset_accuracy_exact`), otherwise Monte Carlo over random subsets with a confidence
    interval (`subset_accuracy_mc`). `accuracy_curve` chooses.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple, Sequence

import numpy as np

from ttc_jax.verify import aggregate

_Z = {0.9: 1.6448536269514722, 0.95: 1.959963984540054, 0.99: 2.5758293035489004}


def _bank(answers_PxN, scores_PxN, correct_PxN):
  a = np.asarray(answers_PxN)
  c = np.asarray(correct_PxN, bool) & (a >= 0)  # "no answer" is never correct
  s = None if scores_PxN is None else np.asarray(scores_PxN, np.float64)
  if a.ndim != 2 or c.shape != a.shape or (s is not None and s.shape != a.shape):
    raise ValueError(f'bank arrays must all be [P, N]; got answers {a.shape}, correct '
                     f'{c.shape}, scores {None if s is None else s.shape}.')
  return a, s, c


def _check_budgets(budgets, n):
  b = np.asarray(budgets, np.int64).reshape(-1)
  if b.size == 0 or b.min() < 1 or b.max() > n:
    raise ValueError(f'budgets must lie in 1..{n} (samples per problem), got {list(b)}.')
  return b


def pass_at_1(correct_PxN) -> np.ndarray:
  """Mean correctness per problem: [P, N] -> [P]."""
  return np.asarray(correct_PxN, np.float64).mean(axis=-1)


def pass_at_k(correct_PxN, budgets: Sequence[int]) -> np.ndarray:
  """Coverage: P(at least one correct among k) = 1 - C(n - c, k) / C(n, k). -> [P, B]."""
  c = np.asarray(correct_PxN, bool)
  n = c.shape[-1]
  b = _check_budgets(budgets, n)
  wrong = n - c.sum(axis=-1)
  out = np.empty((c.shape[0], b.size))
  for j, k in enumerate(b):  # B is a handful of budgets; each column is vectorised.
    # C(w, k) / C(n, k) = prod_{i<k} (w - i) / (n - i), zero once w < k.
    i = np.arange(k)
    ratio = np.prod(np.clip(wrong[:, None] - i, 0, None) / (n - i), axis=-1)
    out[:, j] = 1.0 - ratio
  return out


def _win_probabilities(n: int, k: int) -> np.ndarray:
  """P(the sample at rank r is the max of a random k-subset) = C(n-1-r, k-1) / C(n, k).

  Computed by the recurrence w[r+1] = w[r] (n - r - k) / (n - 1 - r), from w[0] = k / n,
  which stays in floating range for any n (the binomials themselves overflow past ~1000).
  """
  w = np.empty(n)
  w[0] = k / n
  r = np.arange(n - 1)
  w[1:] = w[0] * np.cumprod(np.maximum(n - r - k, 0) / (n - 1 - r))
  return w


def best_of_n_exact(answers_PxN, scores_PxN, correct_PxN, budgets: Sequence[int]):
  """Exact expected accuracy of plain best-of-N over k-subsets: -> [P, B].

  Order the bank by the selection rule of `aggregate.best_of_n`: parseable before
  unparseable, then score descending (NaN lowest), then sample index ascending. The subset's
  pick is its first member in that order, so the sample at rank r is picked with probability
  C(n-1-r, k-1) / C(n, k); the expectation is that weight times correctness, summed. A subset
  of only unparseable samples picks "no answer" (incorrect), as ranks of unparseable samples
  carry correct = False.
  """
  a, s, c = _bank(answers_PxN, scores_PxN, correct_PxN)
  if s is None:
    raise ValueError('best-of-N needs verifier scores [P, N]; got scores=None.')
  p, n = a.shape
  b = _check_budgets(budgets, n)
  key = np.where(np.isnan(s), -np.inf, s)
  idx = np.broadcast_to(np.arange(n), (p, n))
  order = np.lexsort((idx, -key, a < 0), axis=-1)
  c_sorted = np.take_along_axis(c, order, axis=-1).astype(np.float64)
  w_BxN = np.stack([_win_probabilities(n, int(k)) for k in b])
  return c_sorted @ w_BxN.T


def _subset_correct(a, s, c, subsets_CxK, how):
  """Correctness of `how` on each subset: [P, N] banks, [C, k] indices -> [P, C] float."""
  sub_a = a[:, subsets_CxK]
  sub_s = None if s is None else s[:, subsets_CxK]
  if sub_s is None and how != 'majority':
    raise ValueError(f'answer aggregation {how!r} needs verifier scores; got scores=None.')
  pick = aggregate.select(sub_a, sub_s, how)
  return aggregate.take_picked(c[:, subsets_CxK], pick, fill=False).astype(np.float64)


def subset_accuracy_exact(answers_PxN, scores_PxN, correct_PxN, budgets: Sequence[int],
                          how: aggregate.AnswerAggregation,
                          max_subsets: int = 100_000) -> np.ndarray:
  """Exact expected accuracy of `how` over all k-subsets, by enumeration: -> [P, B].

  Raises if some budget has more than `max_subsets` subsets (use `subset_accuracy_mc`).
  """
  a, s, c = _bank(answers_PxN, scores_PxN, correct_PxN)
  n = a.shape[1]
  b = _check_budgets(budgets, n)
  out = np.empty((a.shape[0], b.size))
  for j, k in enumerate(b):
    if math.comb(n, int(k)) > max_subsets:
      raise ValueError(f'C({n}, {k}) = {math.comb(n, int(k))} subsets exceeds max_subsets='
                       f'{max_subsets}; use subset_accuracy_mc.')
    subsets = np.array(list(itertools.combinations(range(n), int(k))), np.int64)
    out[:, j] = _subset_correct(a, s, c, subsets, how).mean(axis=1)
  return out


class MCEstimate(NamedTuple):
  """Monte Carlo accuracy over random subsets.

  per_problem: [P, B] mean correctness; per_problem_se: [P, B] its standard error.
  mean, ci_low, ci_high: [B] accuracy averaged over problems and its confidence interval.
  Subsets are shared by all problems in one draw, so draw d gives one unbiased estimate of
  the bank-mean accuracy; the interval comes from the spread of those per-draw means.
  """
  per_problem: np.ndarray
  per_problem_se: np.ndarray
  mean: np.ndarray
  ci_low: np.ndarray
  ci_high: np.ndarray


def random_subsets(rng: np.random.Generator, n: int, k: int, count: int) -> np.ndarray:
  """`count` uniform k-subsets of range(n) without replacement, each sorted: [count, k]."""
  keys = rng.random((count, n))
  return np.sort(np.argpartition(keys, k - 1, axis=1)[:, :k], axis=1)


def subset_accuracy_mc(answers_PxN, scores_PxN, correct_PxN, budgets: Sequence[int],
                       how: aggregate.AnswerAggregation, num_subsets: int = 1000,
                       seed: int = 0, confidence: float = 0.95,
                       max_elements: int = 2 ** 24) -> MCEstimate:
  """Monte Carlo expected accuracy of `how` over `num_subsets` random k-subsets per budget.

  Seeded: the same arguments give the same estimate. Work is chunked so no intermediate
  holds more than about `max_elements` values.
  """
  if confidence not in _Z:
    raise ValueError(f'confidence must be one of {sorted(_Z)}, got {confidence}.')
  a, s, c = _bank(answers_PxN, scores_PxN, correct_PxN)
  p, n = a.shape
  b = _check_budgets(budgets, n)
  rng = np.random.default_rng(seed)
  shape = (p, b.size)
  mean, se = np.empty(shape), np.empty(shape)
  m, lo, hi = np.empty(b.size), np.empty(b.size), np.empty(b.size)
  for j, k in enumerate(b):
    k = int(k)
    subsets = random_subsets(rng, n, k, num_subsets)
    chunk = max(1, max_elements // max(1, p * k))
    hits = np.concatenate([_subset_correct(a, s, c, subsets[i:i + chunk], how)
                           for i in range(0, num_subsets, chunk)], axis=1)  # [P, C]
    mean[:, j] = hits.mean(axis=1)
    denom = max(num_subsets - 1, 1)
    se[:, j] = hits.std(axis=1, ddof=1 if num_subsets > 1 else 0) / math.sqrt(num_subsets)
    draws = hits.mean(axis=0)  # bank-mean accuracy per draw
    m[j] = draws.mean()
    half = _Z[confidence] * math.sqrt(np.sum((draws - m[j]) ** 2) / denom / num_subsets)
    lo[j], hi[j] = m[j] - half, m[j] + half
  return MCEstimate(mean, se, m, lo, hi)


def accuracy_curve(answers_PxN, scores_PxN, correct_PxN, budgets: Sequence[int], how: str,
                   max_subsets: int = 20_000, num_subsets: int = 1000,
                   seed: int = 0, max_draws: int = 16_384, min_subsets: int = 32) -> np.ndarray:
  """Expected per-problem accuracy [P, B] of `how` at each budget from a bank.

  how: 'pass@1', 'pass@k', 'best' (exact closed form), 'majority' or 'weighted' (exact
  enumeration where C(n, k) <= max_subsets, else Monte Carlo).
  The Monte Carlo estimate draws num_subsets k-subsets, but no more than max_draws / k of
  them (at least min_subsets): a vote over many samples varies little between subsets, and
  its cost grows with k x subsets. With 2048 samples per problem and 1000 subsets at every
  budget, the curves of one 500-problem bank took over 10 minutes; capped, about half a
  minute on 2 CPU cores.
  """
  a, s, c = _bank(answers_PxN, scores_PxN, correct_PxN)
  b = _check_budgets(budgets, a.shape[1])
  if how == 'pass@1':
    return np.repeat(pass_at_1(c)[:, None], b.size, axis=1)
  if how == 'pass@k':
    return pass_at_k(c, b)
  if how == 'best':
    return best_of_n_exact(a, s, c, b)
  if how not in ('majority', 'weighted'):
    raise ValueError(f"how must be 'pass@1', 'pass@k', 'best', 'majority' or 'weighted', "
                     f'got {how!r}.')
  out = np.empty((a.shape[0], b.size))
  n = a.shape[1]
  for j, k in enumerate(b):
    if math.comb(n, int(k)) <= max_subsets:
      out[:, j] = subset_accuracy_exact(a, s, c, [k], how, max_subsets)[:, 0]
    else:
      draws = max(min_subsets, min(num_subsets, -(-max_draws // int(k))))
      out[:, j] = subset_accuracy_mc(a, s, c, [k], how, draws,
                                     seed=seed + j).per_problem[:, 0]
  return out
