"""Verifiers: MC-rollout labels (fractions, greedy outcomes, shard resume), PRM scoring
(incremental equals whole-solution), training with early stopping, metrics, errors."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from ttc_jax.data.arith import ArithTask, ArithTaskConfig
from ttc_jax.data.tokenizer import CharTokenizer
from ttc_jax.model import transformer
from ttc_jax.model.config import ConfigError, ModelConfig
from ttc_jax.sample.bank import sample_bank
from ttc_jax.sample.decode import Sampler
from ttc_jax.sharding import MeshConfig, make_mesh
from ttc_jax.verify import labels as L
from ttc_jax.verify import prm
from ttc_jax.verify import train_verifier as TV

CFG = ModelConfig(vocab_size=32, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8,
                  d_ff=64, max_len=64, tie_embeddings=False)
TOK = CharTokenizer()
MAX_NEW = 12
SAMPLING = dict(max_step_tokens=4)   # short steps: several per solution


def parity_grader(text, answer):
  """A grader with mixed outcomes on a random policy (whose answers are never right)."""
  del answer
  return len(text) % 2 == 0


@pytest.fixture(scope='module')
def setup():
  params = transformer.init_params(CFG, jax.random.key(0))
  # Sharp but not one-hot next-token distributions: samples vary, greedy has clear margins.
  params['unembed']['kernel'] = params['unembed']['kernel'] * 40.0
  task = ArithTask(ArithTaskConfig(min_ops=1, max_ops=2, train_size=40, validation_size=5,
                                   test_size=5))
  problems = task.problem_set('train', 12)
  sampler = Sampler(CFG, eos_id=TOK.eos_id, step_ids=TOK.step_ids, n_windows=2)
  bank, _ = sample_bank(params, CFG, problems, 4, jax.random.key(1), TOK, parity_grader,
                        task.parse_answer, max_new_tokens=MAX_NEW, batch_size=48,
                        progress=False, sampler=sampler, **SAMPLING)
  return dict(params=params, task=task, problems=problems, bank=bank, sampler=sampler)


def _labels(s, out_dir, **kw):
  args = dict(tokenizer=TOK, grader=parity_grader, key=jax.random.key(2), out_dir=out_dir,
              samples_per_problem=3, rollouts=4, max_new_tokens=MAX_NEW, rollout_rows=32,
              shard_problems=5, keep_rollouts=True, sampler=s['sampler'], progress=False,
              **SAMPLING)
  args.update(kw)
  return L.mc_labels(s['params'], CFG, s['problems'], s['bank'], **args)


@pytest.fixture(scope='module')
def full_labels(setup, tmp_path_factory):
  return _labels(setup, tmp_path_factory.mktemp('labels'))


def test_labels_fractions_and_layout(setup, full_labels):
  df, stats = full_labels
  bank = setup['bank']
  # Every step of the first 3 samples of every problem, exactly once.
  want = {(r.problem_id, r.sample_index, i) for r in bank.itertuples()
          if r.sample_index < 3 for i in range(len(r.step_ends))}
  got = list(zip(df['problem_id'], df['sample_index'], df['step_index']))
  assert len(got) == len(set(got)) and set(got) == want
  toks = {(r.problem_id, r.sample_index): r for r in bank.itertuples()}
  for r in df.itertuples():
    sol = toks[(r.problem_id, r.sample_index)]
    assert r.step_end == sol.step_ends[r.step_index] and r.final == (r.step_index == r.n_steps - 1)
    if r.final:   # the solution's own correctness, no rollouts
      assert r.n_rollouts == 0 and r.soft_label == float(sol.correct)
      continue
    prefix = TOK.decode(np.asarray(sol.tokens)[:r.step_end + 1])
    assert r.n_rollouts == 4 and len(r.rollout_texts) == 4
    assert all(t.startswith(prefix) for t in r.rollout_texts)
    ok = [parity_grader(t, '') for t in r.rollout_texts]
    assert r.soft_label == pytest.approx(np.mean(ok)) and r.hard_label == any(ok)
    assert r.n_correct == sum(ok)
  soft = df.loc[~df['final'], 'soft_label']
  assert 0 < soft.mean() < 1 and soft.nunique() > 2   # fractions, not only 0/1
  assert stats['rollout_tokens'] == df['rollout_tokens'].sum() > 0
  assert stats['rollout_tokens_per_s'] > 0


def _greedy_reference(params, prompts, caps):
  """Independent greedy continuation with the full (cache-free) forward pass: up to caps[i]
  new tokens or EOS."""
  w = CFG.max_len
  tok = np.zeros((len(prompts), w), np.int32)
  n = np.asarray([len(p) for p in prompts])
  for i, p in enumerate(prompts):
    tok[i, :len(p)] = p
  start, done = n.copy(), np.zeros(len(prompts), bool)
  fwd = jax.jit(lambda t: transformer.apply(params, t, jnp.broadcast_to(jnp.arange(w), t.shape),
                                            config=CFG)[0])
  for _ in range(MAX_NEW):
    logits = np.asarray(fwd(tok))
    nxt = logits[np.arange(len(n)), n - 1].argmax(-1)
    for i in np.flatnonzero(~done & (n - start < caps)):
      tok[i, n[i]] = nxt[i]
      n[i] += 1
      done[i] = nxt[i] == TOK.eos_id
  return [TOK.decode(tok[i, len(p):n[i]]) for i, p in enumerate(prompts)]


def test_labels_greedy_known_outcomes(setup, tmp_path):
  s = dict(setup, problems=setup['problems'].take(np.arange(4)))
  df, _ = _labels(s, tmp_path, temperature=0.0, keep_rollouts=False)
  rows = df[~df['final']]
  plen = dict(zip(s['problems'].ids, s['problems'].lengths))
  prompt = dict(zip(s['problems'].ids, s['problems'].prompts))
  toks = {(r.problem_id, r.sample_index): r.tokens for r in s['bank'].itertuples()}
  prompts = [np.concatenate([prompt[r.problem_id][:plen[r.problem_id]],
                             np.asarray(toks[(r.problem_id, r.sample_index)])[:r.step_end + 1]])
             for r in rows.itertuples()]
  caps = MAX_NEW - (rows['step_end'].to_numpy() + 1)   # the solution-level cap still binds
  texts = _greedy_reference(s['params'], prompts, caps)
  full = [TOK.decode(p[plen[r.problem_id]:]) + t for p, r, t in zip(prompts, rows.itertuples(),
                                                                     texts)]
  want = np.asarray([float(parity_grader(t, '')) for t in full])
  np.testing.assert_array_equal(rows['soft_label'].to_numpy(), want)   # all R agree: 0 or 1
  assert 0 < want.mean() < 1


def test_label_shards_resume(setup, full_labels, tmp_path):
  full, _ = full_labels
  part, st = _labels(setup, tmp_path, max_shards=1)        # a job killed after one shard
  assert st['shards_computed'] == 1 and len(part) < len(full)
  resumed, st = _labels(setup, tmp_path)
  assert st['shards_computed'] == 2                          # only the missing ones
  pd.testing.assert_frame_equal(resumed, full)               # no duplicates, no gaps
  again, st = _labels(setup, tmp_path)
  assert st['shards_computed'] == 0 and len(again) == len(full)
  with pytest.raises(ValueError, match='rollouts'):
    _labels(setup, tmp_path, rollouts=5)                     # other settings, same directory


def _random_prm(seed=3):
  params = prm.init_verifier_params(transformer.init_params(CFG, jax.random.key(seed)), CFG)
  params['head']['kernel'] = jax.random.normal(jax.random.key(seed + 1), (CFG.d_model, 1))
  return params


def test_incremental_equals_whole_solution():
  params = _random_prm()
  rng = np.random.default_rng(0)
  # Three rows: prompt lengths 3/5/2, steps of different lengths and counts.
  prompt_lens = [3, 5, 2]
  steps = [[3, 2, 4], [1, 5], [2, 2, 2, 3]]
  rows, ends = [], []
  for pl, st in zip(prompt_lens, steps):
    n = pl + sum(st)
    rows.append(rng.integers(3, 32, n).astype(np.int32))
    ends.append(pl + np.cumsum(st) - 1)
  t = 24
  tokens = np.zeros((3, t), np.int32)
  step_end = np.zeros((3, t), bool)
  for b, (r, e) in enumerate(zip(rows, ends)):
    tokens[b, :len(r)] = r
    step_end[b, e] = True
  whole, mask = jax.device_get(prm.score_steps(params, tokens, step_end, config=CFG,
                                               max_steps=5))
  assert mask.sum(1).tolist() == [3, 2, 4]
  cache = prm.init_cache(CFG, 3, 32)
  length = np.zeros(3, np.int32)
  inc = np.full((3, 5), np.nan)
  chunks = [list(prompt_lens)] + [[st[k] if k < len(st) else 0 for st in steps]
                                  for k in range(4)]
  for k, n_new in enumerate(chunks):
    n_new = np.asarray(n_new, np.int32)
    new = np.zeros((3, 6), np.int32)
    for b in range(3):
      new[b, :n_new[b]] = rows[b][length[b]:length[b] + n_new[b]]
    scores, cache = prm.extend_and_score(params, cache, new, length, n_new, config=CFG)
    last = np.asarray(prm.last_score(scores, n_new))
    if k > 0:
      inc[:, k - 1] = np.where(n_new > 0, last, np.nan)
    assert np.isnan(np.asarray(scores)[np.arange(6)[None] >= n_new[:, None]]).all()
    length += n_new
  np.testing.assert_allclose(np.where(mask, inc, 0.0), whole, atol=1e-5)
  # The gather helper turns sampler lengths into the same inputs.
  new, n_new = prm.gather_new_tokens(tokens, jnp.asarray([3, 5, 2]), jnp.asarray([6, 6, 4]),
                                     width=4)
  np.testing.assert_array_equal(np.asarray(n_new), [3, 1, 2])
  np.testing.assert_array_equal(np.asarray(new)[0, :3], rows[0][3:6])
  # ORM scoring reads the last token.
  lengths = np.asarray([len(r) for r in rows])
  final = np.asarray(prm.score_final(params, tokens, lengths, config=CFG))
  np.testing.assert_allclose(final, whole[np.arange(3), mask.sum(1) - 1], atol=1e-5)


def test_cache_overflow_is_nan():
  params = _random_prm()
  cache = prm.init_cache(CFG, 3, 32)   # the shapes of the test above: no new compile
  scores, _ = prm.extend_and_score(params, cache, np.ones((3, 6), np.int32),
                                   np.asarray([28, 0, 26]), np.asarray([2, 2, 6]), config=CFG)
  scores = np.asarray(scores)
  assert np.isnan(scores[0]).all() and np.isfinite(scores[1, :2]).all()
  assert np.isfinite(scores[2]).all()   # 26 + 6 = 32 slots: fits exactly


def test_auroc_and_ece_hand_values():
  assert TV.auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
  assert TV.auroc([0.5, 0.5, 0.2], [1, 0, 0]) == pytest.approx(0.75)   # tie counts 1/2
  assert TV.auroc([0.3, 0.9], [1, 0]) == 0.0
  assert np.isnan(TV.auroc([0.3, 0.9], [1, 1]))
  assert TV.expected_calibration_error([0.1, 0.9], [0, 1], 10) == pytest.approx(0.1)
  # Two samples in one bin: |mean p - mean y| = |0.25 - 0.5|, soft targets allowed.
  assert TV.expected_calibration_error([0.2, 0.3], [0.5, 0.5], 2) == pytest.approx(0.25)


def test_text_diversity_counts_distinct_texts_by_outcome():
  bank = pd.DataFrame({
      'problem_id': ['a'] * 5 + ['b'] * 3 + ['c'],
      'text': ['A:1', 'A:1', 'A:2', 'A:3', 'A:2', 'A:7', 'A:8', 'A:7', 'A:0'],
      'correct': [True, True, False, False, False, True, True, True, False]})
  d = TV.text_diversity(bank, ['a', 'b'])            # 'c' is not asked for
  # a: correct {A:1} (2 samples), incorrect {A:2, A:3} (3); b: correct {A:7, A:8} (3).
  assert d == {'distinct_correct_texts': 1.5, 'correct_samples': 2.5, 'problems_with_correct': 2,
               'distinct_incorrect_texts': 2.0, 'incorrect_samples': 3.0,
               'problems_with_incorrect': 1}
  assert TV.text_diversity(bank, ['c'])['distinct_correct_texts'] is None


def test_report_explains_plain_best_of_n_below_pass_at_1():
  from ttc_jax.report.report import _plain_best_of_n_note
  curves = {'budgets': [1, 4, 16], 'pass@1': [0.6] * 3, 'best_of_n/last': [0.6, 0.4, 0.1]}
  texts = {'distinct_correct_texts': 1.0, 'correct_samples': 10.0,
           'distinct_incorrect_texts': 5.5, 'incorrect_samples': 6.0}
  note = ' '.join(_plain_best_of_n_note(curves, texts))
  assert '0.100 at N = 16 against pass@1 0.600' in note and '1.0 distinct texts' in note
  assert 'Weighted best-of-N' in note
  assert _plain_best_of_n_note({**curves, 'best_of_n/last': [0.6, 0.62, 0.65]}, texts) == []
  assert 'distinct' not in ' '.join(_plain_best_of_n_note(curves, {}))


def test_config_errors_name_the_key():
  with pytest.raises(ConfigError, match='verifier.lr'):
    TV.VerifierConfig(lr=0.0).validate()
  with pytest.raises(ConfigError, match='verifier.kind'):
    TV.VerifierConfig(kind='dpo').validate()
  with pytest.raises(ConfigError, match='verifier.holdout_fraction'):
    TV.VerifierConfig(holdout_fraction=1.0).validate()
  with pytest.raises(ConfigError, match='verifier.rollouts'):
    TV.VerifierConfig(rollouts=0).validate()


def test_split_is_by_problem():
  ids = [f'p{i}' for i in range(30)]
  tr, ho = TV.split_problems(ids + ids, 0.1, 0)
  assert len(ho) == 3 and not set(tr) & set(ho) and len(tr) + len(ho) == 30


@pytest.fixture(scope='module')
def trained(setup, full_labels, tmp_path_factory):
  """A toy label set the model can learn (the step ended by EOS is 'good'), with the held-out
  labels inverted, so held-out loss rises as training goes on: the best is the first eval."""
  df = full_labels[0].copy()
  s = setup
  toks = {(r.problem_id, r.sample_index): r.tokens for r in s['bank'].itertuples()}
  is_eos = np.asarray([toks[(r.problem_id, r.sample_index)][r.step_end] == TOK.eos_id
                       for r in df.itertuples()])
  tr_ids, ho_ids = TV.split_problems(df['problem_id'], 0.25, 0)
  held = df['problem_id'].isin(ho_ids).to_numpy()
  df['soft_label'] = np.where(held, ~is_eos, is_eos).astype(np.float32)
  kw = dict(pad_id=TOK.pad_id, width=64)
  tr_ex = TV.build_examples(df[~held], s['bank'], s['problems'], **kw)
  ho_ex = TV.build_examples(df[held], s['bank'], s['problems'], **kw)
  vcfg = TV.VerifierConfig(lr=1e-2, batch_size=8, steps=20, eval_every=10, warmup_steps=2)
  workdir = tmp_path_factory.mktemp('prm')
  meta = {'policy': 'xs', 'tokenizer': prm.tokenizer_fingerprint(TOK), 'labels': 'toy'}
  res = TV.train_verifier(s['params'], CFG, tr_ex, ho_ex, vcfg, workdir, make_mesh(MeshConfig()),
                          metadata=meta, progress=False)
  return dict(res=res, workdir=workdir, tr_ex=tr_ex, ho_ex=ho_ex, vcfg=vcfg, meta=meta,
              labels=df, held=held)


def test_training_lowers_loss_and_keeps_best(trained, setup):
  res, workdir = trained['res'], trained['workdir']
  log = [json.loads(l) for l in (workdir / 'train' / 'metrics.jsonl').read_text().splitlines()]
  assert log[-1]['step'] == 20 and log[-1]['loss'] < 0.5 * log[0]['loss']
  steps = [e['step'] for e in res.evals]
  losses = [e['heldout_loss'] for e in res.evals]
  assert steps == [10, 20]
  assert res.best_step == steps[int(np.argmin(losses))] == 10   # not the last checkpoint
  params, meta = TV.load_verifier(workdir, CFG, TOK)
  assert meta['step'] == 10 and meta['policy'] == 'xs' and meta['labels'] == 'toy'
  assert TV.heldout_loss(params, CFG, trained['ho_ex']) == pytest.approx(min(losses), rel=1e-5)
  # A rerun trains nothing and returns the same best checkpoint.
  again = TV.train_verifier(setup['params'], CFG, trained['tr_ex'], trained['ho_ex'],
                            trained['vcfg'], workdir, make_mesh(MeshConfig()),
                            metadata=trained['meta'], progress=False)
  assert again.evals == res.evals and again.best_step == 10


def test_quality_metrics_and_curves(trained, setup):
  s = setup
  held_labels = trained['labels'][trained['held']].reset_index(drop=True)
  oracle = TV.oracle_step_labels(held_labels, s['bank'], s['problems'], TOK,
                                 s['task'].step_correctness)
  q = TV.step_quality(trained['res'].params, CFG, held_labels, trained['ho_ex'], oracle=oracle)
  assert q['steps'] == len(held_labels) and 0 <= q['ece_vs_mc_soft'] <= 1
  assert 'auroc_vs_oracle' in q
  json.dumps(q)
  scores, mask, ids = prm.score_bank(trained['res'].params, CFG, s['bank'], s['problems'],
                                     pad_id=TOK.pad_id)
  assert scores.shape[:2] == (12, 4) and (mask.sum(-1) > 0).all()
  answers, correct = TV.bank_arrays(s['bank'], list(ids))
  curves = TV.bank_curves(scores, mask, answers, correct)
  assert curves['budgets'] == [1, 2, 4]   # powers of two up to N
  assert set(curves) >= {'pass@1', 'majority', 'best_of_n/last', 'weighted_best_of_n/prod'}
  json.dumps(curves)


def test_mismatch_and_missing_checkpoint_errors(trained, tmp_path):
  with pytest.raises(prm.VerifierMismatch, match='vocab_size=32.*vocab_size=64'):
    TV.load_verifier(trained['workdir'], dataclasses.replace(CFG, vocab_size=64, name='big'))
  with pytest.raises(prm.VerifierMismatch, match='fingerprint'):
    TV.load_verifier(trained['workdir'], CFG, CharTokenizer(vocab_size=40))
  with pytest.raises(FileNotFoundError, match='verifier.checkpoint'):
    TV.load_verifier(tmp_path / 'nowhere')
  with pytest.raises(FileNotFoundError, match='verifier.checkpoint'):
    TV.resolve_policy_checkpoint(TV.VerifierConfig(policy='s'), tmp_path / 'pretrain-s')


def test_pipeline_end_to_end_and_resume(setup, tmp_path):
  s = setup
  task = s['task']
  vcfg = TV.VerifierConfig(samples_per_problem=2, rollouts=2, rollout_rows=32, shard_problems=6,
                           lr=1e-3, batch_size=8, steps=2, eval_every=2, warmup_steps=1,
                           holdout_fraction=0.25, policy='xs')
  mesh = make_mesh(MeshConfig())
  kw = dict(problems=s['problems'], max_new_tokens=MAX_NEW, sampling=SAMPLING,
            policy_checkpoint='runs/x/pretrain-xs', progress=False)
  out = TV.run_prm_pipeline(s['params'], CFG, task, s['bank'], vcfg, tmp_path, mesh,
                            jax.random.key(0), **kw)
  assert out['labels']['shards_computed'] == 2 and out['train']['best_step'] == 2
  assert {'auroc_vs_mc_hard', 'ece_vs_oracle'} <= set(out['heldout_quality'])
  assert out['curves']['budgets'] == [1, 2, 4]
  texts = out['bank_texts']
  assert texts['problems_with_correct'] + texts['problems_with_incorrect'] >= 1
  _, meta = TV.load_verifier(tmp_path, CFG, TOK)
  assert meta['policy_checkpoint'] == 'runs/x/pretrain-xs' and meta['labels_digest']
  again = TV.run_prm_pipeline(s['params'], CFG, task, s['bank'], vcfg, tmp_path, mesh,
                              jax.random.key(0), **kw)
  assert again['labels']['shards_computed'] == 0
  assert again['train'] == out['train'] and again['curves'] == out['curves']
