"""What the seqio modules share: a `Tokenizer` (ttc_jax.data.tokenizer) as a seqio Vocabulary
with the same ids, and idempotent Task registration.

Imports TensorFlow: only the seqio modules import this.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import seqio
import tensorflow as tf


class TokenizerVocabulary(seqio.Vocabulary):
  """Any `Tokenizer` (the embedded task's, or `hf_tokenizer.HFTokenizer`) as a seqio
  Vocabulary: same ids, same special tokens.

  The graph-mode encoder calls the Python tokenizer through tf.py_function (the `tokenizers`
  library has no TensorFlow ops); fine for evaluation-sized datasets. Subclasses with a
  table-driven tokenizer override `_encode_tf` / `_decode_tf` with graph ops.
  """

  def __init__(self, tokenizer):
    self._tok = tokenizer
    super().__init__(extra_ids=0)
  @property
  def eos_id(self) -> int:
    return self._tok.eos_id

  @property
  def bos_id(self) -> int:
    return self._tok.bos_id

  @property
  def pad_id(self) -> int:
    return self._tok.pad_id

  @property
  def unk_id(self) -> None:
    return None

  @property
  def _base_vocab_size(self) -> int:
    return self._tok.vocab_size

  def _encode(self, s: str) -> Sequence[int]:
    return self._tok.encode(s)

  def _decode(self, ids) -> str:
    return self._tok.decode(ids)

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    ids = tf.py_function(lambda x: np.asarray(self._tok.encode(x.numpy().decode()), np.int32),
                         [s], tf.int32)
    ids.set_shape([None])
    return ids

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    text = tf.py_function(lambda x: self._tok.decode(x.numpy().tolist()), [ids], tf.string)
    text.set_shape([])
    return text

  def __eq__(self, other) -> bool:
    return type(other) is type(self) and other._tok is self._tok

  def __hash__(self) -> int:
    return id(self._tok)


def claim_names(names, key, registered: dict) -> bool:
  """Whether `names` must be (re)registered for `key`: False when they are registered
  already with that key (`registered`: name -> key, which the caller records after adding);
  otherwise stale registrations of those names are removed first."""
  if all(registered.get(n) == key for n in names) and all(
      n in seqio.TaskRegistry.names() for n in names):
    return False
  for n in names:
    if n in seqio.TaskRegistry.names():
      seqio.TaskRegistry.remove(n)
  return True
