"""`Task`: what every later stage needs from a task, so the embedded arithmetic task and a
MATH/GSM8K-style task are interchangeable."""

from __future__ import annotations

from typing import Protocol

from ttc_jax.data.problems import ProblemSet
from ttc_jax.data.tokenizer import Tokenizer


class Task(Protocol):
  """A reasoning task: problems, training text and a grader.

  Solutions are sequences of steps, each ending in `step_delimiter`; the grader reads the
  final answer from a generated solution. `max_text_len` is in tokens, counting one BOS before
  the prompt and one EOS after the solution, so configs can check that it fits the context.
  """
  tokenizer: Tokenizer
  step_delimiter: str

  @property
  def max_text_len(self) -> int: ...

  def problem_set(self, split: str, n: int | None = None) -> ProblemSet: ...

  def train_texts(self, split: str) -> list[str]: ...

  def parse_answer(self, text: str) -> str | None: ...

  def is_correct(self, text: str, answer: str) -> bool: ...
