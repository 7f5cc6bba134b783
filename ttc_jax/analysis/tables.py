"""The study's analysis tables, built from the stages' Parquet tables (pure pandas).

  difficulty_table   per problem: oracle pass rate and bin, mean PRM score and predicted bin
  strategy_table     long form: problem, budget, family, method, strategy, correct
  compute_optimal    2-fold CV selection per bin and budget, for oracle and predicted bins
  efficiency         compute-optimal budget vs the best-of-N budget that matches it
  matched            small model + test-time compute vs a larger model, FLOPs-matched
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ttc_jax.analysis.compute_optimal import (compute_optimal_curve, cross_validated_selection,
                                              efficiency_factor)
from ttc_jax.analysis.difficulty import quantile_bins
from ttc_jax.analysis.matched import PAPER_RATIOS, matched_comparison

BON_STRATEGY = 'search/best_of_n_weighted'


def difficulty_table(bank: pd.DataFrame, bank_scores: pd.DataFrame | None,
                     n_bins: int = 5) -> pd.DataFrame:
  """Oracle difficulty: pass@1 over the bank's samples per problem, in n_bins quantile bins
  (bin 1 easiest). Predicted difficulty: the mean last-step PRM score over the same samples,
  binned the same way (needs no ground truth)."""
  g = bank.groupby('problem_id', sort=False)['correct'].mean()
  out = pd.DataFrame({'problem_id': g.index.astype(str), 'pass_rate': g.to_numpy(float)})
  out['oracle_bin'] = quantile_bins(out['pass_rate'].to_numpy(), n_bins, True)
  if bank_scores is not None:
    s = bank_scores.groupby('problem_id')['last'].mean()
    out['prm_mean'] = out['problem_id'].map(s).astype(float)
    out['predicted_bin'] = quantile_bins(out['prm_mean'].to_numpy(), n_bins, True)
  return out


def strategy_table(search: pd.DataFrame | None = None,
                   revisions: pd.DataFrame | None = None) -> pd.DataFrame:
  """Per-problem correctness of every strategy at every budget, in one long table.

  search rows: problem_id, method, budget, m, k, correct (as `run_search` writes them);
  revisions rows: problem_id, budget, ratio (e.g. '4:2'), selection, correct.
  The strategy name carries the hyperparameters (width M, lookahead k, ratio, rule).
  """
  frames = []
  if search is not None and len(search):
    s = search
    m = s['m'].fillna(0).astype(int)
    k = s['k'].fillna(0).astype(int)
    n = s['budget'].astype(int) // (k + 1)
    # Widths that follow sqrt(N) are one strategy across budgets (the paper's M = sqrt(N)),
    # not a different M at each budget; 4 stays 4 where both coincide (N = 16).
    from ttc_jax.search.run import sqrt_width
    is_sqrt = np.array([mm == sqrt_width(int(nn)) and mm != 4 for mm, nn in zip(m, n)])
    width = np.where(is_sqrt, 'sqrtN', m.astype(str))
    name = s['method'].astype(str)
    name = name.where(m <= 0, name + '/M=' + pd.Series(width, index=s.index))
    name = name.where(s['method'] != 'lookahead', name + '/k=' + k.astype(str))
    frames.append(pd.DataFrame({'problem': s['problem_id'].astype(str),
                                'budget': s['budget'].astype(int), 'family': 'search',
                                'method': 'search', 'strategy': name,
                                'correct': s['correct'].astype(float)}))
  if revisions is not None and len(revisions):
    r = revisions
    frames.append(pd.DataFrame({'problem': r['problem_id'].astype(str),
                                'budget': r['budget'].astype(int), 'family': 'revisions',
                                'method': 'revisions',
                                'strategy': (r['ratio'].astype(str) + '/'
                                             + r['selection'].astype(str)),
                                'correct': r['correct'].astype(float)}))
  if not frames:
    return pd.DataFrame(columns=['problem', 'budget', 'family', 'method', 'strategy',
                                 'correct'])
  return pd.concat(frames, ignore_index=True)


def compute_optimal(strategies: pd.DataFrame, difficulty: pd.DataFrame,
                    seed: int = 0) -> pd.DataFrame:
  """CV selection per (family, bin kind, bin, budget); columns of cross_validated_selection
  plus family and bins ('oracle' | 'predicted')."""
  out = []
  for bins in ('oracle', 'predicted'):
    col = f'{bins}_bin'
    if col not in difficulty:
      continue
    bin_of = dict(zip(difficulty['problem_id'].astype(str), difficulty[col]))
    for family, grp in strategies.groupby('family'):
      t = grp.assign(bin=grp['problem'].map(bin_of)).dropna(subset=['bin'])
      if t.empty:
        continue
      cv = cross_validated_selection(t, seed=seed)
      out.append(cv.assign(family=family, bins=bins))
  return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def curves(strategies: pd.DataFrame) -> pd.DataFrame:
  """Mean accuracy per (family, strategy, budget) over all problems."""
  return (strategies.groupby(['family', 'strategy', 'budget'], as_index=False)['correct']
          .mean().rename(columns={'correct': 'accuracy'}))


def efficiency(strategies: pd.DataFrame, cv: pd.DataFrame) -> pd.DataFrame:
  """Per family and bin kind: compute-optimal accuracy at each budget, the best-of-N
  (weighted) budget that matches it, and their ratio (paper: ~4x)."""
  c = curves(strategies)
  bon = c[(c['family'] == 'search') & (c['strategy'] == 'best_of_n_weighted')]
  if bon.empty:
    return pd.DataFrame()
  bon = bon.sort_values('budget')
  out = []
  for (family, bins), grp in cv.groupby(['family', 'bins']):
    opt = compute_optimal_curve(grp).sort_values('budget')
    common = np.intersect1d(opt['budget'], bon['budget'])
    if len(common) == 0:
      continue
    o = opt.set_index('budget').loc[common, 'accuracy'].to_numpy()
    b = bon.set_index('budget').loc[common, 'accuracy'].to_numpy()
    ef = efficiency_factor(common, b, o)
    out.append(ef.assign(family=family, bins=bins, bon_acc_at_budget=b))
  return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def matched(cv: pd.DataFrame, greedy: pd.DataFrame, difficulty: pd.DataFrame, *, m: float,
            big_member: str, family: str = 'search', bins: str = 'oracle') -> pd.DataFrame:
  """FLOPs-matched comparison per bin for both conventions and the paper's ratios.

  The small model's curve is its compute-optimal held-out accuracy per bin and budget; the
  big model's is its greedy pass@1 on the same problems and bins.
  """
  sel = cv[(cv['family'] == family) & (cv['bins'] == bins)]
  if sel.empty:
    return pd.DataFrame()
  small = sel.rename(columns={'heldout_accuracy': 'accuracy'})[['bin', 'budget', 'accuracy']]
  col = f'{bins}_bin'
  bin_of = dict(zip(difficulty['problem_id'].astype(str), difficulty[col]))
  g = greedy[greedy['member'] == big_member]
  big = g.assign(bin=g['problem_id'].astype(str).map(bin_of)).groupby('bin')['correct'].mean()
  out = []
  for conv in ('v1', 'iclr'):
    t = matched_comparison(big, small, m, PAPER_RATIOS[conv], conv)
    out.append(t.assign(convention=conv, M=m, big_member=big_member, family=family,
                        bins=bins))
  return pd.concat(out, ignore_index=True)
