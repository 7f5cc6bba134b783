"""Estimators, difficulty bins, compute-optimal selection and the FLOPs-matched comparison."""

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from ttc_jax import analysis as an
from ttc_jax.verify import aggregate


def _bank(p, n, seed):
  """A small bank with many ties: few distinct answers, coarse scores, some unparseable."""
  rng = np.random.default_rng(seed)
  answers = rng.integers(-1, 3, size=(p, n))
  scores = rng.integers(0, 5, size=(p, n)) / 4.0
  truth = rng.integers(0, 3, size=(p, 1))
  return answers, scores, answers == truth


# ---- estimators -------------------------------------------------------------------------------
@pytest.mark.parametrize('n', [6, 7, 8])
def test_best_of_n_closed_form_equals_enumeration(n):
  answers, scores, correct = _bank(12, n, seed=n)
  budgets = list(range(1, n + 1))
  closed = an.best_of_n_exact(answers, scores, correct, budgets)
  # Brute force with itertools and the selection function itself, subset by subset.
  brute = np.zeros_like(closed)
  for j, k in enumerate(budgets):
    subsets = list(itertools.combinations(range(n), k))
    for sub in subsets:
      sub = list(sub)
      pick = aggregate.best_of_n(answers[:, sub], scores[:, sub])
      brute[:, j] += aggregate.take_picked(correct[:, sub], pick, fill=False)
    brute[:, j] /= len(subsets)
  np.testing.assert_allclose(closed, brute, atol=1e-12)
  np.testing.assert_allclose(
      an.subset_accuracy_exact(answers, scores, correct, budgets, 'best'), brute, atol=1e-12)
  # k = 1 is pass@1 over parseable-and-correct samples.
  np.testing.assert_allclose(closed[:, 0], an.pass_at_1(correct & (answers >= 0)))


@pytest.mark.parametrize('how', ['majority', 'weighted'])
def test_vote_enumeration_and_mc(how):
  n = 8
  answers, scores, correct = _bank(30, n, seed=3)
  budgets = [1, 3, 5, 8]
  exact = an.subset_accuracy_exact(answers, scores, correct, budgets, how)
  # Independent brute force for one budget.
  k = 3
  brute = np.mean([aggregate.take_picked(
      correct[:, list(s)], aggregate.select(answers[:, list(s)], scores[:, list(s)], how),
      fill=False) for s in itertools.combinations(range(n), k)], axis=0)
  np.testing.assert_allclose(exact[:, 1], brute, atol=1e-12)
  # k = n is the full-bank selection.
  full = aggregate.take_picked(correct, aggregate.select(answers, scores, how), fill=False)
  np.testing.assert_allclose(exact[:, -1], full)

  mc = an.subset_accuracy_mc(answers, scores, correct, budgets, how, num_subsets=2000,
                             seed=1, confidence=0.99)
  truth = exact.mean(axis=0)
  assert np.all((mc.ci_low - 1e-12 <= truth) & (truth <= mc.ci_high + 1e-12)), (mc, truth)
  # At k = n every subset is the whole bank: no spread.
  assert mc.ci_high[-1] - mc.ci_low[-1] == pytest.approx(0.0)
  # Per problem, 4 standard errors (some problems have zero spread and match exactly).
  assert np.all(np.abs(mc.per_problem - exact) <= 4 * mc.per_problem_se + 1e-12)
  again = an.subset_accuracy_mc(answers, scores, correct, budgets, how, num_subsets=2000,
                                seed=1, confidence=0.99)
  np.testing.assert_array_equal(mc.per_problem, again.per_problem)


def test_accuracy_curve_dispatch_and_pass_at_k():
  answers, scores, correct = _bank(10, 8, seed=5)
  ok = correct & (answers >= 0)
  cover = an.accuracy_curve(answers, scores, correct, [1, 2, 8], 'pass@k')
  brute = [np.mean([ok[:, list(s)].any(axis=1) for s in itertools.combinations(range(8), k)],
                   axis=0) for k in (1, 2, 8)]
  np.testing.assert_allclose(cover, np.stack(brute, axis=1), atol=1e-12)
  exact = an.accuracy_curve(answers, scores, correct, [4], 'weighted')
  # C(8, 4) = 70 subsets > max_subsets=10: falls back to Monte Carlo.
  mc = an.accuracy_curve(answers, scores, correct, [4], 'weighted', max_subsets=10,
                         num_subsets=3000)
  assert abs(mc.mean() - exact.mean()) < 0.03
  with pytest.raises(ValueError, match='budgets'):
    an.accuracy_curve(answers, scores, correct, [9], 'best')


def test_win_probabilities_large_n():
  # C(2048, k) overflows floats; the recurrence must still give a distribution.
  answers = np.zeros((1, 2048), np.int64)
  scores = np.linspace(1, 0, 2048)[None]
  correct = np.zeros((1, 2048), bool)
  correct[0, 0] = True  # the top-scored sample
  got = an.best_of_n_exact(answers, scores, correct, [1, 16, 256])
  np.testing.assert_allclose(got[0], [1 / 2048, 16 / 2048, 256 / 2048])


# ---- difficulty ---------------------------------------------------------------------------------
def test_oracle_bins_known_pass_rates():
  s = 20
  rates = np.array([0.0, 0.95, 0.5, 0.25, 0.75, 0.1, 0.6, 0.9, 0.3, 0.05])
  correct = np.arange(s)[None, :] < np.round(rates * s)[:, None]
  bins = an.oracle_bins(correct, 5)
  # Sorted easiest first: 0.95, 0.9 | 0.75, 0.6 | 0.5, 0.3 | 0.25, 0.1 | 0.05, 0.0
  want = {1: 1, 7: 1, 4: 2, 6: 2, 2: 3, 8: 3, 3: 4, 5: 4, 9: 5, 0: 5}
  np.testing.assert_array_equal(bins, [want[i] for i in range(10)])
  # A verifier whose mean score is monotone in the pass rate predicts the same bins.
  np.testing.assert_array_equal(an.predicted_bins(correct * 0.8 + 0.1, 5), bins)


def test_bins_ties_and_sizes():
  # All tied: ranks follow problem index, sizes equal.
  np.testing.assert_array_equal(an.quantile_bins(np.zeros(10), 5),
                                [1, 1, 2, 2, 3, 3, 4, 4, 5, 5])
  # Ties straddling an edge split by index; sizes differ by at most one for any P.
  vals = np.array([1.0, 0.5, 0.5, 0.5, 0.0, 0.5, 0.5])
  np.testing.assert_array_equal(an.quantile_bins(vals, 3), [1, 1, 1, 2, 3, 2, 3])
  for p in range(5, 23):
    sizes = np.bincount(an.quantile_bins(np.random.default_rng(p).random(p), 5))[1:]
    assert sizes.max() - sizes.min() <= 1 and sizes.sum() == p
  # Harder-when-higher values and NaNs (ranked hardest).
  np.testing.assert_array_equal(
      an.quantile_bins([0.1, np.nan, 0.9], 3, higher_is_easier=False), [1, 3, 2])
  mask = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0]], bool)
  np.testing.assert_array_equal(
      an.oracle_bins(np.array([[1, 0, 1], [1, 1, 1], [1, 1, 1]]), 3, mask), [2, 1, 3])


# ---- compute-optimal ----------------------------------------------------------------------------
def _table(rows):
  return pd.DataFrame(rows, columns=['problem', 'bin', 'budget', 'method', 'strategy',
                                     'correct'])


def test_cv_picks_the_better_method():
  rows = []
  for p in range(20):
    for budget in (4, 16):
      rows.append((p, 1, budget, 'beam', 'M=4', 1.0 if budget == 4 else 0.0))
      rows.append((p, 1, budget, 'bon', '', 0.5))
  cv = an.cross_validated_selection(_table(rows), seed=0)
  cv = cv.set_index('budget')
  assert (cv.loc[4, ['chosen_on_fold0', 'chosen_on_fold1']] == 'beam:M=4').all()
  assert (cv.loc[16, ['chosen_on_fold0', 'chosen_on_fold1']] == 'bon:').all()
  assert cv.loc[4, 'heldout_accuracy'] == 1.0 and cv.loc[16, 'heldout_accuracy'] == 0.5
  assert (cv['n_problems'] == 20).all()


def test_cv_never_sees_the_fold_it_reports_on():
  problems = list(range(24))
  folds = an.assign_folds({2: problems}, 2, seed=7)
  assert sorted(np.bincount(list(folds.values()))) == [12, 12]
  rng = np.random.default_rng(0)
  steady = set(rng.permutation(12)[:7])  # 7 of 12 correct within each fold
  rows = []
  for p in problems:
    f = folds[p]
    rank = sorted(q for q in problems if folds[q] == f).index(p)
    rows.append((p, 2, 8, 'leaky', 'x', 1.0 if f == 0 else 0.0))  # great on fold 0 only
    rows.append((p, 2, 8, 'steady', 'y', 1.0 if rank in steady else 0.0))
  cv = an.cross_validated_selection(_table(rows), seed=7).iloc[0]
  assert cv['chosen_on_fold0'] == 'leaky:x'
  assert cv['heldout_acc_fold1'] == 0.0  # judged on fold 1, where it is useless
  assert cv['chosen_on_fold1'] == 'steady:y'
  assert cv['heldout_acc_fold0'] == pytest.approx(7 / 12)
  assert cv['heldout_accuracy'] == pytest.approx(7 / 24)
  assert cv['oracle_strategy'] == 'steady:y'  # in-sample: 7/12 > 1/2
  curve = an.compute_optimal_curve(an.cross_validated_selection(_table(rows), seed=7))
  assert curve['accuracy'].iloc[0] == pytest.approx(7 / 24)


def test_efficiency_factor():
  budgets = [1, 2, 4, 8, 16]
  bon = [0.2, 0.3, 0.4, 0.5, 0.6]
  opt = [0.3, 0.45, 0.55, 0.7, 0.1]
  eff = an.efficiency_factor(budgets, bon, opt)
  np.testing.assert_allclose(eff['bon_budget'][:3], [2, 2 ** 2.5, 2 ** 3.5])
  np.testing.assert_allclose(eff['ratio'][:3], [2, 2 ** 1.5, 2 ** 1.5])
  assert list(eff['status']) == ['interpolated'] * 3 + ['not_reached', 'below_range']
  assert np.isnan(eff['ratio'][3]) and eff['bon_budget'][4] == 1
  # A dip in best-of-N is flattened by its running maximum before interpolating.
  eff = an.efficiency_factor([1, 2, 4, 8], [0.2, 0.5, 0.4, 0.6], [0.55, 0.5, 0.5, 0.5])
  np.testing.assert_allclose(eff['bon_budget'], [2 ** 2.5, 2, 2, 2])


# ---- FLOPs-matched ------------------------------------------------------------------------------
def test_matched_multiplier():
  assert an.matched_multiplier(14, 0.16) == pytest.approx(14 + 3 * (1 / 0.16) * 13)
  assert an.matched_multiplier(14, 0.16) == pytest.approx(257.75)
  assert an.matched_multiplier(14, 0.08, 'iclr') == pytest.approx(14 + 1.5 * 13 / 0.08)
  assert an.matched_multiplier(14, 22) == pytest.approx(14 + 39 / 22)
  np.testing.assert_allclose(an.matched_multiplier(1, [0.1, 10]), [1, 1])  # M=1: no gain
  # Derivation check: equal total FLOPs with X = 6ND and Y = 2ND (v1) or 4ND (ICLR).
  n, d_pre, m, r = 1e6, 1e9, 14.0, 0.79
  d_inf = r * d_pre
  for conv, c in (('v1', 2), ('iclr', 4)):
    k = an.matched_multiplier(m, r, conv)
    big = 6 * m * n * d_pre + c * m * n * d_inf
    small = 6 * n * d_pre + c * n * d_inf * k
    assert small == pytest.approx(big)
  with pytest.raises(ValueError):
    an.matched_multiplier(14, 0.0)


def test_matched_comparison():
  budgets = 2 ** np.arange(9)  # 1 .. 256
  curve = pd.DataFrame([(b, bud, 0.1 * math.log2(bud) + (0.3 if b == 1 else 0.0))
                        for b in (1, 5) for bud in budgets],
                       columns=['bin', 'budget', 'accuracy'])
  table = an.matched_comparison({1: 0.5, 5: 0.9}, curve, m=14).set_index(['bin', 'R'])
  assert len(table) == 6
  k = 14 + 39 / 22
  row = table.loc[(1, 22.0)]
  assert row['matched_budget'] == pytest.approx(k)
  assert row['small_acc'] == pytest.approx(0.1 * math.log2(k) + 0.3)
  assert row['winner'] == 'test_time' and row['in_range']
  assert table.loc[(5, 22.0), 'winner'] == 'pretraining'
  # K = 257.75 > 256 measured: flagged, not extrapolated.
  far = table.loc[(1, 0.16)]
  assert not far['in_range'] and np.isnan(far['small_acc']) and far['winner'] == 'unknown'
  assert far['small_acc_at_max_budget'] == pytest.approx(1.1)
  k079 = 14 + 39 / 0.79
  assert table.loc[(5, 0.79), 'small_acc'] == pytest.approx(0.1 * math.log2(k079))


def test_accuracy_curve_caps_monte_carlo_draws_by_budget():
  """Large budgets draw fewer subsets (k x subsets <= max_draws, at least min_subsets): the
  curve equals subset_accuracy_mc run with that many draws and the same seed."""
  from ttc_jax.analysis import estimators
  rng = np.random.default_rng(0)
  a = rng.integers(-1, 4, (6, 64))
  c = a == 1
  got = estimators.accuracy_curve(a, None, c, [2, 32], 'majority', max_draws=256,
                                  min_subsets=40, seed=5)
  small = estimators.subset_accuracy_exact(a, None, c, [2], 'majority')[:, 0]   # C(64,2) small
  big = estimators.subset_accuracy_mc(a, None, c, [32], 'majority', 40, seed=6).per_problem[:, 0]
  np.testing.assert_allclose(got[:, 0], small)
  np.testing.assert_allclose(got[:, 1], big)
  other = estimators.subset_accuracy_mc(a, None, c, [32], 'majority', 1000, seed=6)
  assert not np.allclose(got[:, 1], other.per_problem[:, 0])
