"""Real benchmarks: MATH (the MATH-500 split of Lightman et al.) and GSM8K, as `Task`s.

Numpy only (plus math-verify for MATH grading): the tfds builders (`tfds_math`) and seqio
tasks (`seqio_math`) read the same files through these functions.

Data: JSON lines in a local directory (nothing is downloaded), by default $TTC_DATA_DIR, else
`../shared/data` beside the repository root:
  MATH   math500_test.jsonl (test, 500), math_train.jsonl (train, optional); PRM800K fields
         problem, solution, answer, subject, level, unique_id
  GSM8K  gsm8k_test.jsonl (test, 1319), gsm8k_train.jsonl (train, optional); fields
         question, answer ('<steps>\\n#### <final answer>')

Text format (few-shot, one step per line, as the paper's PRM800K-style policy):

  prompt:    <n_shots worked examples>'Problem:\\n<problem>\\n\\nSolution:\\n'
  solution:  '<step>\\n<step>\\n...The final answer is $\\\\boxed{<answer>}$.\\n'

A MATH solution's steps are its non-empty lines (paragraphs, display math and [asy] lines
alike); GSM8K's are its lines without the <<calculator>> annotations, the '#### x' line
becoming the boxed final line. A generation is cut where it starts a new 'Problem:' (a base
model continues the few-shot pattern), then graded:
  MATH   the last \\boxed{...} against the reference with math-verify (symbolic equivalence);
  GSM8K  the last \\boxed{...}, else '#### x', else the last number, compared numerically.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from ttc_jax.data.problems import ProblemSet
from ttc_jax.data.tokenizer import Tokenizer
from ttc_jax.model.config import ConfigError

KINDS = ('math', 'gsm8k')
SPLIT_FILES = {
    'math': {'test': 'math500_test.jsonl', 'train': 'math_train.jsonl'},
    'gsm8k': {'test': 'gsm8k_test.jsonl', 'train': 'gsm8k_train.jsonl'},
}
_PROBLEM_HEADER = 'Problem:\n'
_SOLUTION_HEADER = '\n\nSolution:\n'
_STOP = '\nProblem:'

# Worked examples for the few-shot prompt, written for this project (short, one step a line).
_SHOTS = {
    'math': [
        ('Find the domain of $\\sqrt{x - 2} + \\frac{1}{x - 5}$.',
         'The square root needs $x - 2 \\ge 0$, so $x \\ge 2$.\n'
         'The fraction needs $x \\ne 5$.\n'
         'So the domain is $[2, 5) \\cup (5, \\infty)$.',
         '[2,5)\\cup(5,\\infty)'),
        ('If $3x + 7 = 22$, what is $x^2$?',
         'Subtracting 7 gives $3x = 15$, so $x = 5$.\n'
         'Then $x^2 = 25$.',
         '25'),
        ('What is the probability that two fair coins both land heads? Express your answer as '
         'a common fraction.',
         'Each coin lands heads with probability $\\frac{1}{2}$, independently.\n'
         'So both land heads with probability $\\frac{1}{2} \\cdot \\frac{1}{2} = '
         '\\frac{1}{4}$.',
         '\\frac{1}{4}'),
        ('Simplify $\\sqrt{72}$.',
         'We have $72 = 36 \\cdot 2$.\n'
         'So $\\sqrt{72} = \\sqrt{36} \\cdot \\sqrt{2} = 6\\sqrt{2}$.',
         '6\\sqrt{2}'),
    ],
    'gsm8k': [
        ('Tom has 3 boxes with 12 pencils each. He gives away 10 pencils. How many pencils '
         'does he have left?',
         'Tom has 3 * 12 = 36 pencils.\nAfter giving away 10 he has 36 - 10 = 26 pencils.',
         '26'),
        ('A shirt costs $20 and is on sale for 25% off. What is the sale price in dollars?',
         'The discount is 20 * 0.25 = 5 dollars.\nThe sale price is 20 - 5 = 15 dollars.',
         '15'),
        ('Maya reads 15 pages a day. How many days does she need to read a 120-page book?',
         'She needs 120 / 15 = 8 days.',
         '8'),
        ('A farmer has 4 rows of 9 apple trees and 2 rows of 6 pear trees. How many trees '
         'does he have?',
         'He has 4 * 9 = 36 apple trees.\nHe has 2 * 6 = 12 pear trees.\n'
         'In total he has 36 + 12 = 48 trees.',
         '48'),
    ],
}


@dataclasses.dataclass(frozen=True)
class MathTaskConfig:
  """kind: 'math' (MATH-500) or 'gsm8k'.
  data_dir: directory of the JSON-lines files (None: $TTC_DATA_DIR, else ../shared/data
    beside the repository root).
  n_shots: worked examples in each prompt (0..4).
  max_new_tokens: tokens a generated solution may take (bounds max_text_len).
  """
  kind: str = 'math'
  data_dir: str | None = None
  n_shots: int = 4
  max_new_tokens: int = 1024

  def validate(self, key: str = 'task') -> 'MathTaskConfig':
    if self.kind not in KINDS:
      raise ConfigError(f'{key}.kind must be one of {KINDS}, got {self.kind!r}.')
    if not isinstance(self.n_shots, int) or not 0 <= self.n_shots <= len(_SHOTS[self.kind]):
      raise ConfigError(f'{key}.n_shots must be an integer in [0, {len(_SHOTS[self.kind])}], '
                        f'got {self.n_shots!r}.')
    if not isinstance(self.max_new_tokens, int) or self.max_new_tokens <= 0:
      raise ConfigError(f'{key}.max_new_tokens must be a positive integer, got '
                        f'{self.max_new_tokens!r}.')
    return self


def default_data_dir() -> Path:
  """$TTC_DATA_DIR, else `shared/data` beside the repository root (where CI puts it)."""
  if os.environ.get('TTC_DATA_DIR'):
    return Path(os.environ['TTC_DATA_DIR'])
  return Path(__file__).resolve().parents[3] / 'shared' / 'data'


def data_path(kind: str, split: str, data_dir: str | Path | None = None) -> Path:
  """The JSON-lines file of `split`; raises FileNotFoundError naming it when absent."""
  if split not in SPLIT_FILES[kind]:
    raise ValueError(f'{kind} has splits {tuple(SPLIT_FILES[kind])}, got {split!r}.')
  path = Path(data_dir or default_data_dir()) / SPLIT_FILES[kind][split]
  if not path.exists():
    raise FileNotFoundError(
        f'{path} does not exist: put the {kind} {split} split there (see '
        f'/work/shared/data/README.md for its source) or set task.data_dir / $TTC_DATA_DIR.')
  return path


# ----------------------------------------------------------------------------- formatting


def steps_of(text: str) -> list[str]:
  """Non-empty, stripped lines: the reasoning steps of a reference solution."""
  return [l.strip() for l in text.split('\n') if l.strip()]


def final_line(answer: str) -> str:
  return f'The final answer is $\\boxed{{{answer}}}$.'


def format_solution(steps: Sequence[str], answer: str) -> str:
  """One step a line, then the boxed final line; every line ends in '\\n'."""
  lines = list(steps)
  if not lines or '\\boxed' not in lines[-1]:
    lines.append(final_line(answer))
  return ''.join(l + '\n' for l in lines)


def format_problem(problem: str) -> str:
  return _PROBLEM_HEADER + problem.strip() + _SOLUTION_HEADER


def few_shot_prefix(kind: str, n_shots: int) -> str:
  return ''.join(format_problem(q) + format_solution(steps_of(s), a) + '\n'
                 for q, s, a in _SHOTS[kind][:n_shots])


@dataclasses.dataclass(frozen=True)
class MathProblem:
  """One benchmark problem; `prompt` includes the few-shot prefix."""
  id: str
  question: str
  prompt: str
  solution: str
  answer: str
  level: int          # MATH difficulty level 1..5 (0 for GSM8K)
  subject: str        # MATH subject ('' for GSM8K)

  @property
  def text(self) -> str:
    return self.prompt + self.solution


_CALC_RE = re.compile(r'<<[^<>]*>>')


def parse_record(kind: str, row: dict, index: int, split: str) -> dict:
  """A JSON-lines row -> {'id', 'question', 'steps', 'answer', 'level', 'subject'}."""
  if kind == 'math':
    level = row.get('level', 0)
    level = int(re.sub(r'\D', '', str(level)) or 0)   # PRM800K: 2; Hendrycks: 'Level 2'
    return {'id': row.get('unique_id') or f'math-{split}-{index:05d}',
            'question': row['problem'], 'steps': steps_of(row['solution']),
            'answer': row['answer'], 'level': level, 'subject': row.get('subject', '')}
  body, _, final = row['answer'].rpartition('####')
  return {'id': f'gsm8k-{split}-{index:05d}', 'question': row['question'],
          'steps': steps_of(_CALC_RE.sub('', body)), 'answer': final.strip().replace(',', ''),
          'level': 0, 'subject': ''}


@functools.lru_cache(maxsize=16)
def _read_records(kind: str, path: str) -> tuple[dict, ...]:
  out = []
  with open(path) as f:
    for i, line in enumerate(f):
      if line.strip():
        try:
          out.append(json.loads(line))
        except json.JSONDecodeError as e:
          raise ValueError(f'{path}:{i + 1}: not JSON ({e}).') from None
  return tuple(out)


def load_records(kind: str, split: str, data_dir=None, n: int | None = None) -> list[dict]:
  """The split's rows parsed with `parse_record`, in file order; the first `n` if given."""
  path = data_path(kind, split, data_dir)
  rows = _read_records(kind, str(path))
  rows = rows if n is None else rows[:n]
  try:
    return [parse_record(kind, r, i, split) for i, r in enumerate(rows)]
  except KeyError as e:
    raise ValueError(f'{path}: a row lacks field {e.args[0]!r}; is this a {kind} file?') from None


# ----------------------------------------------------------------------------- grading


def _last_boxed(text: str) -> str | None:
  """Contents of the last \\boxed{...} (or \\fbox{...}), braces balanced; None if none."""
  start = max(text.rfind('\\boxed'), text.rfind('\\fbox'))
  if start < 0:
    return None
  i = text.find('{', start)
  if i < 0:
    return None
  depth = 0
  for j in range(i, len(text)):
    if text[j] == '{':
      depth += 1
    elif text[j] == '}':
      depth -= 1
      if depth == 0:
        return text[i + 1:j].strip()
  return None


def cut_generation(text: str) -> str:
  """The generated solution up to where the model starts another few-shot problem."""
  return text.split(_STOP, 1)[0]


def parse_answer(text: str) -> str | None:
  """The final answer of a MATH-style generation: the last \\boxed{} content. Never raises."""
  if not isinstance(text, str):
    return None
  return _last_boxed(cut_generation(text))


def _timeout() -> int | None:
  # math-verify's timeouts use SIGALRM, which only the main thread may set.
  return 5 if threading.current_thread() is threading.main_thread() else None


def math_equivalent(predicted: str, reference: str) -> bool:
  """Whether two MATH answers (LaTeX, without $) are equal per math-verify. Never raises."""
  from math_verify import parse, verify   # sympy-heavy; only graders need it
  try:
    t = _timeout()
    gold = parse(f'${reference}$', parsing_timeout=t)
    pred = parse(f'${predicted}$', parsing_timeout=t)
    return bool(gold) and bool(pred) and bool(verify(gold, pred, timeout_seconds=t))
  except Exception:   # pylint: disable=broad-except  (a grader must never stop a study)
    return False


_NUM_RE = re.compile(r'-?\d[\d,]*(?:\.\d+)?|-?\.\d+')


def _to_number(s: str) -> float | None:
  s = s.replace(',', '').replace('$', '').replace('\\!', '').strip().rstrip('.')
  m = _NUM_RE.search(s)
  if not m:
    return None
  try:
    return float(m.group(0).replace(',', ''))
  except ValueError:
    return None


def parse_gsm8k_answer(text: str) -> str | None:
  """GSM8K final answer: last \\boxed{}, else the text after '####', else the last number."""
  if not isinstance(text, str):
    return None
  text = cut_generation(text)
  boxed = _last_boxed(text)
  if boxed is not None:
    return boxed
  if '####' in text:
    return text.rsplit('####', 1)[1].strip().split('\n')[0]
  nums = _NUM_RE.findall(text)
  return nums[-1] if nums else None


def gsm8k_equivalent(predicted: str, reference: str) -> bool:
  """Numeric equality (commas, $ and trailing '.' ignored; 1e-6 relative). Never raises."""
  a, b = _to_number(str(predicted)), _to_number(str(reference))
  return a is not None and b is not None and abs(a - b) <= 1e-6 * max(1.0, abs(b))


# ----------------------------------------------------------------------------- task object


class MathTask:
  """The `Task` interface (ttc_jax.data.task) over MATH-500 or GSM8K with any tokenizer.

  Splits are those with a file on disk (always 'test'). `max_prompt_len` / `max_text_len`
  (tokens, BOS and EOS included) are measured on the test split with this tokenizer;
  solutions are bounded by cfg.max_new_tokens.
  """
  step_delimiter = '\n'

  def __init__(self, cfg: MathTaskConfig | None = None, tokenizer: Tokenizer | None = None):
    self.cfg = (cfg or MathTaskConfig()).validate()
    if tokenizer is None:
      raise ConfigError('MathTask needs the policy\'s tokenizer (e.g. '
                        'ttc_jax.data.hf_tokenizer.load_tokenizer(imported_dir)).')
    self.tokenizer = tokenizer
    self._prefix = few_shot_prefix(self.cfg.kind, self.cfg.n_shots)

  @property
  def kind(self) -> str:
    return self.cfg.kind

  @property
  def splits(self) -> tuple[str, ...]:
    d = Path(self.cfg.data_dir or default_data_dir())
    return tuple(s for s, f in SPLIT_FILES[self.kind].items() if (d / f).exists())

  def _add_bos(self) -> bool:
    return getattr(self.tokenizer, 'add_bos', True)

  @functools.cached_property
  def max_prompt_len(self) -> int:
    return int(self.problem_set('test').lengths.max())

  @property
  def max_text_len(self) -> int:
    return self.max_prompt_len + self.cfg.max_new_tokens + 1

  def problems(self, split: str, n: int | None = None) -> list[MathProblem]:
    return [MathProblem(id=r['id'], question=r['question'],
                        prompt=self._prefix + format_problem(r['question']),
                        solution=format_solution(r['steps'], r['answer']), answer=r['answer'],
                        level=r['level'], subject=r['subject'])
            for r in load_records(self.kind, split, self.cfg.data_dir, n)]

  def problem_set(self, split: str, n: int | None = None) -> ProblemSet:
    """Prompts tokenised with this task's tokenizer (BOS first where the model uses one);
    meta columns 'level' (MATH difficulty 1..5, 0 for GSM8K) and 'subject'."""
    ps = self.problems(split, n)
    return ProblemSet.from_texts(
        [p.id for p in ps], [p.prompt for p in ps], [p.answer for p in ps], self.tokenizer,
        add_bos=self._add_bos(), questions=[p.question for p in ps],
        meta={'level': np.asarray([p.level for p in ps], np.int32),
              'subject': np.asarray([p.subject for p in ps], dtype=object).astype(str)})

  def train_texts(self, split: str = 'train', n: int | None = None) -> list[str]:
    """Prompt + solution per problem (no BOS/EOS), for fine-tuning the policy or verifiers."""
    return [p.text for p in self.problems(split, n)]

  def parse_answer(self, text: str) -> str | None:
    return parse_answer(text) if self.kind == 'math' else parse_gsm8k_answer(text)

  def is_correct(self, text: str, answer: str) -> bool:
    got = self.parse_answer(text)
    if got is None or not isinstance(answer, str):
      return False
    return (math_equivalent(got, answer) if self.kind == 'math'
            else gsm8k_equivalent(got, answer))
