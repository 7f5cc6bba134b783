"""Question difficulty bins: oracle (pass@1) and predicted (mean verifier score).

Both split problems into `n_bins` quantile bins, bin 1 easiest (highest pass rate or highest
mean score). Tie rule: problems are ranked by value, ties broken by problem index (smaller
index counts as easier), and rank r of P goes to bin floor(r * n_bins / P) + 1. Bin sizes
therefore differ by at most one; problems tied at a bin edge may land in adjacent bins, in
problem-index order. We chose equal sizes over keeping ties together because coarse pass
rates (few samples, many problems at 0 or 1) would otherwise merge whole bins.
"""

from __future__ import annotations

import numpy as np


def quantile_bins(values_P, n_bins: int = 5, higher_is_easier: bool = True) -> np.ndarray:
  """Bin ids in 1..n_bins, bin 1 easiest: [P] float -> [P] int64.

  NaN values (e.g. no samples) rank as hardest.
  """
  v = np.asarray(values_P, np.float64)
  if v.ndim != 1 or v.size == 0:
    raise ValueError(f'values must be a non-empty [P] array, got shape {v.shape}.')
  if n_bins < 1:
    raise ValueError(f'n_bins must be >= 1, got {n_bins}.')
  easiness = v if higher_is_easier else -v
  easiness = np.where(np.isnan(easiness), -np.inf, easiness)
  order = np.lexsort((np.arange(v.size), -easiness))  # easiest first, index breaks ties
  rank = np.empty(v.size, np.int64)
  rank[order] = np.arange(v.size)
  return rank * n_bins // v.size + 1


def _masked_mean(x_PxS, mask_PxS):
  x = np.asarray(x_PxS, np.float64)
  if mask_PxS is None:
    return x.mean(axis=-1)
  m = np.asarray(mask_PxS, bool)
  cnt = m.sum(axis=-1)
  tot = np.where(m, x, 0.0).sum(axis=-1)
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan)


def oracle_bins(correct_PxS, n_bins: int = 5, mask_PxS=None) -> np.ndarray:
  """Oracle difficulty: bins of per-problem pass@1 over S samples ([P, S] bool -> [P]).

  `mask_PxS` marks real samples when problems have different sample counts.
  """
  return quantile_bins(_masked_mean(correct_PxS, mask_PxS), n_bins)


def predicted_bins(final_scores_PxS, n_bins: int = 5, mask_PxS=None) -> np.ndarray:
  """Predicted difficulty: bins of the mean final-step verifier score over S samples.

  Needs no ground truth: `final_scores_PxS` are PRM scores of each sample's last step.
  """
  return quantile_bins(_masked_mean(final_scores_PxS, mask_PxS), n_bins)
