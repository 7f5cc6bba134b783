"""The embedded multi-step arithmetic reasoning task: generator, grader and step oracle.

Numpy only (no TensorFlow), so every stage can use it on any machine.

Text format (character level, encodable by `CharTokenizer`):

  prompt:    'Q:7+5*3-4\\n'
  solution:  '7+5=12\\n12*3=36\\n36-4=32\\nA:32\\n'      (the trainer appends EOS)

Operations apply strictly LEFT TO RIGHT, without operator precedence: 7+5*3-4 means
((7+5)*3)-4 = 32. Each step line is `<state><op><operand>=<new state>`; the last line is
`A:<integer>`. Question operands are positive integers, so a '-' right after a state is
always the operator, and a '-' at the start of a line (or right after 'A:') is always a sign:
the step regex below is unambiguous. Intermediate values stay in [-max_value, max_value]
(in [0, max_value] unless `allow_negative`): operands that would leave that range are
resampled, which keeps every line short and `max_text_len` a true bound.

Difficulty is driven by the chain length (n_ops, cycling over [min_ops, max_ops], so each
split has equally many problems of each length) and operand sizes; '*' steps are the hard ones
for small models (multi-digit products), so they are rarer by default.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import numpy as np

from ttc_jax.data.problems import ProblemSet
from ttc_jax.data.tokenizer import CharTokenizer, Tokenizer
from ttc_jax.model.config import ConfigError

SPLITS = ('train', 'validation', 'test')
_SPLIT_INDEX = {s: i for i, s in enumerate(SPLITS)}
_OPS = '+-*'
# Eval splits are deduplicated and held out from train, which needs redraws when the space of
# short questions is small; this many misses in a row means it is exhausted.
_MAX_MISSES = 20_000
_STEP_RE = re.compile(r'(-?\d+)([-+*])(\d+)=(-?\d+)')
_INT_RE = re.compile(r'-?\d+')


@dataclasses.dataclass(frozen=True)
class ArithTaskConfig:
  """Difficulty knobs and split sizes of the arithmetic task.

  min_ops, max_ops: chain length (number of operations) per problem; problem j of a split has
    min_ops + j % (max_ops - min_ops + 1) operations.
  min_operand, max_operand: operands are uniform integers in [min_operand, max_operand].
  ops: the operator alphabet, a subset of '+-*'.
  op_weights: relative sampling weight of each operator in `ops` (same length); None=uniform.
  max_value: every intermediate value v satisfies |v| <= max_value (operands are resampled).
  allow_negative: whether intermediate values may go below 0.
  train_size, validation_size, test_size: problems per split (test 500 as the paper's MATH).
  seed: the root seed; each split derives its own stream from it.
  """
  min_ops: int = 1
  max_ops: int = 6
  min_operand: int = 1
  max_operand: int = 9
  ops: str = '+-*'
  op_weights: tuple[float, ...] | None = (0.4, 0.4, 0.2)
  max_value: int = 999
  allow_negative: bool = False
  train_size: int = 20_000
  validation_size: int = 500
  test_size: int = 500
  seed: int = 0

  def validate(self, key: str = 'task') -> 'ArithTaskConfig':
    """Raises ConfigError naming `key.field` for the first impossible value; returns self."""
    for f in ('min_ops', 'max_ops', 'min_operand', 'max_operand', 'max_value', 'train_size',
              'validation_size', 'test_size', 'seed'):
      v = getattr(self, f)
      if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
        raise ConfigError(f'{key}.{f} must be an integer, got {v!r}.')
    for f in ('min_ops', 'min_operand', 'max_value'):
      if getattr(self, f) < 1:
        raise ConfigError(f'{key}.{f} must be >= 1, got {getattr(self, f)}.')
    for f in ('train_size', 'validation_size', 'test_size', 'seed'):
      if getattr(self, f) < 0:
        raise ConfigError(f'{key}.{f} must be >= 0, got {getattr(self, f)}.')
    if self.max_ops < self.min_ops:
      raise ConfigError(f'{key}.max_ops must be >= {key}.min_ops, got max_ops={self.max_ops} '
                        f'< min_ops={self.min_ops}; raise max_ops or lower min_ops.')
    if self.max_operand < self.min_operand:
      raise ConfigError(f'{key}.max_operand must be >= {key}.min_operand, got max_operand='
                        f'{self.max_operand} < min_operand={self.min_operand}.')
    if self.max_value < self.max_operand:
      raise ConfigError(f'{key}.max_value must be >= {key}.max_operand (the first operand is a '
                        f'value), got max_value={self.max_value} < max_operand='
                        f'{self.max_operand}.')
    if (not isinstance(self.ops, str) or not self.ops or len(set(self.ops)) != len(self.ops)
        or any(c not in _OPS for c in self.ops)):
      raise ConfigError(f"{key}.ops must be a non-empty string of distinct operators from "
                        f"'{_OPS}', got {self.ops!r}.")
    if self.op_weights is not None:
      try:
        w = tuple(float(x) for x in self.op_weights)
      except (TypeError, ValueError):
        raise ConfigError(f'{key}.op_weights must be a sequence of numbers, got '
                          f'{self.op_weights!r}.') from None
      if len(w) != len(self.ops):
        raise ConfigError(f'{key}.op_weights must have one weight per operator in {key}.ops='
                          f'{self.ops!r} ({len(self.ops)}), got {len(w)}: {w!r}; or set it '
                          f'to None for uniform weights.')
      if any(not np.isfinite(x) or x < 0 for x in w) or sum(w) <= 0:
        raise ConfigError(f'{key}.op_weights must be finite, >= 0 and not all 0, got {w!r}.')
    return self

  def op_probs(self) -> np.ndarray:
    """[len(ops)] float64 operator probabilities."""
    w = np.ones(len(self.ops)) if self.op_weights is None else np.asarray(self.op_weights, float)
    return w / w.sum()

  def split_size(self, split: str) -> int:
    return getattr(self, f'{_check_split(split)}_size')


@dataclasses.dataclass(frozen=True)
class Problem:
  """One generated problem. `text` = prompt + solution is the LM training string."""
  id: str
  question: str        # '7+5*3-4'
  prompt: str          # 'Q:7+5*3-4\n'
  solution: str        # '7+5=12\n12*3=36\n36-4=32\nA:32\n'
  answer: str          # '32'
  n_ops: int
  operands: tuple[int, ...]   # n_ops + 1 operands, in question order
  ops: str                    # n_ops operators, in question order
  max_abs_value: int          # largest |intermediate value| along the chain

  @property
  def text(self) -> str:
    return self.prompt + self.solution

  @property
  def n_mul(self) -> int:
    return self.ops.count('*')


def _check_split(split: str) -> str:
  if split not in _SPLIT_INDEX:
    raise ValueError(f'split must be one of {SPLITS}, got {split!r}.')
  return split


def _apply(a: int, op: str, b: int) -> int:
  if op == '+':
    return a + b
  if op == '-':
    return a - b
  return a * b


def _digits(x: int) -> int:
  return len(str(abs(int(x))))


def max_text_len(cfg: ArithTaskConfig) -> int:
  """Upper bound in tokens on BOS + prompt + solution + EOS for any problem of `cfg`."""
  d_operand = _digits(cfg.max_operand)
  d_value = _digits(cfg.max_value) + int(cfg.allow_negative)   # a '-' sign
  prompt = 2 + d_operand + cfg.max_ops * (1 + d_operand) + 1      # 'Q:' a (op b)* '\n'
  step = d_value + 1 + d_operand + 1 + d_value + 1                # v op b '=' v '\n'
  answer = 2 + d_value + 1                                        # 'A:' v '\n'
  return 1 + prompt + cfg.max_ops * step + answer + 1


def max_prompt_len(cfg: ArithTaskConfig) -> int:
  """Upper bound in tokens on BOS + prompt."""
  d_operand = _digits(cfg.max_operand)
  return 1 + 2 + d_operand + cfg.max_ops * (1 + d_operand) + 1


def _format(index: int, split: str, operands: Sequence[int], ops: str) -> Problem:
  question = str(operands[0]) + ''.join(f'{o}{b}' for o, b in zip(ops, operands[1:]))
  v, lines, peak = operands[0], [], abs(operands[0])
  for o, b in zip(ops, operands[1:]):
    w = _apply(v, o, b)
    lines.append(f'{v}{o}{b}={w}')
    v, peak = w, max(peak, abs(w))
  lines.append(f'A:{v}')
  return Problem(id=f'arith-{split}-{index:06d}', question=question, prompt=f'Q:{question}\n',
                 solution=''.join(l + '\n' for l in lines), answer=str(v), n_ops=len(ops),
                 operands=tuple(int(x) for x in operands), ops=ops, max_abs_value=int(peak))


def _draw_chain(cfg: ArithTaskConfig, rng: np.random.Generator, probs: np.ndarray,
                cdf: np.ndarray, n_ops: int):
  """One (operands, ops) chain, or None when a dead end was reached (caller redraws).
  cdf: the normalised cumulative sum of probs (see `_stream`)."""
  lo_v = -cfg.max_value if cfg.allow_negative else 0
  v = int(rng.integers(cfg.min_operand, cfg.max_operand + 1))
  operands, ops = [v], []
  for _ in range(n_ops):
    # Rejection sampling = sampling from the weights restricted to in-range steps; the few
    # tries bound the cost, the exhaustive fallback keeps it exact when most steps overflow.
    for _ in range(16):
      o = cfg.ops[int(cdf.searchsorted(rng.random(), side='right'))]
      b = int(rng.integers(cfg.min_operand, cfg.max_operand + 1))
      w = _apply(v, o, b)
      if lo_v <= w <= cfg.max_value:
        break
    else:
      cands = [(i, b) for i, o in enumerate(cfg.ops)
               for b in range(cfg.min_operand, cfg.max_operand + 1)
               if lo_v <= _apply(v, o, b) <= cfg.max_value and probs[i] > 0]
      if not cands:
        return None
      p = np.asarray([probs[i] for i, _ in cands])
      i, b = cands[int(rng.choice(len(cands), p=p / p.sum()))]
      o, w = cfg.ops[i], _apply(v, cfg.ops[i], b)
    operands.append(b)
    ops.append(o)
    v = w
  return operands, ''.join(ops)


def _stream(cfg: ArithTaskConfig, split: str, n: int, exclude: frozenset[str],
            unique: bool) -> list[Problem]:
  # One independent stream per split, derived from (seed, split) only: a split's problems
  # never depend on another split's size, and `n` only takes a prefix.
  rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, _SPLIT_INDEX[split], 0x7a11]))
  probs = cfg.op_probs()
  # `rng.choice(len(ops), p=probs)` is a search of one uniform draw in the weights' CDF: the
  # same draws from the same stream, without choice's ~7 us of argument checks per call.
  cdf = np.cumsum(probs)
  cdf /= cdf[-1]
  out, seen, misses = [], set(), 0
  while len(out) < n:
    # n_ops cycles over [min_ops, max_ops] by output index: every split is exactly stratified
    # by chain length (the main difficulty axis), and rejected draws keep their length.
    n_ops = cfg.min_ops + len(out) % (cfg.max_ops - cfg.min_ops + 1)
    chain = _draw_chain(cfg, rng, probs, cdf, n_ops)
    p = None if chain is None else _format(len(out), split, *chain)
    if p is None or p.question in exclude or (unique and p.question in seen):
      misses += 1
      if misses > _MAX_MISSES:
        raise ConfigError(
            f'task: could not draw a{" new" if unique else ""} {split} question with {n_ops} '
            f'operations held out from the evaluation splits in {_MAX_MISSES} tries (problem '
            f'{len(out)} of {n}): there are too few such questions. Raise task.min_ops, '
            f'task.max_operand or task.max_value, or lower task.test_size / '
            f'task.validation_size.')
      continue
    misses = 0
    seen.add(p.question)
    out.append(p)
  return out


def generate(cfg: ArithTaskConfig, split: str, n: int | None = None) -> list[Problem]:
  """The first `n` (default: the configured split size) problems of `split`, deterministic.

  Same config + split gives identical problems. Test questions are distinct; validation
  questions are distinct and not in test; train questions (repeats allowed, it is a training
  stream) are never in validation or test. Ids are 'arith-<split>-<index>'.
  """
  cfg.validate()
  size = cfg.split_size(split)
  n = size if n is None else int(n)
  if not 0 <= n <= size:
    raise ValueError(f'n must be in [0, task.{split}_size={size}], got {n}.')
  if split == 'test':
    return _stream(cfg, 'test', n, frozenset(), unique=True)
  test = frozenset(p.question for p in _stream(cfg, 'test', cfg.test_size, frozenset(), True))
  if split == 'validation':
    return _stream(cfg, 'validation', n, test, unique=True)
  val = _stream(cfg, 'validation', cfg.validation_size, test, unique=True)
  return _stream(cfg, 'train', n, test | {p.question for p in val}, unique=False)


def pretrain_texts(cfg: ArithTaskConfig, split: str, n: int | None = None) -> list[str]:
  """Prompt + solution per problem, without BOS/EOS (the LM trainer adds those)."""
  return [p.text for p in generate(cfg, split, n)]


def problems_to_set(problems: Sequence[Problem], tokenizer: Tokenizer) -> ProblemSet:
  """ProblemSet with BOS + prompt tokens and meta columns n_ops, n_mul, max_abs_value,
  max_operand (the largest operand of each question)."""
  return ProblemSet.from_texts(
      [p.id for p in problems], [p.prompt for p in problems], [p.answer for p in problems],
      tokenizer, add_bos=True, questions=[p.question for p in problems],
      meta={'n_ops': np.asarray([p.n_ops for p in problems], np.int32),
            'n_mul': np.asarray([p.n_mul for p in problems], np.int32),
            'max_abs_value': np.asarray([p.max_abs_value for p in problems], np.int32),
            'max_operand': np.asarray([max(p.operands) for p in problems], np.int32)})


def problem_set(cfg: ArithTaskConfig, split: str, tokenizer: Tokenizer | None = None,
                n: int | None = None) -> ProblemSet:
  """The split as a ProblemSet (see `problems_to_set`)."""
  return problems_to_set(generate(cfg, split, n), tokenizer or CharTokenizer())


# ----------------------------------------------------------------------------- grading


def _canonical_int(s: str) -> str | None:
  """'-007' -> '-7', '-0' -> '0'; None unless s is an optional '-' then digits."""
  if not _INT_RE.fullmatch(s):
    return None
  neg, digits = s.startswith('-'), s.lstrip('-').lstrip('0') or '0'
  return '-' + digits if neg and digits != '0' else digits


def parse_answer(text: str) -> str | None:
  """The final answer of a generated solution, canonicalised ('A:032' -> '32'), or None.

  Rule: the FIRST line that starts with 'A:' is the answer line (the model commits to it;
  whatever it writes afterwards is ignored). Its remainder, stripped of spaces, must be an
  integer, else None. No 'A:' line, or a non-string input, gives None. Never raises.
  """
  if not isinstance(text, str):
    return None
  for line in text.split('\n'):
    line = line.strip(' ')
    if line.startswith('A:'):
      return _canonical_int(line[2:].strip(' '))
  return None


def is_correct(text: str, answer: str) -> bool:
  """Whether the parsed final answer of `text` equals the reference `answer`. Never raises."""
  got = parse_answer(text)
  ref = _canonical_int(answer.strip(' ')) if isinstance(answer, str) else None
  return got is not None and got == ref


def parse_question(question: str) -> tuple[list[int], str] | None:
  """'7+5*3-4' or 'Q:7+5*3-4\n' -> ([7, 5, 3, 4], '+*-'); None if malformed."""
  if not isinstance(question, str):
    return None
  q = question.strip().removeprefix('Q:').strip()
  m = re.fullmatch(r'(\d{1,40})((?:[-+*]\d{1,40})*)', q)
  if not m:
    return None
  rest = re.findall(r'([-+*])(\d+)', m.group(2))
  return [int(m.group(1))] + [int(b) for _, b in rest], ''.join(o for o, _ in rest)


def step_correctness(question: str, solution_text: str, *,
                     cumulative: bool = True) -> list[bool]:
  """Oracle per-step labels of a (possibly partial) generated solution.

  `question` is the question ('7+5*3-4') or the prompt ('Q:7+5*3-4\\n'). The solution is
  split on '\\n'; a trailing empty piece (text ending in '\\n') is not a step, so the result
  has one entry per line written so far, the last one possibly unfinished.

  Step i < n_ops is locally right when it is exactly `<s><op_i><b_i>=<s op_i b_i>` where op_i,
  b_i are the question's i-th operation and s is the previous line's result (the first
  operand for i = 0). Line n_ops is locally right when it is `A:<previous line's result>`.
  Any other line (extra steps, text after the answer, garbage) is wrong.

  cumulative=True (the oracle PRM): step i is True iff steps 0..i are all locally right, i.e.
    the prefix is still on the one correct path; one mistake makes every later step False.
  cumulative=False: the local check alone, so a step that correctly continues from a wrong
    earlier result is True.
  Returns [] for an unparseable question or empty solution; never raises.
  """
  if not isinstance(question, str) or not isinstance(solution_text, str):
    return []
  parsed = parse_question(question)
  lines = solution_text.split('\n')
  if lines and lines[-1] == '':
    lines = lines[:-1]
  if parsed is None:
    return [False] * len(lines)
  operands, ops = parsed
  out, prev, ok_so_far = [], operands[0], True
  for i, line in enumerate(lines):
    ok, result = False, None
    if i < len(ops):
      m = _STEP_RE.fullmatch(line)
      # Length cap: no real step is that long, and int() refuses > 4300 digits.
      if m and all(_canonical_int(m.group(g)) == m.group(g) and len(m.group(g)) <= 40
                   for g in (1, 3, 4)):
        a, o, b, w = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
        result = w
        ok = a == prev and o == ops[i] and b == operands[i + 1] and w == _apply(a, o, b)
    elif i == len(ops):
      ok = line == f'A:{prev}'
    ok_so_far = ok_so_far and ok
    out.append(ok_so_far if cumulative else ok)
    # Local mode continues from what the model wrote, so later steps are judged on their own.
    if result is not None:
      prev = result
  return out


# ----------------------------------------------------------------------------- task object


class ArithTask:
  """The `Task` interface (see ttc_jax.data.task) over the arithmetic generator."""
  step_delimiter = '\n'

  def __init__(self, cfg: ArithTaskConfig | None = None, tokenizer: Tokenizer | None = None):
    self.cfg = (cfg or ArithTaskConfig()).validate()
    self.tokenizer = tokenizer or CharTokenizer()

  @property
  def max_text_len(self) -> int:
    return max_text_len(self.cfg)

  @property
  def max_prompt_len(self) -> int:
    return max_prompt_len(self.cfg)

  def problems(self, split: str, n: int | None = None) -> list[Problem]:
    return generate(self.cfg, split, n)

  def problem_set(self, split: str, n: int | None = None) -> ProblemSet:
    return problem_set(self.cfg, split, self.tokenizer, n)

  def train_texts(self, split: str = 'train', n: int | None = None) -> list[str]:
    return pretrain_texts(self.cfg, split, n)

  def parse_answer(self, text: str) -> str | None:
    return parse_answer(text)

  def is_correct(self, text: str, answer: str) -> bool:
    return is_correct(text, answer)

  def step_correctness(self, question: str, solution_text: str, *,
                       cumulative: bool = True) -> list[bool]:
    return step_correctness(question, solution_text, cumulative=cumulative)
