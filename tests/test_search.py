"""Search: oracle-guided beam search beats best-of-N, lookahead k=0 is beam search, budgets and
token counts, batch invariance, selection semantics, the PRM adapter, and early errors.

A tiny policy is trained for 400 steps (~25 s on 2 CPU cores) on an easy arithmetic task in a
module fixture, so that it gets some steps right (greedy accuracy ~45%) and search has
something to find: with a random model every method scores ~0 and the comparison would mean
nothing.
"""

import dataclasses
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from ttc_jax.analysis.flops import TokenCounts, inference_flops
from ttc_jax.data.arith import ArithTask, ArithTaskConfig, step_correctness
from ttc_jax.model import init_params
from ttc_jax.model.config import ModelConfig
from ttc_jax.search import (OracleScorer, Policy, PRMScorer, best_of_n_from_bank, resolve,
                            run_search, sample_and_score, select_beam, select_dvts,
                            sqrt_width, task_kwargs, tree_search)
from ttc_jax.search import steps as steps_lib
from ttc_jax.sharding import MeshConfig, make_mesh
from ttc_jax.train import TrainConfig, train
from ttc_jax.train import pretrain

TASK = ArithTask(ArithTaskConfig(min_ops=1, max_ops=3, max_operand=9, ops='+-', op_weights=None,
                                 max_value=99, train_size=4000, validation_size=50,
                                 test_size=50))
TOK = TASK.tokenizer
CFG = ModelConfig(vocab_size=32, d_model=48, n_layers=2, n_heads=4, n_kv_heads=4, head_dim=12,
                  d_ff=96, max_len=96)
LIMITS = dict(max_rounds=6, max_step_tokens=10, cache_len=80, temperature=1.0)


@pytest.fixture(scope='module')
def params():
  probs = TASK.problems('train')
  data = pretrain.encode_examples([p.prompt for p in probs], [p.solution for p in probs], TOK,
                                  64)
  tc = TrainConfig(steps=(400,), batch_size=32, seq_len=64, lr=1e-2, warmup_steps=20,
                   log_every=100, ckpt_every=100_000)
  with tempfile.TemporaryDirectory() as workdir:
    res = train(loss_fn=lambda p, b, r: pretrain.lm_loss(p, b, r, config=CFG),
                init_fn=lambda: init_params(CFG, jax.random.key(0)),
                batch_fn=pretrain.epoch_batches(data, tc.batch_size, 0), cfg=tc,
                total_steps=400, mesh=make_mesh(MeshConfig()), workdir=workdir,
                tokens_per_step=tc.batch_size * tc.seq_len, flops_per_token=1.0, seed=0,
                progress=False)
  return res.params


@pytest.fixture(scope='module')
def policy():
  # Two attention windows keep CPU compiles short.
  return Policy(CFG, eos_id=TOK.eos_id, step_ids=TOK.step_ids, n_windows=2)


@pytest.fixture(scope='module')
def oracle():
  return OracleScorer(TOK, step_correctness)


@pytest.fixture(scope='module')
def problems():
  return TASK.problem_set('test', 24)


def _run(method, params, policy, scorer, problems, budget, **kw):
  args = dict(LIMITS, key=jax.random.key(1), batch_problems=24, policy=policy,
              **task_kwargs(TASK))
  args.update(kw)
  return run_search(method, params, CFG, scorer, problems, budget, **args)


# ---- the headline behaviour ----------------------------------------------------------------------
@pytest.mark.parametrize('width', ['sqrt', 4])
def test_oracle_beam_search_at_least_best_of_n(params, policy, oracle, problems, width):
  bon = _run('best_of_n_weighted', params, policy, oracle, problems, 4)
  beam = _run('beam', params, policy, oracle, problems, 4, width=width)
  assert beam['m'].iloc[0] == (2 if width == 'sqrt' else 4)
  # Oracle step scores prune wrong prefixes, so beam search should win clearly here.
  assert beam['correct'].mean() >= bon['correct'].mean()
  # The policy is good enough for the comparison to mean something (a random one is at ~0;
  # this one's greedy accuracy is ~0.3-0.45 depending on floating-point details of training).
  assert beam['correct'].mean() > 0.2


def test_lookahead_k0_is_beam_search(params, policy, oracle, problems):
  beam = _run('beam', params, policy, oracle, problems, 4, width=2)
  look = _run('lookahead', params, policy, oracle, problems, 4, width=2, k=0)
  cols = ['problem_id', 'answer', 'correct', 'generations', 'generated_tokens',
          'verifier_tokens', 'policy_flops', 'rounds']
  pd.testing.assert_frame_equal(beam[cols], look[cols])


def test_pallas_policy_searches_like_the_xla_policy(oracle, problems):
  """The GPU default decode path (the Pallas kernel, interpreted here, over a KV cache
  padded from 80 to 128 slots) gives the same beam search as the XLA attention: rows are
  extended, scored, reordered and duplicated with the padded cache. (Random weights: the
  kernel needs a power-of-two head_dim, which the trained CFG does not have.)"""
  cfg = dataclasses.replace(CFG, head_dim=16)
  weights = init_params(cfg, jax.random.key(5))
  out = []
  for attn in ('reduce', 'pallas'):
    policy = Policy(dataclasses.replace(cfg, decode_attention=attn), eos_id=TOK.eos_id,
                    step_ids=TOK.step_ids)
    args = dict(LIMITS, key=jax.random.key(1), batch_problems=24, policy=policy,
                temperature=0.0, **task_kwargs(TASK))
    out.append(run_search('beam', weights, cfg, oracle, problems, 4, width=2, **args))
  cols = ['problem_id', 'answer', 'correct', 'generations', 'generated_tokens', 'rounds']
  pd.testing.assert_frame_equal(out[0][cols], out[1][cols])
  assert out[1]['generated_tokens'].sum() > 0


# ---- budgets and counts ------------------------------------------------------------------------
@pytest.mark.parametrize('method,budget,width,k', [
    ('best_of_n_weighted', 4, None, 0), ('majority_vote', 4, None, 0), ('beam', 4, 2, 0),
    ('dvts', 4, 2, 0), ('lookahead', 4, 2, 1), ('lookahead', 8, 2, 3)])
def test_generations_and_token_counts(params, policy, oracle, problems, method, budget, width,
                                      k):
  sub = problems.take(np.arange(6))
  df = _run(method, params, policy, oracle, sub, budget, width=width, k=k, batch_problems=6)
  n = budget // (k + 1)
  assert (df['generations'] <= budget).all()
  assert (df['generations'] == n * (k + 1)).all()   # lookahead costs N (k + 1)
  assert (df['n'] == n).all()
  np.testing.assert_array_equal(df['prefill_tokens'], sub.lengths)   # one prefill per problem
  assert (df['generated_tokens'] > 0).all()
  if method == 'majority_vote':
    assert (df['verifier_tokens'] == 0).all() and (df['verifier_flops'] == 0).all()
  else:
    # Incremental scoring reads the prompt once and every generated token once (rollouts too).
    np.testing.assert_array_equal(df['verifier_tokens'],
                                  df['prefill_tokens'] + df['generated_tokens'])
  n_mm = CFG.matmul_params()
  np.testing.assert_allclose(df['flops_v1'], 2 * n_mm * (df['prefill_tokens']
                                                        + df['generated_tokens']))
  np.testing.assert_allclose(df['flops_iclr'], 2 * df['flops_v1'])
  # Exact FLOPs exceed the 2ND part (attention), and add up.
  assert (df['policy_flops'] > 2 * n_mm * (df['prefill_tokens'] + df['generated_tokens'])).all()
  np.testing.assert_allclose(df['total_flops'], df['policy_flops'] + df['verifier_flops'])


def test_lookahead_rollouts_are_counted(params, policy, oracle, problems):
  sub = problems.take(np.arange(6))
  kw = dict(LIMITS, key=jax.random.key(1))
  beam = tree_search(policy, params, oracle, sub, TOK, n=4, m=2, **kw)
  look = tree_search(policy, params, oracle, sub, TOK, n=4, m=2, k=1, **kw)
  # Same first round, then rollouts on top: lookahead generates strictly more tokens.
  assert look.generated_tokens_P.sum() > beam.generated_tokens_P.sum()


def test_span_counts_match_flops_helper():
  n_B, pol_B, ver_B = steps_lib.span_counts([10, 5], [13, 5])
  np.testing.assert_array_equal(n_B, [3, 0])
  # Policy: the pending token at position start - 1 is re-fed (context start, start+1, ...).
  assert pol_B[0] == TokenCounts.causal('decode', 3, 9).decode_context == 10 + 11 + 12
  assert ver_B[0] == TokenCounts.causal('verifier', 3, 10).verifier_context == 11 + 12 + 13
  assert pol_B[1] == ver_B[1] == 0


# ---- batch invariance ----------------------------------------------------------------------------
@pytest.mark.parametrize('mode,k', [('beam', 0), ('beam', 1), ('dvts', 0)])
def test_problem_alone_equals_problem_in_batch(params, policy, oracle, problems, mode, k):
  batch = problems.take(np.arange(4))
  kw = dict(LIMITS, key=jax.random.key(3), n=4, m=2, mode=mode, k=k)
  together = tree_search(policy, params, oracle, batch, TOK, **kw)
  # Problem 2 alone, and problem 2 at another position of another batch.
  alone = tree_search(policy, params, oracle, batch.take(np.array([2])), TOK, **kw)
  moved = tree_search(policy, params, oracle, batch.take(np.array([3, 2])), TOK, **kw)
  for other, i in ((alone, 0), (moved, 1)):
    assert other.texts[i] == together.texts[2]
    np.testing.assert_array_equal(other.scores_PxN[i], together.scores_PxN[2])
    assert other.generated_tokens_P[i] == together.generated_tokens_P[2]


def test_best_of_n_samples_do_not_depend_on_batch(params, policy, oracle, problems):
  kw = dict(LIMITS, key=jax.random.key(3), n=4)
  a = sample_and_score(policy, params, oracle, problems.take(np.arange(3)), TOK, **kw)
  b = sample_and_score(policy, params, oracle, problems.take(np.array([2, 0])), TOK, **kw)
  assert a.texts[2] == b.texts[0] and a.texts[0] == b.texts[1]
  assert len(set(a.texts[0])) > 1   # the N samples differ from one another


def test_max_rows_splits_batches_without_changing_results(params, policy, oracle, problems,
                                                          monkeypatch):
  """max_rows caps problems x N per batch (here 8 rows: 2 problems of N = 4 at a time); the
  results are those of batch_problems=2, since a problem's search ignores its batch."""
  from ttc_jax.search import run as run_lib
  sub = problems.take(np.arange(5))
  sizes = []
  real = run_lib.tree_search
  monkeypatch.setattr(run_lib, 'tree_search',
                      lambda *a, **k: sizes.append(len(a[3])) or real(*a, **k))
  capped = _run('beam', params, policy, oracle, sub, 4, width=2, batch_problems=24,
                max_rows=8)
  assert sizes == [2, 2, 2]   # 5 problems, the last batch padded to 2
  pairs = _run('beam', params, policy, oracle, sub, 4, width=2, batch_problems=2)
  pd.testing.assert_frame_equal(capped, pairs)
  with pytest.raises(ValueError, match='max_rows'):
    _run('beam', params, policy, oracle, sub, 4, width=2, max_rows=-1)


# ---- selection semantics (no model) --------------------------------------------------------------
def test_select_beam_keeps_top_n_over_m_and_shrinks_with_finished():
  # One problem, N=4, M=2. No finished row: keep the top 2, each twice, best first.
  score = jnp.array([0.1, 0.9, 0.5, 0.7])
  idx = select_beam(score, jnp.ones(4, bool), jnp.zeros(4, bool), n=4, m=2)
  np.testing.assert_array_equal(idx, [1, 1, 3, 3])
  # Row 1 (the best) finished: it leaves the pool for the last slot; 3 active slots are
  # refilled from ceil(3 / 2) = 2 parents: rows 3 (0.7) and 2 (0.5).
  done = jnp.array([False, True, False, False])
  idx = select_beam(score, jnp.ones(4, bool), done, n=4, m=2)
  np.testing.assert_array_equal(idx, [3, 3, 2, 1])
  # A row finished in an earlier round is no candidate; problems are independent.
  score2 = jnp.concatenate([score, jnp.array([0.3, 0.2, 0.1, 0.0])])
  cand2 = jnp.array([True, True, True, False] + [True] * 4)
  done2 = jnp.array([False, False, False, True] + [False] * 4)
  idx = select_beam(score2, cand2, done2, n=4, m=2)
  np.testing.assert_array_equal(idx, [1, 1, 2, 3, 4, 4, 5, 5])


def test_select_dvts_keeps_best_per_subtree():
  score = jnp.array([0.1, 0.9, 0.5, 0.4, 0.2, 0.3])
  cand = jnp.array([True, True, True, True, False, False])   # subtree 2 already ended
  idx = select_dvts(score, cand, jnp.zeros(6, bool), m=2)
  np.testing.assert_array_equal(idx, [1, 1, 2, 2, 4, 5])


def test_sqrt_width_and_resolve():
  assert [sqrt_width(n) for n in (1, 2, 4, 8, 16, 32, 256)] == [1, 1, 2, 2, 4, 4, 16]
  assert resolve('lookahead', 16, 'sqrt', 3) == (4, 2, 3)
  assert resolve('beam', 16, 4, 0) == (16, 4, 0)
  assert resolve('best_of_n', 16, None, 0) == (16, 0, 0)


# ---- scorers -----------------------------------------------------------------------------------
def test_oracle_scores_partial_and_final_steps(problems):
  sub = problems.take(np.array([0]))
  q, ans = str(sub.questions[0]), str(sub.answers[0])
  right = TASK.problems('test', 1)[0].solution
  wrong = right.replace(f'A:{ans}', f'A:{int(ans) + 1}')
  scorer = OracleScorer(TOK, step_correctness)

  def state_of(texts):
    rows = [list(sub.prompts[0, :sub.lengths[0]]) + TOK.encode(t) for t in texts]
    s = max(map(len, rows)) + 1
    tokens = np.zeros((len(rows), s), np.int32)
    for i, r in enumerate(rows):
      tokens[i, :len(r)] = r
    lengths = np.array([len(r) for r in rows], np.int32)
    prompt = np.full(len(rows), sub.lengths[0], np.int32)
    return steps_lib.DecodeState(
        cache={}, tokens_BxS=tokens, lengths_B=lengths, prompt_lengths_B=prompt,
        done_B=None, n_steps_B=None, step_tokens_B=None, step_end_BxS=None,
        temperature_B=None, top_p_B=None, max_new_B=None, max_step_tokens_B=None,
        max_steps_B=None, key=None, counter=None)

  after = state_of([right, wrong, right.split('\n')[0] + '\n', ''])
  before = after.replace(lengths_B=np.array([sub.lengths[0]] * 3 + [after.lengths_B[3]]))
  st = scorer.init(sub, after)   # 4 rows of 1 problem
  scores, _ = scorer.score_new_step(st, before, after)
  np.testing.assert_array_equal(np.asarray(scores)[:3], [1.0, 0.0, 1.0])
  assert np.isnan(np.asarray(scores)[3])   # no new tokens


def test_prm_adapter_matches_whole_solution_scores(params, policy, problems):
  from ttc_jax.verify import prm
  vparams = prm.init_verifier_params(params, CFG)
  vparams['head']['kernel'] = jax.random.normal(jax.random.key(5), (CFG.d_model, 1)) * 0.5
  scorer = PRMScorer(vparams, CFG, cache_len=LIMITS['cache_len'])
  sub = problems.take(np.arange(2))
  state = policy.start(params, sub.prompts, sub.lengths, n=3, cache_len=80,
                       max_step_tokens=10)
  sstate = scorer.init(sub, state)
  pkeys = steps_lib.problem_keys(jax.random.key(0), sub.ids)
  for r in range(2):
    before = steps_lib.light_copy(state)
    state = policy.extend_one_step(params, state, steps_lib.row_keys(pkeys, r, n=3))
    got, sstate = scorer.score_new_step(sstate, before, state)
    want = prm.score_final(vparams, state.tokens_BxS, state.lengths_B, config=CFG)
    moved = np.asarray(state.lengths_B > before.lengths_B)
    np.testing.assert_allclose(np.asarray(got)[moved], np.asarray(want)[moved], atol=2e-5)
    index = jnp.array([1, 1, 0, 5, 3, 3])   # reorder: both caches follow
    state, sstate = policy.gather(state, index), scorer.reorder(sstate, index)
  # And a full beam search runs on it.
  df = _run('beam', params, policy, scorer, sub, 4, width=2, batch_problems=2)
  assert len(df) == 2 and (df['verifier_tokens'] > 0).all()


# ---- the bank path -------------------------------------------------------------------------------
def test_best_of_n_from_bank():
  bank = pd.DataFrame({
      'problem_id': ['a'] * 4 + ['b'] * 4, 'sample_index': [0, 1, 2, 3] * 2,
      'answer': ['9', '2', '2', '1', None, '5', '6', '6'],
      'correct': [False, True, True, False, False, True, False, False],
      'score': [0.6, 0.35, 0.35, 0.65, 0.99, 0.8, 0.1, 0.1],
      'n_prompt_tokens': [5] * 8, 'n_generated_tokens': [10] * 8})
  got = {m: best_of_n_from_bank(bank, 4, method=m).set_index('problem_id')['answer']
         for m in ('best_of_n', 'majority_vote', 'best_of_n_weighted')}
  assert list(got['best_of_n']) == ['1', '5']           # highest single score (None skipped)
  assert list(got['majority_vote']) == ['2', '6']
  assert list(got['best_of_n_weighted']) == ['2', '5']  # sums: '2' 0.7 > '1' 0.65; '5' 0.8
  two = best_of_n_from_bank(bank, 2, method='best_of_n_weighted')
  assert list(two['answer']) == ['9', '5'] and list(two['correct']) == [False, True]
  assert list(two['generated_tokens']) == [20, 20] and list(two['prefill_tokens']) == [5, 5]
  with pytest.raises(ValueError, match='budget=5'):
    best_of_n_from_bank(bank, 5)


# ---- errors before compute -----------------------------------------------------------------------
@pytest.mark.parametrize('method,budget,kw,match', [
    ('beam', 6, dict(width=4), 'not divisible by width M=4'),
    ('beam', 2, dict(width=4), 'M=4 exceeds N=2'),
    ('beam', 0, dict(width=1), 'budget must be an integer >= 1'),
    ('best_of_n_weighted', 0, {}, 'budget must be an integer >= 1'),
    ('lookahead', 6, dict(width=1, k=3), 'not divisible by k \\+ 1 = 4'),
    ('dvts', 4, dict(width=2, max_rounds=40), 'max_rounds=40 x max_step_tokens=10'),
    ('best_of_n', 4, dict(max_rounds=40), 'exceeds cache_len=80'),
    ('beam', 4, dict(width=2, k=1), 'only applies to method lookahead'),
    ('banana', 4, {}, 'method must be one of'),
])
def test_invalid_settings_fail_before_compute(problems, method, budget, kw, match):
  # params=None and no policy: any compute would fail with a different error.
  with pytest.raises(ValueError, match=match):
    run_search(method, None, CFG, OracleScorer(TOK, step_correctness), problems, budget,
               key=jax.random.key(0), **{**LIMITS, **kw}, **task_kwargs(TASK))
