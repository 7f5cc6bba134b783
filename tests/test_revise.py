"""Sequential revisions: trajectories, the context rule, the loss mask, chains, selection."""

import json

import jax
import numpy as np
import pandas as pd
import pytest
from rapidfuzz.distance import Levenshtein

from ttc_jax.data.arith import ArithTask, ArithTaskConfig
from ttc_jax.data.tokenizer import CharTokenizer
from ttc_jax.model import ModelConfig, init_params
from ttc_jax.model.config import ConfigError
from ttc_jax.revise import (ContextTooLong, RevisionConfig, build_trajectories, chain_lengths,
                            choose_step, encode_contexts, encode_revision_examples, fit_context,
                            format_context, pick_correct, read_trajectories, run_chains,
                            run_revisions, used_mask, write_trajectories)
from ttc_jax.revise import infer, select
from ttc_jax.sharding import make_mesh

TOK = CharTokenizer()
TINY = ModelConfig(d_model=32, n_layers=1, n_heads=2, n_kv_heads=2, head_dim=16, d_ff=64,
                   max_len=64)


def _samples():
  """Problem a: 3 correct, 6 incorrect; b: 2 correct, 1 incorrect; c: 1 correct, none
  incorrect; d: no correct sample."""
  right = '3+4=7\nA:7\n'
  a_wrong = ['3+4=8\nA:8\n', '3+4=12\nA:12\n', '3*4=12\nA:12\n', '9\nA:9\n', 'A:1\n',
             '3+4=7\nA:9\n']
  rows = [('a', i, t, False) for i, t in enumerate(a_wrong)]
  rows += [('a', 6 + i, right, True) for i in range(3)]
  rows += [('b', 0, '5-1=4\nA:4\n', True), ('b', 1, '5-1=3\nA:3\n', False),
           ('b', 2, '5-1=4\nA:4\n', True)]
  rows += [('c', 0, '2*2=4\nA:4\n', True)]
  rows += [('d', 0, '1+1=3\nA:3\n', False)]
  return pd.DataFrame(rows, columns=['problem_id', 'sample_index', 'text', 'correct'])


def test_trajectories_hand_made():
  s = _samples()
  t = build_trajectories(s, seed=0)
  assert t.groupby('problem_id').size().to_dict() == {'a': 3, 'b': 2, 'c': 1}
  wrong = {pid: g[~g.correct] for pid, g in s.groupby('problem_id')}
  for row in t.itertuples():
    w = wrong[row.problem_id]
    assert row.k == len(row.attempts) == len(row.attempt_indices) <= min(4, len(w))
    assert len(set(row.attempt_indices)) == row.k
    # No correct answer among the earlier attempts; the attempts are the named samples.
    by_index = dict(zip(w.sample_index, w.text))
    assert all(i in by_index for i in row.attempt_indices)
    assert [by_index[i] for i in row.attempt_indices] == row.attempts
    if row.k:
      d = [Levenshtein.distance(row.target, x) for x in w.text]
      assert row.attempts[-1] == w.text.iloc[int(np.argmin(d))]
  assert t[t.problem_id == 'c'].k.tolist() == [0]
  assert set(t[t.problem_id == 'b'].k) <= {0, 1}
  # The nearest incorrect attempt to '3+4=7\nA:7\n' is '3+4=7\nA:9\n' (one edit).
  assert all(r.attempts[-1] == '3+4=7\nA:9\n' for r in t[t.problem_id == 'a'].itertuples()
             if r.k)


def test_trajectories_k_law_and_determinism(tmp_path):
  rows = [('p', i, f'1+{i}=x\nA:{i + 100}\n', False) for i in range(10)]
  rows += [('p', 10 + i, '1+1=2\nA:2\n', True) for i in range(400)]
  s = pd.DataFrame(rows, columns=['problem_id', 'sample_index', 'text', 'correct'])
  t = build_trajectories(s, seed=3)
  counts = np.bincount(t.k, minlength=5)
  assert counts.sum() == 400 and (counts > 50).all()     # k ~ Uniform{0..4}
  pd.testing.assert_frame_equal(t, build_trajectories(s.sample(frac=1, random_state=1), seed=3))
  assert not t.equals(build_trajectories(s, seed=4))
  write_trajectories(t, tmp_path / 't.parquet')
  pd.testing.assert_frame_equal(read_trajectories(tmp_path / 't.parquet'), t,
                                check_dtype=False)


def test_context_keeps_last_four_in_order_and_fits():
  attempts = [f'1+1={i}\nA:{i}\n' for i in range(6)] + ['A:9']     # the last lacks its '\n'
  text = format_context('Q:1+1\n', attempts)
  assert text == 'Q:1+1\n' + ''.join(a + ';\n' for a in attempts[3:6]) + 'A:9\n;\n'
  n_all = 1 + len(TOK.encode(text))
  # Plenty of room: exactly the last 4, in order.
  got, kept = fit_context('Q:1+1\n', attempts, TOK, max_len=n_all + 10, reserve=10)
  assert (got, kept) == (text, 4)
  # One token short: the oldest attempt goes, the newest stays last.
  got, kept = fit_context('Q:1+1\n', attempts, TOK, max_len=n_all + 9, reserve=10)
  assert kept == 3 and got == format_context('Q:1+1\n', attempts[4:])
  for max_len in range(20, n_all + 12):
    got, kept = fit_context('Q:1+1\n', attempts, TOK, max_len=max_len, reserve=10)
    assert 1 + len(TOK.encode(got)) + 10 <= max_len
    assert got == format_context('Q:1+1\n', attempts[len(attempts) - kept:])
  with pytest.raises(ContextTooLong, match='max_len=12'):
    fit_context('Q:1+1\n', attempts, TOK, max_len=12, reserve=10)
  toks, lens, kept = encode_contexts(['Q:1+1\n', 'Q:2\n'], [attempts, []], TOK, 200, 10)
  assert toks.shape == (2, lens.max()) and kept.tolist() == [4, 0]
  assert TOK.decode(toks[0, 1:lens[0]]) == text and toks[0, 0] == TOK.bos_id


def test_loss_mask_covers_only_the_final_attempt():
  t = build_trajectories(_samples(), seed=0)
  prompts = {'a': 'Q:3+4\n', 'b': 'Q:5-1\n', 'c': 'Q:2*2\n'}
  for pack in (False, True):
    d = encode_revision_examples(t, prompts, TOK, seq_len=63, pack=pack)
    masked, seen = [], 0
    for r in range(len(d['tokens'])):
      for seg in range(1, d['segments'][r].max() + 1):
        at = d['segments'][r] == seg
        m = d['loss_mask'][r][at] > 0
        ids = d['tokens'][r][at]
        first = int(np.argmax(m))
        assert m[first:].all() and not m[:first].any()     # one contiguous tail
        assert ids[-1] == TOK.eos_id
        masked.append(TOK.decode(ids[first:]))
        ctx = TOK.decode(ids[1:first])
        row = t.iloc[seen]
        assert ctx == format_context(prompts[row.problem_id], row.attempts)
        seen += 1
    assert masked == t.target.tolist()


def test_budget_is_spent_exactly_for_every_ratio():
  for max_budget in (1, 2, 16, 64):
    lengths = chain_lengths(max_budget)
    have = np.arange(max_budget)[None, :] < lengths[:, None]     # [C, L] attempts run
    for n in infer.budgets(max_budget):
      for seq, par in infer.ratios(n):
        m = used_mask(max_budget, n, seq)
        assert seq * par == n and m.sum() == n and not (m & ~have).any()
  assert infer.ratios(8) == [(1, 8), (2, 4), (4, 2), (8, 1)]
  assert chain_lengths(16).sum() == 16 * (4 / 2 + 1)


def test_selection_rules_on_hand_made_chains():
  # One problem, max_budget 4: chains of 4, 2, 1 and 1 attempts; only '5' is right.
  chain = [0, 0, 0, 0, 1, 1, 2, 3]
  pos = [0, 1, 2, 3, 0, 1, 0, 0]
  ans = ['5', '7', '7', '7', '7', '7', '7', '5']
  aware = np.asarray([0.9, 0.1, 0.1, 0.1, 0.2, 0.2, 0.3, 0.8])
  plain = np.asarray([0.1, 0.5, 0.1, 0.1, 0.6, 0.1, 0.1, 0.2])
  df = pd.DataFrame({'problem_id': 'x', 'chain': chain, 'position': pos, 'answer': ans,
                     'correct': [a == '5' for a in ans]})
  arr = select.to_arrays(df, ['x'], 4, {'aware_score': aware, 'plain_score': plain})
  assert pick_correct(arr, 'majority', 4, 4).tolist() == [False]      # '7' three times
  assert pick_correct(arr, 'hierarchical', 4, 4).tolist() == [True]   # 0.9 > 0.3
  # 2:2: chain 0 picks '5' (0.9 vs 0.1), chain 1 '7' (0.4); across: '5'.
  assert pick_correct(arr, 'hierarchical', 4, 2).tolist() == [True]
  assert pick_correct(arr, 'majority', 4, 2).tolist() == [False]
  # 1:4: '5' (0.9 + 0.8) beats '7' (0.2 + 0.3) across chains; a tie in majority goes to the
  # first occurrence ('5').
  assert pick_correct(arr, 'hierarchical', 4, 1).tolist() == [True]
  assert pick_correct(arr, 'majority', 4, 1).tolist() == [True]
  assert pick_correct(arr, 'orm_best_of_n', 4, 1).tolist() == [False]   # 0.6 on a '7'
  assert pick_correct(arr, 'oracle', 2, 2).tolist() == [True]
  m = select.chain_metrics(df)
  assert m['pass_at_1_by_position'] == [0.5, 0.0, 0.0, 0.0]
  assert m['correct_to_incorrect'] == 1.0 and m['incorrect_to_correct'] == 0.0


def test_choose_step_and_config_errors():
  curve = [(0, 3.0), (10, 2.0), (20, 1.5), (30, 1.6), (40, 1.7), (50, 1.9)]
  assert choose_step(curve, 'min_val', 2) == 20
  assert choose_step(curve, 'after_min', 2) == 40
  assert choose_step(curve, 'after_min', 9) == 50
  with pytest.raises(ConfigError, match='revisions.max_budget'):
    RevisionConfig(max_budget=12).validate()
  with pytest.raises(ConfigError, match='revisions.select'):
    RevisionConfig(select='last').validate()
  with pytest.raises(ConfigError, match='revisions.context_len'):
    RevisionConfig(context_len=20).check_fits(ArithTask())


def test_chains_are_deterministic_and_keep_four_attempts():
  params = init_params(TINY, jax.random.key(0))
  task = ArithTask(ArithTaskConfig(min_ops=1, max_ops=1, train_size=10, validation_size=4,
                                   test_size=4))
  probs = task.problems('test', 2)
  kw = dict(max_budget=8, max_new_tokens=8, temperature=1.0)
  args = (params, TINY, [p.id for p in probs], [p.prompt for p in probs],
          [p.answer for p in probs], TOK, task.is_correct, task.parse_answer)
  sampler = infer.Sampler(TINY, eos_id=TOK.eos_id, step_ids=TOK.step_ids, n_windows=1)
  a = run_chains(*args, jax.random.key(5), sampler=sampler, **kw)
  b = run_chains(*args, jax.random.key(5), sampler=sampler, **kw)
  pd.testing.assert_frame_equal(a, b)
  assert len(a) == 2 * chain_lengths(8).sum()
  assert (a.n_generated_tokens <= 8).all() and (a.n_context_tokens + 8 <= TINY.max_len).all()
  # Context holds min(position, 4) attempts, cut only by the length rule (max_len 64).
  assert (a.n_kept <= np.minimum(a.position, 4)).all()
  assert (a[a.position == 1].n_kept == 1).all()
  prev = infer.previous_attempts(a)
  for i in np.flatnonzero(a.position == 6):
    row = a.iloc[i]
    chain = a[(a.problem_id == row.problem_id) & (a.chain == row.chain)]
    assert prev[i] == chain.text.tolist()[2:6]


def test_run_revisions_end_to_end_and_resume(tmp_path):
  task = ArithTask(ArithTaskConfig(min_ops=1, max_ops=2, train_size=50, validation_size=10,
                                   test_size=10))
  params = init_params(TINY, jax.random.key(0))
  rng = np.random.default_rng(0)
  rows = []
  for p in task.problems('train', 12):
    for i in range(6):
      wrong = str(int(p.answer) + int(rng.integers(1, 9)))
      text = p.solution if rng.random() < 0.5 else p.solution.replace(p.answer, wrong)
      rows.append((p.id, i, text, task.is_correct(text, p.answer)))
  samples = pd.DataFrame(rows, columns=['problem_id', 'sample_index', 'text', 'correct'])
  rcfg = RevisionConfig(train_problems=12, context_len=160, steps=4, batch_size=4,
                        eval_every=2, orm_steps=2, orm_batch_size=4,
                        orm_sequences_per_problem=2, eval_problems=3, max_budget=4,
                        score_batch=32, decode_windows=1)
  m = run_revisions(params, TINY, task, rcfg, tmp_path, make_mesh(), jax.random.key(1),
                    samples=samples)
  json.dumps(m)
  assert set(m['accuracy']) == {'majority', 'hierarchical', 'orm_best_of_n', 'oracle'}
  assert list(m['accuracy']['majority']) == ['1', '2', '4']
  assert list(m['accuracy']['majority']['4']) == ['1:4', '2:2', '4:1']
  assert len(m['pass_at_1_by_position']) == 4
  assert [s for s, _ in m['finetune']['curve']] == [0, 2, 4]
  assert m['finetune']['chosen_step'] in (2, 4)
  assert sum(m['trajectories']['k_histogram']) == int(samples.correct.sum())
  # Everything is on disk: a rerun reads it back and returns the same metrics.
  again = run_revisions(params, TINY, task, rcfg, tmp_path, make_mesh(), jax.random.key(1),
                        samples=samples)
  assert again['accuracy'] == m['accuracy'] and again['finetune'] == m['finetune']
