"""MATH-500 / GSM8K data: files, tfds builders, seqio tasks, graders, the Task object."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ttc_jax.data import math_tasks
from ttc_jax.data.hf_tokenizer import load_tokenizer
from ttc_jax.data.math_tasks import MathTask, MathTaskConfig

pytestmark = pytest.mark.skipif(
    not (math_tasks.default_data_dir() / 'math500_test.jsonl').exists(),
    reason=f'no benchmark data at {math_tasks.default_data_dir()} (set TTC_DATA_DIR)')


@pytest.fixture(scope='module')
def tokenizer(tmp_path_factory):
  """A byte-level BPE tokenizer.json built offline (as Llama-3 / Qwen2 ship)."""
  import tokenizers as tk
  d = tmp_path_factory.mktemp('tok')
  tok = tk.Tokenizer(tk.models.BPE())
  tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = tk.decoders.ByteLevel()
  lines = (math_tasks.default_data_dir() / 'math500_test.jsonl').read_text().splitlines()
  texts = [r['problem'] + r['solution'] for r in map(json.loads, lines[:50])]
  tok.train_from_iterator(texts, tk.trainers.BpeTrainer(
      vocab_size=600, special_tokens=['<s>', '</s>', '<pad>'], show_progress=False,
      initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet()))
  tok.save(str(d / 'tokenizer.json'))
  (d / 'tokenizer_config.json').write_text(json.dumps(
      {'bos_token': '<s>', 'eos_token': '</s>', 'pad_token': '<pad>'}))
  return load_tokenizer(d)


@pytest.mark.parametrize('kind, rows', [('math', 500), ('gsm8k', 1319)])
def test_task_reads_shipped_split(tokenizer, kind, rows):
  task = MathTask(MathTaskConfig(kind), tokenizer)
  ps = task.problem_set('test')
  assert len(ps) == rows and len(set(ps.ids)) == rows
  assert (ps.prompts[:, 0] == tokenizer.bos_id).all()
  assert task.max_prompt_len == ps.lengths.max() < task.max_text_len
  p = task.problems('test', 3)[2]
  assert p.prompt.count('Problem:\n') == 5 and p.prompt.endswith('\n\nSolution:\n')
  assert tokenizer.decode(ps.prompts[2, 1:ps.lengths[2]]) == p.prompt
  # Steps are lines; the reference solution grades as correct with the task's own grader.
  assert p.solution.endswith('\n') and '' not in p.solution[:-1].split('\n')
  assert all(task.is_correct(q.solution, q.answer) for q in task.problems('test', 50))
  if kind == 'math':
    assert set(np.unique(ps.meta['level'])) == {1, 2, 3, 4, 5}
    assert ps.ids[0] == 'test/precalculus/807.json'
  else:
    assert ps.answers[0] == '18' and '<<' not in task.problems('test', 1)[0].solution


@pytest.mark.parametrize('kind, rows', [('math', 500), ('gsm8k', 1319)])
def test_tfds_builder_matches_direct_path(tmp_path, tokenizer, kind, rows):
  from ttc_jax.data import tfds_math
  task = MathTask(MathTaskConfig(kind), tokenizer)
  examples = tfds_math.load_examples(kind, 'test', data_dir=str(tmp_path))
  assert len(examples) == rows
  direct = task.problems('test', 5)
  assert [e['solution'] for e in examples[:5]] == [p.solution for p in direct]
  ps = tfds_math.problem_set_from_tfds(task, 'test', data_dir=str(tmp_path), n=20)
  want = task.problem_set('test', 20)
  np.testing.assert_array_equal(ps.prompts, want.prompts)
  np.testing.assert_array_equal(ps.answers, want.answers)


def test_seqio_eval_task(tmp_path, tokenizer):
  import seqio
  from ttc_jax.data import seqio_math
  task = MathTask(MathTaskConfig('gsm8k', n_shots=1), tokenizer)
  _, eval_name = seqio_math.register_math_tasks(task, data_dir=str(tmp_path))
  ds = seqio.get_mixture_or_task(eval_name).get_dataset(
      sequence_length=None, split='test', shuffle=False)
  ex = next(iter(ds.as_numpy_iterator()))
  assert ex['targets'][-1] == tokenizer.eos_id
  assert tokenizer.decode(ex['inputs']) in {p.prompt for p in task.problems('test')}
  t = seqio.get_mixture_or_task(eval_name)
  answer = t.postprocess_fn(tokenizer.decode(ex['targets']))
  assert t.metric_fns[0]([answer], [answer])['accuracy'] == 1.0


# Reference answers from MATH-500 and equivalent / different ways to write them.
_EQUIVALENT = [
    ('\\left( 3, \\frac{\\pi}{2} \\right)', '(3,\\frac{\\pi}{2})'),
    ('\\frac{14}{3}', '14/3'),
    ('p - q', '-q+p'),
    ('\\text{Evelyn}', 'Evelyn'),
    ('6 - 5i', '-5i+6'),
    ('9', '9.0'),
    ('90^\\circ', '90'),
    ('\\frac{3}{56}', '\\dfrac{3}{56}'),
    ('11\\sqrt2', '11\\sqrt{2}'),
]
_DIFFERENT = [
    ('\\frac{14}{3}', '\\frac{13}{3}'),
    ('p - q', 'p + q'),
    ('\\left( 3, \\frac{\\pi}{2} \\right)', '(3,\\pi)'),
    ('\\text{Evelyn}', 'Bob'),
    ('6 - 5i', '6+5i'),
    ('1,-2', '1,2'),
    ('2220', '222'),
]


@pytest.mark.parametrize('ref, pred', _EQUIVALENT)
def test_math_grader_accepts_equivalent(ref, pred):
  text = f'Some work.\nThe final answer is $\\boxed{{{pred}}}$.\n\nProblem:\nNext $\\boxed{{0}}$'
  assert MathTask.parse_answer.__get__(_math_task())(text) == pred
  assert _math_task().is_correct(text, ref)


@pytest.mark.parametrize('ref, pred', _DIFFERENT)
def test_math_grader_rejects_different(ref, pred):
  assert not _math_task().is_correct(f'$\\boxed{{{pred}}}$', ref)


def test_graders_never_raise_and_gsm8k_is_numeric():
  t = _math_task()
  for bad in ['', 'no answer', '\\boxed{', '\\boxed{\\frac{1}{}', None]:
    assert t.is_correct(bad, '3') is False
  g = MathTask(MathTaskConfig('gsm8k'), _Tok())
  assert g.is_correct('So 1,000 in total.\n#### 1,000', '1000')
  assert g.is_correct('She makes $18.', '18')
  assert g.is_correct('The final answer is $\\boxed{18.0}$.', '18')
  assert not g.is_correct('The final answer is $\\boxed{17}$.', '18')
  assert not g.is_correct('#### 18\n\nProblem:\nwhat about 19', '19')


class _Tok:
  """A stand-in tokenizer for grader-only tests (graders never tokenise)."""
  vocab_size, pad_id, bos_id, eos_id, step_ids = 256, 0, 1, 2, (10,)

  def encode(self, text):
    return list(text.encode())

  def decode(self, ids):
    return bytes(ids).decode()


def _math_task():
  return MathTask(MathTaskConfig('math'), _Tok())
