"""seqio Tasks over the arithmetic task, for t5x/seqio-style pipelines.

Imports TensorFlow; nothing is registered on import. `register_arith_tasks(cfg, data_dir)`
registers (idempotently):

  '<prefix>_pretrain': {'targets': prompt + solution + EOS}        (LM pretraining text)
  '<prefix>_eval':     {'inputs': prompt, 'targets': solution + EOS} (generation + accuracy)

The source is a `seqio.FunctionDataSource` reading the tfds builder of `tfds_arith`: a
`seqio.TfdsDataSource` looks builders up by registered name and version only, and the task
knobs live in a BuilderConfig object (its name is a hash of the knobs), which a name string
cannot carry. Reading the builder ourselves keeps tfds as the one materialisation path.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import seqio
import tensorflow as tf

from ttc_jax.data import arith, tfds_arith
from ttc_jax.data.seqio_vocab import TokenizerVocabulary, claim_names
from ttc_jax.data.tokenizer import CharTokenizer


class CharVocabulary(TokenizerVocabulary):
  """`CharTokenizer` as a seqio Vocabulary (same ids: <pad>=0, <bos>=1, <eos>=2, then chars),
  with graph-mode encoding by a byte table instead of tf.py_function."""

  def __init__(self, tokenizer: CharTokenizer | None = None):
    super().__init__(tokenizer or CharTokenizer())
    # Byte -> id table for the graph-mode encoder; -1 marks characters outside the alphabet.
    table = np.full(256, -1, np.int32)
    for b in range(128):
      try:
        table[b] = self._tok.encode(chr(b))[0]
      except ValueError:
        pass
    self._byte_to_id = table
    # Specials and unused ids decode to '' (pad is dropped; eos is cut by seqio first).
    self._id_to_char = [self._tok.decode([i]) if i != self._tok.eos_id else ''
                        for i in range(self._tok.vocab_size)]

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    # The alphabet is ASCII, so bytes are characters; unknown bytes raise like `encode`.
    bytes_ = tf.cast(tf.io.decode_raw(s, tf.uint8), tf.int32)
    ids = tf.gather(tf.constant(self._byte_to_id), bytes_)
    with tf.control_dependencies([tf.debugging.assert_non_negative(
        ids, message='CharVocabulary cannot encode a character of the input')]):
      return tf.identity(ids)

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    chars = tf.gather(tf.constant(self._id_to_char), tf.clip_by_value(
        tf.cast(ids, tf.int32), 0, self._tok.vocab_size - 1))
    return tf.strings.reduce_join(chars, axis=-1)

  def __eq__(self, other) -> bool:
    return isinstance(other, CharVocabulary) and other._tok == self._tok

  def __hash__(self) -> int:
    return hash(self._tok)


def answer_postprocessor(output_or_target, example=None, is_target: bool = False):
  """Decoded solution text -> its final answer string ('' when there is none)."""
  del example, is_target
  if isinstance(output_or_target, bytes):
    output_or_target = output_or_target.decode('utf-8', errors='replace')
  return arith.parse_answer(output_or_target) or ''


def accuracy(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
  """Exact-match accuracy of postprocessed answers; an empty prediction never counts."""
  hits = [bool(p) and p == t for t, p in zip(targets, predictions, strict=True)]
  return {'accuracy': float(np.mean(hits)) if hits else 0.0}


def _dataset_fn(split: str, shuffle_files: bool, seed: int | None = None, *, cfg, data_dir):
  b = tfds_arith.builder(cfg, data_dir)
  return b.as_dataset(split=split, shuffle_files=shuffle_files,
                      read_config=tfds_arith.tfds.ReadConfig(shuffle_seed=seed))


@seqio.map_over_dataset
def _to_pretrain(ex):
  return {'targets': ex['prompt'] + ex['solution']}


@seqio.map_over_dataset
def _to_eval(ex):
  return {'inputs': ex['prompt'], 'targets': ex['solution'], 'answer': ex['answer'],
          'id': ex['id']}


_REGISTERED: dict[str, tuple] = {}


def register_arith_tasks(cfg: arith.ArithTaskConfig | None = None, data_dir: str | None = None,
                         prefix: str = 'ttc_arith') -> tuple[str, str]:
  """Registers the pretraining and evaluation Tasks; returns their names.

  Calling again with the same arguments is a no-op; with different ones it replaces the
  Tasks of the same names. The tfds dataset is prepared under `data_dir` on first read.
  """
  cfg = (cfg or arith.ArithTaskConfig()).validate()
  names = (f'{prefix}_pretrain', f'{prefix}_eval')
  key = (cfg, data_dir)
  if not claim_names(names, key, _REGISTERED):
    return names
  vocab = CharVocabulary()
  source = seqio.FunctionDataSource(
      dataset_fn=functools.partial(_dataset_fn, cfg=cfg, data_dir=data_dir),
      splits=arith.SPLITS,
      num_input_examples={s: cfg.split_size(s) for s in arith.SPLITS})
  seqio.TaskRegistry.add(
      names[0], source=source,
      preprocessors=[_to_pretrain, seqio.preprocessors.tokenize, seqio.preprocessors.append_eos],
      output_features={'targets': seqio.Feature(vocab, add_eos=True)})
  seqio.TaskRegistry.add(
      names[1], source=source,
      preprocessors=[_to_eval, seqio.preprocessors.tokenize, seqio.preprocessors.append_eos],
      output_features={'inputs': seqio.Feature(vocab, add_eos=False),
                       'targets': seqio.Feature(vocab, add_eos=True)},
      postprocess_fn=answer_postprocessor,
      metric_fns=[accuracy])
  for n in names:
    _REGISTERED[n] = key
  return names
