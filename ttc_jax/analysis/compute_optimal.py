"""Compute-optimal strategy selection by 2-fold cross-validation, and its efficiency factor.

Input is a long table with one row per (problem, strategy, budget) outcome:

  problem   any hashable problem id
  bin       difficulty bin (oracle or predicted)
  budget    test-time budget (generations)
  method    e.g. 'beam', 'best_of_n_weighted', 'revisions'          } together they name the
  strategy  hyperparameters, e.g. 'M=4' or 'seq:par=8:16' (optional) } strategy selected
  correct   correctness in [0, 1] (expected accuracy from a bank is fine)

Repeated rows for one (problem, strategy, budget) are averaged first, so every problem
weighs the same in a fold's accuracy.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd


def _strategy_key(df: pd.DataFrame, strategy_cols: Sequence[str]) -> pd.Series:
  cols = [c for c in strategy_cols if c in df.columns]
  if not cols:
    raise ValueError(f'table needs at least one strategy column of {list(strategy_cols)}; it '
                     f'has {list(df.columns)}.')
  key = df[cols[0]].astype(str)
  for c in cols[1:]:
    key = key + ':' + df[c].astype(str)
  return key


def assign_folds(problems_by_bin: dict, n_folds: int = 2, seed: int = 0) -> dict:
  """problem -> fold, a seeded near-equal split of each bin's problems (bins in sorted order)."""
  rng = np.random.default_rng(seed)
  fold = {}
  for b in sorted(problems_by_bin):
    probs = np.array(sorted(problems_by_bin[b]), dtype=object)
    perm = rng.permutation(len(probs))
    for r, i in enumerate(perm):
      fold[probs[i]] = r * n_folds // len(probs)
  return fold


def cross_validated_selection(table: pd.DataFrame, seed: int = 0,
                              strategy_cols: Sequence[str] = ('method', 'strategy'),
                              ) -> pd.DataFrame:
  """Per (bin, budget): pick the best strategy on one fold, score it on the other.

  Each bin's problems are split once (seeded, the same split for every budget) into folds 0
  and 1. For direction d in {0, 1}, the strategy with the best mean accuracy on fold d is
  chosen (ties: the lexicographically smallest strategy key) and its accuracy on fold 1 - d
  is reported; `heldout_accuracy` averages the two directions. A strategy with no rows on
  the held-out fold scores NaN there.

  Returns columns: bin, budget, chosen_on_fold0, heldout_acc_fold1, chosen_on_fold1,
  heldout_acc_fold0, heldout_accuracy, n_problems, oracle_strategy, oracle_accuracy (the
  in-sample best, for reference only: it sees the problems it reports on).
  """
  need = {'problem', 'bin', 'budget', 'correct'}
  if missing := need - set(table.columns):
    raise ValueError(f'table is missing columns {sorted(missing)}.')
  df = table.assign(_strategy=_strategy_key(table, strategy_cols))
  df = (df.groupby(['bin', 'budget', '_strategy', 'problem'], as_index=False)['correct']
        .mean())
  problems_by_bin = df.groupby('bin')['problem'].unique().to_dict()
  fold = assign_folds(problems_by_bin, 2, seed)
  df['fold'] = df['problem'].map(fold)

  acc = df.groupby(['bin', 'budget', 'fold', '_strategy'])['correct'].mean()
  overall = df.groupby(['bin', 'budget', '_strategy'])['correct'].mean()
  rows = []
  for (b, budget), grp in acc.groupby(level=['bin', 'budget']):
    per_fold = grp.droplevel(['bin', 'budget']).unstack('fold')  # strategy x fold
    per_fold = per_fold.reindex(columns=[0, 1]).sort_index()
    row = {'bin': b, 'budget': budget}
    heldout = []
    for d in (0, 1):
      train = per_fold[d].dropna()
      if train.empty:
        row[f'chosen_on_fold{d}'], row[f'heldout_acc_fold{1 - d}'] = None, np.nan
        continue
      # idxmax on the sorted index returns the smallest key among tied maxima.
      choice = train.idxmax()
      row[f'chosen_on_fold{d}'] = choice
      row[f'heldout_acc_fold{1 - d}'] = per_fold.loc[choice, 1 - d]
      heldout.append(per_fold.loc[choice, 1 - d])
    row['heldout_accuracy'] = float(np.mean(heldout)) if heldout else np.nan
    row['n_problems'] = int(df[(df['bin'] == b) & (df['budget'] == budget)]['problem']
                            .nunique())
    ov = overall.loc[(b, budget)].sort_index()
    row['oracle_strategy'], row['oracle_accuracy'] = ov.idxmax(), float(ov.max())
    rows.append(row)
  return pd.DataFrame(rows)


def compute_optimal_curve(cv: pd.DataFrame) -> pd.DataFrame:
  """Held-out compute-optimal accuracy per budget, bins weighted by their problem counts."""
  w = cv['n_problems'] * cv['heldout_accuracy']
  out = (cv.assign(_w=w).groupby('budget')[['_w', 'n_problems']].sum())
  return pd.DataFrame({'budget': out.index, 'accuracy': (out['_w'] / out['n_problems']).values})


def efficiency_factor(budgets, bon_acc, opt_acc) -> pd.DataFrame:
  """How much best-of-N budget matches compute-optimal accuracy at each budget.

  Args:
    budgets: [B] increasing budgets (generations) at which both curves were measured.
    bon_acc: [B] best-of-N accuracy.
    opt_acc: [B] compute-optimal accuracy.
  Returns a DataFrame per budget: budget, opt_acc, bon_budget (the best-of-N budget reaching
  opt_acc), ratio = bon_budget / budget, status. The best-of-N curve is replaced by its
  running maximum (a larger budget can always be spent like a smaller one) and interpolated
  linearly in log2 budget. status: 'interpolated'; 'below_range' when best-of-N at the
  smallest budget already matches (bon_budget = budgets[0], an upper bound); 'not_reached'
  when it never does within the measured range (bon_budget and ratio NaN, no extrapolation).
  """
  b = np.asarray(budgets, np.float64)
  bon = np.asarray(bon_acc, np.float64)
  opt = np.asarray(opt_acc, np.float64)
  if not (b.shape == bon.shape == opt.shape) or b.ndim != 1:
    raise ValueError('budgets, bon_acc and opt_acc must be 1-D and of equal length.')
  if np.any(np.diff(b) <= 0) or np.any(b <= 0):
    raise ValueError(f'budgets must be positive and increasing, got {list(b)}.')
  env = np.maximum.accumulate(bon)
  lb = np.log2(b)
  j = np.argmax(env[None, :] >= opt[:, None], axis=1)  # first budget whose envelope reaches
  reached = env[j] >= opt
  below = reached & (j == 0)
  lo = np.maximum(j - 1, 0)
  span = env[j] - env[lo]
  with np.errstate(invalid='ignore', divide='ignore'):
    t = np.where(span > 0, (opt - env[lo]) / span, 1.0)
  need = np.where(below, b[0], 2.0 ** (lb[lo] + t * (lb[j] - lb[lo])))
  need = np.where(reached, need, np.nan)
  status = np.where(~reached, 'not_reached', np.where(below, 'below_range', 'interpolated'))
  # Exactly matching at the smallest budget is an interpolation, not a bound.
  status = np.where(below & (env[0] == opt), 'interpolated', status)
  return pd.DataFrame({'budget': b, 'opt_acc': opt, 'bon_budget': need, 'ratio': need / b,
                       'status': status})
