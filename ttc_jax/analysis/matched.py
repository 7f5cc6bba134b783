"""FLOPs-matched comparison: a small model with test-time compute vs an M-times larger model.

Derivation (arXiv v1). Let the small model have N parameters and the large one M N, both
pretrained on D_pretrain tokens, and let the large model answer with D_inference tokens
(greedy, one generation per prompt). Total FLOPs:

  large:  X_L + Y_L = 6 M N D_pretrain + 2 M N D_inference
  small:  X_S + Y_S = 6 N D_pretrain + 2 N (K D_inference)

where K is the small model's inference multiplier (K generations of the same length).
Equating and dividing by 2 N D_inference:

  3 D_pretrain / D_inference + K = 3 M D_pretrain / D_inference + M
  K = M + 3 (D_pretrain / D_inference) (M - 1) = M + 3 (M - 1) / R,   R = D_inf / D_pretrain.

ICLR version: Y = 4 N D_inference (the verifier counted), so dividing by 4 N D_inference
gives K = M + 1.5 (M - 1) / R. K is the small model's test-time budget in generations.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

# The paper's plotted R = D_inference / D_pretrain.
PAPER_RATIOS = {'v1': (0.16, 0.79, 22.0), 'iclr': (0.08, 0.40, 11.0)}
_COEF = {'v1': 3.0, 'iclr': 1.5}


def matched_multiplier(m, r, convention: str = 'v1'):
  """Small-model inference multiplier K at equal total FLOPs (broadcasts over m and r).

  Args:
    m: parameter ratio large / small (M >= 1).
    r: D_inference / D_pretrain (> 0).
    convention: 'v1' (K = M + 3 (M - 1) / R) or 'iclr' (K = M + 1.5 (M - 1) / R).
  """
  if convention not in _COEF:
    raise ValueError(f"convention must be 'v1' or 'iclr', got {convention!r}.")
  m = np.asarray(m, np.float64)
  r = np.asarray(r, np.float64)
  if np.any(r <= 0):
    raise ValueError(f'R = D_inference / D_pretrain must be positive, got {r}.')
  k = m + _COEF[convention] * (m - 1.0) / r
  return float(k) if k.ndim == 0 else k


def interp_log_budget(budgets, acc, query):
  """Accuracy at `query` budgets, linear in log2 budget; NaN outside the measured range.

  Returns (values, in_range) arrays shaped like `query`.
  """
  b = np.asarray(budgets, np.float64)
  a = np.asarray(acc, np.float64)
  order = np.argsort(b)
  b, a = b[order], a[order]
  q = np.asarray(query, np.float64)
  in_range = (q >= b[0]) & (q <= b[-1])
  vals = np.interp(np.log2(q), np.log2(b), a)
  return np.where(in_range, vals, np.nan), in_range


def matched_comparison(big_acc: Mapping | pd.Series, small_curve: pd.DataFrame, m: float,
                       ratios: Sequence[float] | None = None,
                       convention: str = 'v1') -> pd.DataFrame:
  """Small model at its FLOPs-matched budget vs the large model's greedy pass@1, per bin.

  Args:
    big_acc: bin -> large-model greedy pass@1 accuracy.
    small_curve: long table with columns bin, budget (generations), accuracy: the small
      model's test-time accuracy curve (e.g. the compute-optimal one).
    m: parameter ratio large / small.
    ratios: R values (default: the paper's for `convention`).
    convention: 'v1' or 'iclr'.
  Returns one row per (bin, R): bin, R, matched_budget (= K), small_acc (NaN when K lies
  outside the measured budgets: no silent extrapolation), small_acc_at_max_budget,
  max_budget, in_range, big_acc, delta = small_acc - big_acc, winner ('test_time',
  'pretraining', 'tie' or 'unknown' when out of range).
  """
  if not {'bin', 'budget', 'accuracy'} <= set(small_curve.columns):
    raise ValueError('small_curve needs columns bin, budget, accuracy; it has '
                     f'{list(small_curve.columns)}.')
  ratios = PAPER_RATIOS[convention] if ratios is None else tuple(ratios)
  big = pd.Series(big_acc) if not isinstance(big_acc, pd.Series) else big_acc
  k = np.atleast_1d(matched_multiplier(m, np.asarray(ratios, np.float64), convention))
  rows = []
  for b, grp in small_curve.groupby('bin'):
    grp = grp.groupby('budget', as_index=False)['accuracy'].mean().sort_values('budget')
    vals, ok = interp_log_budget(grp['budget'], grp['accuracy'], k)
    big_b = float(big.get(b, np.nan))
    for r, kk, v, inr in zip(ratios, k, vals, ok):
      delta = v - big_b
      winner = ('unknown' if not inr or np.isnan(delta) else
                'test_time' if delta > 0 else 'pretraining' if delta < 0 else 'tie')
      rows.append({'bin': b, 'R': r, 'matched_budget': kk, 'small_acc': v,
                   'small_acc_at_max_budget': float(grp['accuracy'].iloc[-1]),
                   'max_budget': float(grp['budget'].iloc[-1]), 'in_range': bool(inr),
                   'big_acc': big_b, 'delta': delta, 'winner': winner})
  return pd.DataFrame(rows)
