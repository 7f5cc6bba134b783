"""Tokenizers. Every stage talks to a tokenizer through this small interface, so the embedded
character vocabulary and a Hugging Face tokenizer (real models) are interchangeable."""

from __future__ import annotations

import dataclasses
from typing import Protocol, Sequence

import numpy as np


class Tokenizer(Protocol):
  vocab_size: int
  pad_id: int
  bos_id: int
  eos_id: int
  step_ids: tuple[int, ...]    # token ids whose emission ends a reasoning step

  def encode(self, text: str) -> list[int]: ...
  def decode(self, ids: Sequence[int]) -> str: ...


# The embedded task's alphabet. Order is part of the checkpoint format: append, never reorder.
_SPECIALS = ('<pad>', '<bos>', '<eos>')
_CHARS = '0123456789+-*=?:;.,()QAS\n '
_BYTE_IDS = np.full(256, -1, np.int32)     # byte -> token id, -1 outside the alphabet
_BYTE_IDS[[ord(c) for c in _CHARS]] = np.arange(len(_CHARS)) + len(_SPECIALS)


@dataclasses.dataclass(frozen=True)
class CharTokenizer:
  """One token per character of a fixed alphabet, plus <pad>=0, <bos>=1, <eos>=2.

  The vocabulary is padded up to `vocab_size` (default 32) with unused ids so that matmul
  shapes stay round. Unknown characters raise: the task never produces them, so one in the
  input means the input is not this task's.
  """
  vocab_size: int = 32
  pad_id: int = 0
  bos_id: int = 1
  eos_id: int = 2

  def __post_init__(self):
    if self.vocab_size < len(_SPECIALS) + len(_CHARS):
      raise ValueError(f'CharTokenizer.vocab_size must be >= {len(_SPECIALS) + len(_CHARS)}, '
                       f'got {self.vocab_size}.')

  @property
  def step_ids(self) -> tuple[int, ...]:
    return (self.char_id('\n'),)

  def char_id(self, c: str) -> int:
    return len(_SPECIALS) + _CHARS.index(c)

  def encode(self, text: str) -> list[int]:
    return self.encode_many([text])[0].tolist()

  def encode_many(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(ids, lengths): every text's ids concatenated (int32) and each text's length (int64),
    by one table lookup over the joined bytes."""
    lengths = np.fromiter(map(len, texts), np.int64, len(texts))
    try:
      ids = _BYTE_IDS[np.frombuffer(''.join(texts).encode('ascii'), np.uint8)]
    except UnicodeEncodeError:
      ids = None
    if ids is None or (ids < 0).any():
      text = next(t for t in texts if any(c not in _CHARS for c in t))
      bad = sorted({c for c in text if c not in _CHARS})
      raise ValueError(f'CharTokenizer cannot encode characters {bad!r} in {text[:60]!r}')
    return ids, lengths

  def decode(self, ids: Sequence[int]) -> str:
    out = []
    for i in np.asarray(ids).tolist():
      if i == self.eos_id:
        break
      if len(_SPECIALS) <= i < len(_SPECIALS) + len(_CHARS):
        out.append(_CHARS[i - len(_SPECIALS)])
    return ''.join(out)
