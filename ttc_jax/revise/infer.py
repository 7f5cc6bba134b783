"""Sequential revision chains, many in parallel, batched over problems x chains.

A chain is a sequence of attempts by the revision model; attempt r is sampled from
BOS + context(prompt, attempts r-4 .. r-1) (`context.fit_context`), so the first attempt sees
the bare prompt. Round r samples attempt r of every chain that is still running, for every
problem, in one batched sampler call (split into equal-shape chunks of `batch_rows` rows when
that is larger); the rebuilt contexts are prefilled afresh each round.

Ratios share chains. For a budget N and a ratio seq:par (seq * par = N) we read the first
par chains, first seq attempts each: a prefix of a chain is itself a chain (attempt r never
sees later ones). So the chains are nested: chain c runs for
  length(c) = 2 ** floor(log2(max_budget / (c + 1)))
attempts, the fewest that serve every ratio of every budget up to max_budget (N log2 N / 2 + N
generations per problem instead of N per ratio); see `chain_lengths`.

Attempts table (one row per attempt; Parquet): problem_id (str), chain, position (ints),
text (str), answer (str or None), correct (bool), tokens (list<int32>: generated, EOS
included when emitted), n_context_tokens, n_generated_tokens (ints, for FLOPs accounting),
n_kept (earlier attempts in the context).
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import numpy as np
import pandas as pd

from ttc_jax import io
from ttc_jax.data.tokenizer import Tokenizer
from ttc_jax.model.config import ModelConfig
from ttc_jax.revise.context import MAX_ATTEMPTS, encode_contexts
from ttc_jax.sample.decode import Sampler

ATTEMPT_COLUMNS = ('problem_id', 'chain', 'position', 'text', 'answer', 'correct', 'tokens',
                   'n_context_tokens', 'n_generated_tokens', 'n_kept')


def budgets(max_budget: int) -> list[int]:
  """1, 2, 4, .. max_budget."""
  return [1 << i for i in range(int(max_budget).bit_length()) if (1 << i) <= max_budget]


def ratios(budget: int) -> list[tuple[int, int]]:
  """Every (seq, par) with seq * par = budget, seq a power of 2, seq ascending."""
  return [(s, budget // s) for s in budgets(budget)]


def chain_lengths(max_budget: int) -> np.ndarray:
  """[C = max_budget] int: attempts run by each chain (chain c serves par > c at any seq)."""
  c = np.arange(1, max_budget + 1)
  return (1 << np.floor(np.log2(max_budget / c)).astype(np.int64)).astype(np.int64)


def run_chains(params, cfg: ModelConfig, problem_ids: Sequence[str], prompts: Sequence[str],
               references: Sequence[str], tokenizer: Tokenizer,
               grader: Callable[[str, str], bool],
               parse_answer: Callable[[str], str | None], key, *, max_budget: int,
               max_new_tokens: int, temperature: float, max_attempts: int = MAX_ATTEMPTS,
               batch_rows: int = 1024, mesh=None, sampler: Sampler | None = None,
               n_windows: int = 8, progress: bool = False) -> pd.DataFrame:
  """Runs the nested chains for every problem; returns the attempts table.

  cfg: the revision model's config; cfg.max_len is the cache length of every round, and each
    context is cut (oldest attempts first) to leave max_new_tokens free.
  n_windows: the sampler's static attention windows (when no `sampler` is given).
  key: round r uses fold_in(key, r), chunk i of a round fold_in of that by i; deterministic
    for a fixed key, batch_rows and device count.
  """
  n_problems = len(problem_ids)
  lengths_C = chain_lengths(max_budget)
  n_rounds = int(lengths_C.max())
  sampler = sampler or Sampler(cfg, eos_id=tokenizer.eos_id, step_ids=tokenizer.step_ids,
                               mesh=mesh, n_windows=n_windows)
  if not jax.dtypes.issubdtype(getattr(key, 'dtype', np.uint32), jax.dtypes.prng_key):
    key = jax.random.wrap_key_data(np.asarray(key, np.uint32))
  align = mesh.shape['data'] if mesh is not None else 1
  history: dict[tuple[int, int], list[str]] = {}
  records = []
  bar = None
  if progress:
    from tqdm.auto import tqdm
    bar = tqdm(total=int(lengths_C.sum()) * n_problems, unit='attempt', desc='revisions')
  for r in range(n_rounds):
    chains = np.flatnonzero(lengths_C > r)
    rows = [(p, c) for p in range(n_problems) for c in chains]
    tokens_BxL, lengths_B, kept_B = encode_contexts(
        [prompts[p] for p, _ in rows], [history.get((p, c), []) for p, c in rows], tokenizer,
        cfg.max_len, max_new_tokens, max_attempts)
    # Equal-shape chunks of at most batch_rows (the last padded with copies of row 0), as
    # even as possible so padding stays small; rows divisible by the mesh's data axis.
    n_chunks = -(-len(rows) // batch_rows)
    chunk = -(-len(rows) // n_chunks)
    chunk = -(-chunk // align) * align
    round_key = jax.random.fold_in(key, r)
    for i, start in enumerate(range(0, len(rows), chunk)):
      idx = np.arange(start, start + chunk)
      real = int(np.sum(idx < len(rows)))
      idx = np.where(idx < len(rows), idx, 0)
      state = sampler.start(params, tokens_BxL[idx], lengths_B[idx],
                            jax.random.fold_in(round_key, i), n_samples=1,
                            cache_len=cfg.max_len, temperature=temperature,
                            max_new_tokens=max_new_tokens)
      state = sampler.generate(params, state)
      toks, lens, plens = jax.device_get((state.tokens_BxS, state.lengths_B,
                                          state.prompt_lengths_B))
      for j in range(real):
        p, c = rows[idx[j]]
        gen = np.asarray(toks[j, plens[j]:lens[j]], np.int32)
        text = tokenizer.decode(gen)
        history.setdefault((p, c), []).append(text)
        records.append({
            'problem_id': str(problem_ids[p]), 'chain': int(c), 'position': r, 'text': text,
            'answer': parse_answer(text), 'correct': bool(grader(text, str(references[p]))),
            'tokens': gen.tolist(), 'n_context_tokens': int(plens[j]),
            'n_generated_tokens': int(len(gen)), 'n_kept': int(kept_B[idx[j]])})
      if bar is not None:
        bar.update(real)
  if bar is not None:
    bar.close()
  df = pd.DataFrame(records, columns=list(ATTEMPT_COLUMNS))
  return df.sort_values(['problem_id', 'chain', 'position'], kind='stable').reset_index(
      drop=True)


def write_attempts(df: pd.DataFrame, path) -> None:
  import pyarrow as pa
  schema = pa.schema([('problem_id', pa.string()), ('chain', pa.int32()),
                      ('position', pa.int32()), ('text', pa.string()), ('answer', pa.string()),
                      ('correct', pa.bool_()), ('tokens', pa.list_(pa.int32())),
                      ('n_context_tokens', pa.int32()), ('n_generated_tokens', pa.int32()),
                      ('n_kept', pa.int32())])
  io.write_parquet(path, pa.Table.from_pandas(df, schema=schema, preserve_index=False))


def previous_attempts(df: pd.DataFrame, max_attempts: int = MAX_ATTEMPTS) -> list[list[str]]:
  """For each row of an attempts table, the earlier attempts of its chain (the last
  `max_attempts`, oldest first): the context it was generated from, before any length cut."""
  out: list[list[str]] = [[] for _ in range(len(df))]
  texts = df['text'].tolist()
  order = np.lexsort((df['position'].to_numpy(), df['chain'].to_numpy(),
                      df['problem_id'].to_numpy().astype(str)))
  prev_key, hist = None, []
  for i in order:
    k = (df['problem_id'].iat[i], df['chain'].iat[i])
    if k != prev_key:
      prev_key, hist = k, []
    out[i] = hist[-max_attempts:] if max_attempts else []
    hist = hist + [texts[i]]
  return out
