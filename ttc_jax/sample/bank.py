"""The sample bank: N samples per problem, graded, as one table (written as Parquet).

Columns (one row per sample):
  problem_id (str), sample_index (int), tokens (list<int32>, generated tokens only, EOS
  included when emitted), text (str, decoded generated text), step_ends (list<int32>: offsets
  into `tokens` of the tokens that ended a step), answer (str or None, from `parse_answer`),
  correct (bool, from `grader(text, reference answer)`), n_prompt_tokens, n_generated_tokens
  (int, for exact FLOPs accounting), finished (bool: ended by EOS rather than a cap).
"""

from __future__ import annotations

import time
from typing import Callable

import jax
import numpy as np
import pandas as pd

from ttc_jax import io
from ttc_jax.data.problems import ProblemSet
from ttc_jax.data.tokenizer import Tokenizer
from ttc_jax.model.config import ModelConfig
from ttc_jax.sample.decode import NO_LIMIT, Sampler


def sample_bank(params, cfg: ModelConfig, problems: ProblemSet, n_samples: int, key,
                tokenizer: Tokenizer, grader: Callable[[str, str], bool],
                parse_answer: Callable[[str], str | None] = lambda text: None, *,
                max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
                top_k: int = 0, max_step_tokens: int = NO_LIMIT, max_steps: int = NO_LIMIT,
                batch_size: int = 1024, mesh=None, progress: bool = True,
                sampler: Sampler | None = None) -> tuple[pd.DataFrame, dict]:
  """Samples n_samples solutions per problem in chunks of problems, so memory is bounded.

  batch_size: rows (problems * samples) per decode batch; each chunk holds
    max(1, batch_size // n_samples) problems, the last chunk padded with repeats of its first
    problem (dropped afterwards) so every chunk has one shape and compiles once.
  key: each chunk uses fold_in(key, chunk index): the bank is reproducible for a fixed
    batch_size.
  Returns (table, stats) with stats = {'samples', 'generated_tokens', 'seconds',
  'samples_per_s', 'tokens_per_s'} (wall time includes compiles).
  """
  if n_samples <= 0:
    raise ValueError(f'n_samples must be positive, got {n_samples}.')
  if len(problems) == 0:
    raise ValueError('problems is empty.')
  sampler = sampler or Sampler(cfg, eos_id=tokenizer.eos_id, step_ids=tokenizer.step_ids,
                               top_k=top_k, mesh=mesh)
  per_chunk = max(1, batch_size // n_samples)
  if mesh is not None:
    # Rows must split evenly over the data axis.
    d = mesh.shape['data']
    while (per_chunk * n_samples) % d:
      per_chunk += 1
  max_prompt = int(problems.lengths.max())
  cache_len = min(cfg.max_len, max_prompt + int(max_new_tokens) + 1)
  if max_prompt >= cache_len:
    raise ValueError(f'the longest prompt ({max_prompt} tokens) does not fit model max_len='
                     f'{cfg.max_len}.')
  n_chunks = -(-len(problems) // per_chunk)
  if not jax.dtypes.issubdtype(getattr(key, 'dtype', np.uint32), jax.dtypes.prng_key):
    key = jax.random.wrap_key_data(np.asarray(key, np.uint32))
  rows, total_tokens = [], 0
  bar = None
  if progress:
    from tqdm.auto import tqdm
    bar = tqdm(total=len(problems) * n_samples, unit='sample', desc='sample bank')
  t0 = time.perf_counter()
  for c in range(n_chunks):
    index = np.arange(c * per_chunk, min((c + 1) * per_chunk, len(problems)))
    real = len(index)
    index = np.concatenate([index, np.full(per_chunk - real, index[0])])
    chunk = problems.take(index)
    state = sampler.start(params, chunk.prompts, chunk.lengths, jax.random.fold_in(key, c),
                          n_samples=n_samples, cache_len=cache_len, temperature=temperature,
                          top_p=top_p, max_new_tokens=max_new_tokens,
                          max_step_tokens=max_step_tokens, max_steps=max_steps)
    state = sampler.generate(params, state)
    tokens_BxS, lengths_B, prompt_B, step_end_BxS = jax.device_get(
        (state.tokens_BxS, state.lengths_B, state.prompt_lengths_B, state.step_end_BxS))
    for i in range(real):
      for n in range(n_samples):
        b = i * n_samples + n
        gen = tokens_BxS[b, prompt_B[b]:lengths_B[b]].astype(np.int32)
        text = tokenizer.decode(gen)
        ref = str(chunk.answers[i])
        rows.append({
            'problem_id': str(chunk.ids[i]), 'sample_index': n, 'tokens': gen.tolist(),
            'text': text,
            'step_ends': (np.flatnonzero(step_end_BxS[b, prompt_B[b]:lengths_B[b]])
                          .astype(np.int32).tolist()),
            'answer': parse_answer(text), 'correct': bool(grader(text, ref)),
            'n_prompt_tokens': int(prompt_B[b]), 'n_generated_tokens': int(len(gen)),
            'finished': bool(len(gen) and gen[-1] == tokenizer.eos_id)})
        total_tokens += len(gen)
    if bar is not None:
      bar.update(real * n_samples)
      bar.set_postfix(samples_per_s=f'{bar.n / (time.perf_counter() - t0):.1f}')
  if bar is not None:
    bar.close()
  seconds = time.perf_counter() - t0
  df = pd.DataFrame(rows)
  stats = {'samples': len(df), 'generated_tokens': int(total_tokens), 'seconds': seconds,
           'samples_per_s': len(df) / seconds, 'tokens_per_s': total_tokens / seconds}
  return df, stats


def write_bank(df: pd.DataFrame, path) -> None:
  """Writes the bank atomically as Parquet (token lists as list<int32>)."""
  import pyarrow as pa
  schema = pa.schema([
      ('problem_id', pa.string()), ('sample_index', pa.int32()),
      ('tokens', pa.list_(pa.int32())), ('text', pa.string()),
      ('step_ends', pa.list_(pa.int32())), ('answer', pa.string()), ('correct', pa.bool_()),
      ('n_prompt_tokens', pa.int32()), ('n_generated_tokens', pa.int32()),
      ('finished', pa.bool_())])
  io.write_parquet(path, pa.Table.from_pandas(df, schema=schema, preserve_index=False))
