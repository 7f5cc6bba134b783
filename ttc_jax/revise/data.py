"""Revision training data: trajectories of incorrect attempts that end in a correct one.

From a sample table of training problems (paper: 64 samples per question at a high
temperature), every CORRECT sample c becomes one trajectory:

  k ~ Uniform{0, ..., max_incorrect}, then k = min(k, incorrect samples of the problem)
  attempts = [k - 1 random incorrect samples (distinct, in random order),
              the incorrect sample nearest to c by character edit distance]
  target   = c

Edit distance is Levenshtein on the full solution texts (rapidfuzz); ties go to the smallest
sample_index. The nearest one is always last, since it is the attempt the model sees right
before writing the correct one (and the one kept if the context must be cut).

Trajectory table (one row per correct sample; Parquet):
  problem_id (str), sample_index (int: the target's), k (int), attempts (list<str>, oldest
  first), attempt_indices (list<int>: their sample_index), target (str).

Randomness: one numpy stream per problem, seeded by (seed, crc32(problem_id)), so a problem's
trajectories do not depend on which other problems are in the table or on row order.
"""

from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np
import pandas as pd
from rapidfuzz.distance import Levenshtein

from ttc_jax import io
from ttc_jax.data.tokenizer import Tokenizer
from ttc_jax.revise.context import MAX_ATTEMPTS, fit_context
from ttc_jax.train.pretrain import encode_examples

SAMPLE_COLUMNS = ('problem_id', 'sample_index', 'text', 'correct')
TRAJECTORY_COLUMNS = ('problem_id', 'sample_index', 'k', 'attempts', 'attempt_indices',
                      'target')


def problem_rng(seed: int, problem_id: str, salt: int = 0) -> np.random.Generator:
  """A numpy stream for one problem, independent of the table it sits in."""
  return np.random.default_rng([int(seed), zlib.crc32(str(problem_id).encode()), int(salt)])


def nearest_incorrect(target: str, texts: Sequence[str]) -> int:
  """Index into `texts` of the text nearest to `target` by character edit distance (first
  one on ties)."""
  if not len(texts):
    raise ValueError('nearest_incorrect needs at least one candidate text.')
  d = [Levenshtein.distance(target, t) for t in texts]
  return int(np.argmin(d))


def build_trajectories(samples: pd.DataFrame, seed: int,
                       max_incorrect: int = MAX_ATTEMPTS) -> pd.DataFrame:
  """Trajectories for every correct sample of `samples` (see the module docstring).

  samples: one row per sample with columns problem_id, sample_index, text, correct.
  Returns the trajectory table, sorted by (problem_id, sample_index); deterministic in seed.
  """
  missing = [c for c in SAMPLE_COLUMNS if c not in samples.columns]
  if missing:
    raise ValueError(f'the sample table lacks columns {missing}; it needs {SAMPLE_COLUMNS}.')
  if max_incorrect < 0:
    raise ValueError(f'max_incorrect must be >= 0, got {max_incorrect}.')
  rows = []
  df = samples.sort_values(['problem_id', 'sample_index'], kind='stable')
  for pid, group in df.groupby('problem_id', sort=True):
    correct = group[group['correct'].astype(bool)]
    if correct.empty:
      continue
    wrong = group[~group['correct'].astype(bool)]
    wrong_texts = [str(t) for t in wrong['text']]
    wrong_idx = wrong['sample_index'].to_numpy()
    rng = problem_rng(seed, pid)
    for c_idx, c_text in zip(correct['sample_index'].to_numpy(), correct['text']):
      c_text = str(c_text)
      # Drawn before capping, so k's law is the paper's Uniform{0..4} truncated by availability.
      k = min(int(rng.integers(0, max_incorrect + 1)), len(wrong_texts))
      chosen: list[int] = []
      if k:
        last = nearest_incorrect(c_text, wrong_texts)
        others = np.delete(np.arange(len(wrong_texts)), last)
        chosen = [int(i) for i in rng.permutation(others)[:k - 1]] + [last]
      rows.append({'problem_id': str(pid), 'sample_index': int(c_idx), 'k': k,
                   'attempts': [wrong_texts[i] for i in chosen],
                   'attempt_indices': [int(wrong_idx[i]) for i in chosen],
                   'target': c_text})
  return pd.DataFrame(rows, columns=list(TRAJECTORY_COLUMNS))


def write_trajectories(df: pd.DataFrame, path) -> None:
  """Atomic Parquet with list columns typed (an empty table keeps its schema)."""
  import pyarrow as pa
  schema = pa.schema([('problem_id', pa.string()), ('sample_index', pa.int32()),
                      ('k', pa.int32()), ('attempts', pa.list_(pa.string())),
                      ('attempt_indices', pa.list_(pa.int32())), ('target', pa.string())])
  io.write_parquet(path, pa.Table.from_pandas(df, schema=schema, preserve_index=False))


def read_trajectories(path) -> pd.DataFrame:
  df = io.read_parquet(path)
  df['attempts'] = [list(a) for a in df['attempts']]
  df['attempt_indices'] = [list(map(int, a)) for a in df['attempt_indices']]
  return df


def encode_revision_examples(trajectories: pd.DataFrame, prompts: dict[str, str],
                             tokenizer: Tokenizer, seq_len: int,
                             max_attempts: int = MAX_ATTEMPTS,
                             pack: bool = True) -> dict[str, np.ndarray]:
  """Training rows for the revision model: loss on the final (correct) attempt only.

  Each example is BOS + context + target + EOS with the context from `fit_context` (so an
  example never exceeds seq_len + 1 tokens: the oldest attempts are dropped when needed).
  The context plays the role of pretraining's prompt, so `pretrain.encode_examples` masks it:
  loss_mask is 1 exactly on the target's tokens and its EOS. Rows as there:
  {'tokens', 'positions', 'segments'} int32, 'loss_mask' float32, all [R, seq_len + 1].
  """
  contexts, targets = [], []
  for pid, attempts, target in zip(trajectories['problem_id'], trajectories['attempts'],
                                   trajectories['target']):
    target = str(target)
    reserve = len(tokenizer.encode(target)) + 1   # + EOS
    text, _ = fit_context(prompts[str(pid)], list(attempts), tokenizer, seq_len + 1, reserve,
                          max_attempts)
    contexts.append(text)
    targets.append(target)
  return encode_examples(contexts, targets, tokenizer, seq_len, loss_on_prompt=False, pack=pack)
