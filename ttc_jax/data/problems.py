"""`ProblemSet`: the plain-array form of a split that every stage after the data layer reads.
It needs numpy only (no TensorFlow)."""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from ttc_jax.data.tokenizer import Tokenizer


@dataclasses.dataclass(frozen=True)
class ProblemSet:
  """P problems. `prompts` is right-padded with the tokenizer's pad id.

  ids:       [P] str, stable problem identifiers
  prompts:   [P, Lmax] int32 prompt tokens (question, ready for the model to continue)
  lengths:   [P] int32 prompt lengths in tokens
  answers:   [P] str, the reference final answers
  questions: [P] str, the question texts (for reports and revision contexts)
  meta:      column name -> [P] array (e.g. the generator's difficulty knobs)
  """
  ids: np.ndarray
  prompts: np.ndarray
  lengths: np.ndarray
  answers: np.ndarray
  questions: np.ndarray
  meta: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    p = len(self.ids)
    for name in ('prompts', 'lengths', 'answers', 'questions'):
      if len(getattr(self, name)) != p:
        raise ValueError(f'ProblemSet.{name} has {len(getattr(self, name))} rows, ids has {p}.')

  def __len__(self) -> int:
    return len(self.ids)

  def take(self, index) -> 'ProblemSet':
    index = np.asarray(index)
    return ProblemSet(self.ids[index], self.prompts[index], self.lengths[index],
                      self.answers[index], self.questions[index],
                      {k: v[index] for k, v in self.meta.items()})

  @classmethod
  def from_texts(cls, ids: Sequence[str], prompts: Sequence[str], answers: Sequence[str],
                 tokenizer: Tokenizer, *, add_bos: bool = True, questions=None,
                 meta: dict | None = None) -> 'ProblemSet':
    toks = [([tokenizer.bos_id] if add_bos else []) + tokenizer.encode(p) for p in prompts]
    lmax = max((len(t) for t in toks), default=1)
    arr = np.full((len(toks), lmax), tokenizer.pad_id, np.int32)
    for i, t in enumerate(toks):
      arr[i, :len(t)] = t
    return cls(np.asarray(ids, dtype=object).astype(str), arr,
               np.asarray([len(t) for t in toks], np.int32),
               np.asarray(answers, dtype=object).astype(str),
               np.asarray(questions if questions is not None else prompts,
                          dtype=object).astype(str),
               {k: np.asarray(v) for k, v in (meta or {}).items()})


Grader = Callable[[str, str], bool]
