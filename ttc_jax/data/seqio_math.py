"""seqio Tasks over MATH-500 / GSM8K (the `tfds_math` builders), with a Hugging Face tokenizer.

Imports TensorFlow; nothing is registered on import. `register_math_tasks(task, ...)`
registers (idempotently), for a `math_tasks.MathTask` (its kind, shots and tokenizer):

  '<prefix>_train': {'targets': few-shot prompt + solution + EOS}   (fine-tuning text)
  '<prefix>_eval':  {'inputs': few-shot prompt, 'targets': solution + EOS}
                    postprocessed to the final answer; metric: accuracy with the task's grader
                    (math-verify for MATH, numeric for GSM8K).

Steps are the solution's lines ('\\n'), as in the direct path.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import seqio
import tensorflow as tf

from ttc_jax.data import math_tasks, tfds_math
from ttc_jax.data.seqio_vocab import TokenizerVocabulary, claim_names


# Kept under its old name: the MATH/GSM8K tasks use the policy's Hugging Face tokenizer.
HFVocabulary = TokenizerVocabulary


def _dataset_fn(split: str, shuffle_files: bool, seed: int | None = None, *, kind, manual_dir,
                data_dir):
  b = tfds_math.builder(kind, manual_dir, data_dir)
  return b.as_dataset(split=split, shuffle_files=shuffle_files,
                      read_config=tfds_math.tfds.ReadConfig(shuffle_seed=seed))


def _to_eval(prefix: str):
  @seqio.map_over_dataset
  def fn(ex):
    prompt = prefix + math_tasks._PROBLEM_HEADER + tf.strings.strip(ex['question']) + (
        math_tasks._SOLUTION_HEADER)
    return {'inputs': prompt, 'targets': ex['solution'], 'answer': ex['answer'], 'id': ex['id']}
  return fn


@seqio.map_over_dataset
def _to_train(ex):
  return {'targets': ex['inputs'] + ex['targets']}


_REGISTERED: dict[str, tuple] = {}


def register_math_tasks(task: math_tasks.MathTask, manual_dir: str | None = None,
                        data_dir: str | None = None, prefix: str | None = None
                        ) -> tuple[str, str]:
  """Registers the train and eval Tasks for `task`; returns their names."""
  kind = task.kind
  prefix = prefix or f'ttc_{kind}'
  manual_dir = str(manual_dir or task.cfg.data_dir or math_tasks.default_data_dir())
  names = (f'{prefix}_train', f'{prefix}_eval')
  key = (task.cfg, id(task.tokenizer), manual_dir, data_dir)
  if not claim_names(names, key, _REGISTERED):
    return names
  vocab = HFVocabulary(task.tokenizer)
  splits = task.splits
  source = seqio.FunctionDataSource(
      dataset_fn=functools.partial(_dataset_fn, kind=kind, manual_dir=manual_dir,
                                   data_dir=data_dir),
      splits=splits)
  to_eval = _to_eval(math_tasks.few_shot_prefix(kind, task.cfg.n_shots))

  def postprocess(output_or_target, example=None, is_target=False):
    del example, is_target
    if isinstance(output_or_target, bytes):
      output_or_target = output_or_target.decode('utf-8', errors='replace')
    return task.parse_answer(output_or_target) or ''

  def accuracy(targets, predictions):
    hits = [bool(p) and task.is_correct(f'\\boxed{{{p}}}', t)
            for t, p in zip(targets, predictions, strict=True)]
    return {'accuracy': float(np.mean(hits)) if hits else 0.0}

  seqio.TaskRegistry.add(
      names[0], source=source,
      preprocessors=[to_eval, _to_train, seqio.preprocessors.tokenize,
                     seqio.preprocessors.append_eos],
      output_features={'targets': seqio.Feature(vocab, add_eos=True)})
  seqio.TaskRegistry.add(
      names[1], source=source,
      preprocessors=[to_eval, seqio.preprocessors.tokenize, seqio.preprocessors.append_eos],
      output_features={'inputs': seqio.Feature(vocab, add_eos=False),
                       'targets': seqio.Feature(vocab, add_eos=True)},
      postprocess_fn=postprocess, metric_fns=[accuracy])
  for n in names:
    _REGISTERED[n] = key
  return names
