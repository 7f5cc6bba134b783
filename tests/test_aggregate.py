"""Step and answer aggregation: values, tie rules, unparseable answers, batching."""

import numpy as np
import pytest

from ttc_jax.verify import aggregate as A


def test_step_aggregation():
  scores = np.array([[0.9, 0.5, 0.8, 0.0], [0.7, 0.2, 0.0, 0.0], [0.3, 0.3, 0.3, 0.3]])
  mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]], bool)
  np.testing.assert_allclose(A.aggregate_steps(scores, mask, 'last'), [0.8, 0.2, 0.0])
  np.testing.assert_allclose(A.aggregate_steps(scores, mask, 'min'), [0.5, 0.2, 0.0])
  np.testing.assert_allclose(A.aggregate_steps(scores, mask, 'prod'), [0.36, 0.14, 0.0])
  np.testing.assert_allclose(A.aggregate_steps(scores, mask, 'prod', empty=np.nan)[2], np.nan)
  np.testing.assert_allclose(A.aggregate_steps(scores[:2], None, 'last'), [0.0, 0.0])
  # Leading axes pass through.
  assert A.aggregate_steps(np.zeros((2, 3, 5)), np.ones((2, 3, 5), bool)).shape == (2, 3)
  with pytest.raises(ValueError, match='last'):
    A.aggregate_steps(scores, mask, 'mean')


def test_answer_ids():
  ids = A.answer_ids([['7', ' 7', None, '3', '', '7'], ['x']])
  np.testing.assert_array_equal(ids, [[0, 0, -1, 1, -1, 0], [0, -1, -1, -1, -1, -1]])


def test_majority_and_ties():
  answers = np.array([
      [2, 1, 1, 2, 3],      # tie 2 vs 1 (two each): 2 occurs first (index 0)
      [-1, -1, -1, 4, 5],   # unparseable is the most frequent but never wins: 4 first
      [-1, -1, -1, -1, -1], # all unparseable: no answer
      [5, 6, 6, 6, 5],
  ])
  np.testing.assert_array_equal(A.majority_vote(answers), [0, 3, -1, 1])
  np.testing.assert_array_equal(A.take_picked(answers, A.majority_vote(answers)),
                                [2, 4, -1, 6])


def test_weighted_vote():
  answers = np.array([[0, 1, 1, 2, -1], [0, 1, 0, 1, -1], [-1, 0, -1, -1, -1]])
  scores = np.array([[0.9, 0.5, 0.3, 0.1, 5.0],   # 1: 0.8 < 0: 0.9; unparseable 5.0 ignored
                     [0.25, 0.5, 0.25, 0.0, 1.0],  # 0.5 vs 0.5 tie: answer 0 first at 0
                     [1.0, 0.0, 1.0, 1.0, 1.0]])   # the lone parseable answer wins with 0.0
  np.testing.assert_array_equal(A.best_of_n_weighted(answers, scores), [0, 0, 1])
  # Majority on the first row: answer 1 (two votes) at index 1.
  assert A.majority_vote(answers[0]) == 1
  # NaN scores weigh nothing.
  assert A.best_of_n_weighted([0, 1, 1], [0.6, np.nan, 0.5]) == 0


def test_best_of_n():
  answers = np.array([[0, 1, 2, -1], [0, 1, 2, 3], [-1, -1, -1, -1], [-1, 0, 1, -1]])
  scores = np.array([[0.2, 0.8, 0.8, 0.99],  # tie at 0.8: index 1; unparseable 0.99 ignored
                     [0.1, 0.2, 0.3, 0.4],
                     [0.1, 0.2, 0.3, 0.4],
                     [0.9, np.nan, -np.inf, 1.0]])  # NaN is lowest: first parseable wins
  np.testing.assert_array_equal(A.best_of_n(answers, scores), [1, 3, -1, 1])
  correct = np.array([[0, 1, 0, 0], [0, 0, 0, 1], [1, 1, 1, 1], [0, 1, 0, 0]], bool)
  np.testing.assert_array_equal(
      A.take_picked(correct, A.best_of_n(answers, scores), fill=False),
      [True, True, False, True])


def test_batched_matches_rows():
  rng = np.random.default_rng(0)
  answers = rng.integers(-1, 3, size=(4, 6, 7))
  scores = rng.random((4, 6, 7)).round(1)  # rounding makes ties common
  for how in ('majority', 'weighted', 'best'):
    batched = A.select(answers, scores, how)
    assert batched.shape == (4, 6)
    for i in range(4):
      for j in range(6):
        assert batched[i, j] == A.select(answers[i, j], scores[i, j], how)
        # Reference: a direct per-row implementation of the documented rules.
        assert batched[i, j] == _reference(answers[i, j], scores[i, j], how)


def _reference(a, s, how):
  if (a < 0).all():
    return -1
  if how == 'best':
    best = max(s[i] for i in range(len(a)) if a[i] >= 0)
    return min(i for i in range(len(a)) if a[i] >= 0 and s[i] == best)
  w = np.ones_like(s) if how == 'majority' else s
  totals = {}
  for i, x in enumerate(a):
    if x >= 0:
      totals[x] = totals.get(x, 0.0) + w[i]
  top = max(totals.values())
  firsts = [list(a).index(x) for x, t in totals.items() if t == top]
  return min(firsts)
