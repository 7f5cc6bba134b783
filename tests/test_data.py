"""The data layer: generator, grader, step oracle, tfds builder and seqio tasks."""

import collections
import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from ttc_jax.data import arith
from ttc_jax.data import (ArithTask, ArithTaskConfig, CharTokenizer, generate, is_correct,
                          max_text_len, parse_answer, step_correctness)
from ttc_jax.model.config import ConfigError

SMALL = ArithTaskConfig(train_size=300, validation_size=60, test_size=60, seed=3)
TINY = ArithTaskConfig(train_size=20, validation_size=10, test_size=10)


# ----------------------------------------------------------------------------- generator


def test_format_of_one_problem():
  p = arith._format(0, 'test', [7, 5, 3, 4], '+*-')
  assert p.prompt == 'Q:7+5*3-4\n'
  assert p.solution == '7+5=12\n12*3=36\n36-4=32\nA:32\n'
  assert (p.answer, p.n_ops, p.n_mul, p.max_abs_value) == ('32', 3, 1, 36)
  assert is_correct(p.solution, p.answer)
  assert step_correctness(p.question, p.solution) == [True] * 4


def test_generator_is_deterministic_per_seed_and_split():
  for split in arith.SPLITS:
    a, b = generate(SMALL, split), generate(SMALL, split)
    assert a == b and len(a) == SMALL.split_size(split)
  other = generate(dataclasses.replace(SMALL, seed=4), 'test')
  assert [p.question for p in other] != [p.question for p in generate(SMALL, 'test')]
  # `n` takes a prefix, and a split does not depend on another split's size.
  assert generate(SMALL, 'test', 7) == generate(SMALL, 'test')[:7]
  assert generate(dataclasses.replace(SMALL, train_size=50), 'test') == generate(SMALL, 'test')


def test_splits_are_disjoint_and_eval_splits_unique():
  q = {s: [p.question for p in generate(SMALL, s)] for s in arith.SPLITS}
  assert len(set(q['test'])) == len(q['test'])
  assert len(set(q['validation'])) == len(q['validation'])
  assert not set(q['validation']) & set(q['test'])
  assert not set(q['train']) & (set(q['test']) | set(q['validation']))
  ids = [p.id for s in arith.SPLITS for p in generate(SMALL, s)]
  assert len(set(ids)) == len(ids)


def test_n_ops_spread_and_values_bounded():
  cfg = ArithTaskConfig(test_size=120)
  probs = generate(cfg, 'test')
  counts = collections.Counter(p.n_ops for p in probs)
  assert counts == {k: 20 for k in range(1, 7)}
  assert sum(p.n_mul > 0 for p in probs) > 20          # multiplication appears...
  assert sum(p.n_mul > 0 for p in probs) < 100         # ...but is not everywhere
  for p in probs:
    assert 0 <= min(_chain_values(p)) and p.max_abs_value <= cfg.max_value
    assert all(cfg.min_operand <= b <= cfg.max_operand for b in p.operands)
  neg = ArithTaskConfig(test_size=60, allow_negative=True, max_value=50, op_weights=(1, 3, 1))
  vals = [v for p in generate(neg, 'test') for v in _chain_values(p)]
  assert min(vals) < 0 and max(abs(v) for v in vals) <= 50


def _chain_values(p):
  v, out = p.operands[0], [p.operands[0]]
  for o, b in zip(p.ops, p.operands[1:]):
    v = arith._apply(v, o, b)
    out.append(v)
  assert str(v) == p.answer
  return out


def test_texts_encode_and_fit_max_text_len():
  tok = CharTokenizer()
  for cfg in (SMALL, ArithTaskConfig(test_size=60, allow_negative=True, max_operand=99,
                                     max_value=99_999, max_ops=9, op_weights=(1, 2, 2))):
    bound = max_text_len(cfg)
    for p in generate(cfg, 'test') + generate(cfg, 'validation'):
      ids = tok.encode(p.text)
      assert len(ids) + 2 <= bound
      assert tok.decode(ids) == p.text
      assert len(tok.encode(p.prompt)) + 1 <= arith.max_prompt_len(cfg)
      assert is_correct(p.solution, p.answer)
      assert all(step_correctness(p.prompt, p.solution))


def test_problem_set_and_task_interface():
  task = ArithTask(TINY)
  ps = task.problem_set('test')
  probs = generate(TINY, 'test')
  tok = task.tokenizer
  assert len(ps) == 10 and ps.prompts.dtype == np.int32
  assert (ps.prompts[:, 0] == tok.bos_id).all()
  for i, p in enumerate(probs):
    assert tok.decode(ps.prompts[i, 1:ps.lengths[i]]) == p.prompt
    assert (ps.prompts[i, ps.lengths[i]:] == tok.pad_id).all()
  assert list(ps.answers) == [p.answer for p in probs]
  assert list(ps.meta['n_ops']) == [p.n_ops for p in probs]
  assert task.train_texts('train') == [p.prompt + p.solution for p in generate(TINY, 'train')]
  assert task.step_delimiter == '\n' and tok.step_ids == (tok.char_id('\n'),)
  assert task.max_text_len == max_text_len(TINY)
  assert task.problem_set('test', 3).ids.tolist() == ps.ids[:3].tolist()


def test_config_validation_names_the_key():
  bad = {'max_ops': dict(min_ops=4, max_ops=2), 'min_ops': dict(min_ops=0),
         'max_operand': dict(min_operand=5, max_operand=3), 'ops': dict(ops='+/'),
         'op_weights': dict(op_weights=(1.0,)), 'max_value': dict(max_value=5),
         'test_size': dict(test_size=-1), 'seed': dict(seed=1.5)}
  for field, kw in bad.items():
    with pytest.raises(ConfigError, match=rf'task\.{field}'):
      ArithTaskConfig(**kw).validate()
  with pytest.raises(ConfigError, match=r'task\.op_weights'):
    ArithTaskConfig(op_weights=('a', 1, 1)).validate()
  with pytest.raises(ConfigError, match=r'cfg\.ops'):
    ArithTaskConfig(ops='').validate('cfg')
  # A question space too small for the eval splits fails loudly, naming what to change.
  with pytest.raises(ConfigError, match=r'task\.test_size'):
    generate(ArithTaskConfig(max_ops=1, max_operand=3, ops='+', op_weights=None,
                             test_size=20), 'test')
  with pytest.raises(ValueError, match='split'):
    generate(TINY, 'dev')


# ----------------------------------------------------------------------------- grader


@pytest.mark.parametrize('text,answer,ok', [
    ('7+5=12\nA:12\n', '12', True),
    ('A:12', '12', True),                          # no trailing newline (stopped at EOS)
    ('7+5=12\nA: 012 \n', '12', True),             # spaces, leading zeros are canonicalised
    ('3-5=-2\nA:-2\n', '-2', True),
    ('A:-0\n', '0', True),
    ('7+5=12\nA:13\n', '12', False),               # wrong
    ('7+5=12\n', '12', False),                     # missing answer line
    ('7+5=12\nA:\n', '12', False),                 # empty answer
    ('A:12x\nA:12\n', '12', False),                # first A: line is malformed: no second try
    ('A:12\nA:13\n', '12', True),                  # first A: line decides
    ('A:13\nA:12\n', '12', False),
    ('', '12', False),
    ('\n\n\n', '12', False),
    ('A:1-2\n', '-1', False),
    ('A:' + '9' * 5000, '9' * 5000, True),         # beyond int()'s digit limit
    ('QQQ;;==**--++A', '12', False),
    ('A:12', 'garbage', False),
    ('A:12', None, False),
    (None, '12', False),
    (b'A:12', '12', False),
])
def test_is_correct(text, answer, ok):
  assert is_correct(text, answer) is ok


def test_parse_answer():
  assert parse_answer('1+1=2\nA:2\n') == '2'
  assert parse_answer('A:-07') == '-7'
  assert parse_answer('nothing here') is None
  assert parse_answer('A:+3') is None
  assert parse_answer(12) is None


def test_step_correctness_hand_made():
  q = '7+5*3-4'
  right = ['7+5=12', '12*3=36', '36-4=32', 'A:32']
  assert step_correctness(q, '\n'.join(right) + '\n') == [True] * 4
  assert step_correctness('Q:7+5*3-4\n', '7+5=12\n') == [True]       # partial, prompt form
  assert step_correctness(q, '7+5=12\n12*3=3') == [True, False]       # unfinished last line
  assert step_correctness(q, '') == []
  # A wrong result: cumulative (oracle PRM) fails the rest; local mode judges later steps on
  # what the model wrote (13*3=39 correctly continues from the wrong 13).
  wrong = '7+5=13\n13*3=39\n39-4=35\nA:35\n'
  assert step_correctness(q, wrong) == [False] * 4
  assert step_correctness(q, wrong, cumulative=False) == [False, True, True, True]
  # Right arithmetic but not the question's operation / operand / state.
  assert step_correctness(q, '7-5=2\n', cumulative=False) == [False]
  assert step_correctness(q, '7+6=13\n', cumulative=False) == [False]
  assert step_correctness(q, '7+5=12\n11*3=33\n', cumulative=False) == [True, False]
  assert step_correctness(q, '7+5=12\n36-4=32\n', cumulative=False) == [True, False]
  # Non-canonical numbers, garbage lines, an early or late answer line, text after the answer.
  assert step_correctness(q, '7+05=12\n') == [False]
  assert step_correctness(q, '7+5=12\n??\n', cumulative=False) == [True, False]
  assert step_correctness(q, '7+5=12\nA:12\n', cumulative=False) == [True, False]
  assert step_correctness(q, '\n'.join(right + ['A:32', '1+1=2']), cumulative=False) == [
      True] * 4 + [False, False]
  assert step_correctness(q, '7+5=12\n\n12*3=36\n') == [True, False, False]
  # Negative states parse unambiguously.
  assert step_correctness('3-5*2', '3-5=-2\n-2*2=-4\nA:-4\n') == [True] * 3
  # Garbage in, never an exception.
  assert step_correctness('garbage', '7+5=12\nA:12') == [False, False]
  assert step_correctness(None, '1') == [] and step_correctness(q, None) == []
  huge = '9' * 5000
  assert step_correctness(q, f'{huge}+5={huge}\n', cumulative=False) == [False]
  assert step_correctness(f'{huge}+1', '1\n') == [False]


def test_importing_data_does_not_import_tensorflow():
  code = "import sys, ttc_jax.data; assert 'tensorflow' not in sys.modules, 'tf imported'"
  subprocess.run([sys.executable, '-c', code], check=True)


# ----------------------------------------------------------------------------- tfds + seqio


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def test_tfds_builder_matches_generator(tfds_dir):
  tfds_arith = pytest.importorskip('ttc_jax.data.tfds_arith')
  b = tfds_arith.builder(TINY, tfds_dir)
  assert {s: b.info.splits[s].num_examples for s in arith.SPLITS} == {
      'train': 20, 'validation': 10, 'test': 10}
  for split in arith.SPLITS:
    direct = arith.problem_set(TINY, split)
    via = tfds_arith.problem_set_from_tfds(TINY, split, tfds_dir)
    for f in ('ids', 'prompts', 'lengths', 'answers', 'questions'):
      np.testing.assert_array_equal(getattr(via, f), getattr(direct, f), err_msg=f)
    assert via.meta.keys() == direct.meta.keys()
    for k in direct.meta:
      np.testing.assert_array_equal(via.meta[k], direct.meta[k], err_msg=k)
  rows = tfds_arith.load_examples(TINY, 'test', tfds_dir)
  assert [r['solution'] for r in rows] == [p.solution for p in generate(TINY, 'test')]


def test_seqio_tasks_yield_data_and_score(tfds_dir):
  seqio = pytest.importorskip('seqio')
  from ttc_jax.data import seqio_tasks
  pre, ev = seqio_tasks.register_arith_tasks(TINY, tfds_dir, prefix='test_arith')
  assert seqio_tasks.register_arith_tasks(TINY, tfds_dir, prefix='test_arith') == (pre, ev)
  vocab = seqio_tasks.CharVocabulary()
  tok = CharTokenizer()

  task = seqio.get_mixture_or_task(pre)
  exs = list(task.get_dataset({'targets': max_text_len(TINY)}, split='train',
                              shuffle=False).as_numpy_iterator())
  texts = sorted(vocab.decode(e['targets'].tolist()) for e in exs)
  assert texts == sorted(p.text for p in generate(TINY, 'train'))
  assert all(e['targets'][-1] == tok.eos_id for e in exs)
  assert exs[0]['targets'].tolist() == tok.encode(exs[0]['targets_pretokenized'].decode()) + [
      tok.eos_id]
  assert vocab.decode_tf(exs[0]['targets']).numpy().decode() == vocab.decode(exs[0]['targets'])

  task = seqio.get_mixture_or_task(ev)
  exs = list(task.get_dataset({'inputs': 40, 'targets': max_text_len(TINY)}, split='test',
                              shuffle=False).as_numpy_iterator())
  assert len(exs) == 10
  by_id = {p.id: p for p in generate(TINY, 'test')}
  e = exs[0]
  p = by_id[e['id'].decode()]
  assert vocab.decode(e['inputs'].tolist()) == p.prompt
  target = task.postprocess_fn(vocab.decode(e['targets'].tolist()), example=e, is_target=True)
  assert target == p.answer
  good = task.postprocess_fn(p.solution)
  bad = task.postprocess_fn(p.solution.replace(f'A:{p.answer}', f'A:{int(p.answer) + 1}'))
  junk = task.postprocess_fn('??')
  (metric,) = task.metric_fns
  assert metric([target], [good]) == {'accuracy': 1.0}
  assert metric([target], [bad]) == {'accuracy': 0.0}
  assert metric([target], [junk]) == {'accuracy': 0.0}
  assert metric([target] * 2, [good, bad]) == {'accuracy': 0.5}


def test_grader_and_oracle_never_raise_on_random_text():
  rng = np.random.default_rng(0)
  alphabet = list('0123456789+-*=?:;.,()QAS\n ') + ['A:', '\n', 'é', '\x00', '-' * 3]
  q = generate(TINY, 'test')[0]
  for _ in range(500):
    text = ''.join(rng.choice(alphabet, size=int(rng.integers(0, 40))))
    assert parse_answer(text) is None or isinstance(parse_answer(text), str)
    assert isinstance(is_correct(text, q.answer), bool)
    labels = step_correctness(q.question, text)
    assert all(isinstance(x, bool) for x in labels)
    assert isinstance(step_correctness(text, q.solution), list)
