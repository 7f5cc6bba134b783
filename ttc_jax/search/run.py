"""`run_search`: one method at one budget over a ProblemSet -> one results row per problem.

Results layout (the study writes it as Parquet; `RESULT_COLUMNS` in order):
  problem_id (str), method (str: best_of_n | majority_vote | best_of_n_weighted | beam |
  lookahead | dvts), budget (int, generations allowed), n (beams or samples), m (width; 0 for
  best-of-N), k (lookahead steps; 0 otherwise), answer (str or None), correct (bool),
  generations (int <= budget), prefill_tokens, generated_tokens, verifier_tokens (int,
  tokens), policy_flops, verifier_flops, total_flops ('exact'), flops_v1, flops_iclr (FLOPs),
  rounds (int, search rounds or steps of the longest sample), finished (int, pooled answers
  that ended before the round limit).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import pandas as pd

from ttc_jax.data.problems import ProblemSet
from ttc_jax.data.tokenizer import Tokenizer
from ttc_jax.model.config import ModelConfig
from ttc_jax.search import accounting
from ttc_jax.search import steps as steps_lib
from ttc_jax.search.beam import MAX_ROUNDS, pick_answers, tree_search
from ttc_jax.search.best_of_n import BON_METHODS, sample_and_score
from ttc_jax.search.scorers import StepScorer

TREE_METHODS = ('beam', 'lookahead', 'dvts')
METHODS = tuple(BON_METHODS) + TREE_METHODS
RESULT_COLUMNS = ('problem_id', 'method', 'budget', 'n', 'm', 'k', 'answer', 'correct',
                  *accounting.COST_COLUMNS, 'rounds', 'finished')


def sqrt_width(n: int) -> int:
  """The paper's M = sqrt(N) for any N: the largest divisor of N not above sqrt(N) (exact for
  square N; N=8 -> 2, N=32 -> 4, N=2 -> 1)."""
  return max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)


def resolve(method: str, budget: int, width: int | str | None, k: int) -> tuple[int, int, int]:
  """(N, M, k) of a method at a budget; ValueError naming the setting when impossible.

  Lookahead spends N (k + 1) generations, so it runs N = budget / (k + 1) beams.
  width: an int, 'sqrt' (see `sqrt_width`) or None (best-of-N).
  """
  if method not in METHODS:
    raise ValueError(f'method must be one of {METHODS}, got {method!r}.')
  if not isinstance(budget, (int, np.integer)) or isinstance(budget, bool) or budget < 1:
    raise ValueError(f'{method}: budget must be an integer >= 1 generations, got {budget!r}.')
  if method in BON_METHODS:
    return int(budget), 0, 0
  if method != 'lookahead' and k:
    raise ValueError(f'{method}: lookahead k={k} only applies to method lookahead.')
  if not isinstance(k, (int, np.integer)) or k < 0:
    raise ValueError(f'{method}: k must be an integer >= 0, got {k!r}.')
  if budget % (k + 1):
    raise ValueError(f'lookahead: budget={budget} is not divisible by k + 1 = {k + 1} '
                     f'(lookahead costs N (k + 1) generations).')
  n = int(budget) // (k + 1)
  if width is None:
    raise ValueError(f'{method}: width M is required (an int or "sqrt").')
  m = sqrt_width(n) if width == 'sqrt' else width
  if not isinstance(m, (int, np.integer)) or isinstance(m, bool) or m < 1:
    raise ValueError(f'{method}: width M must be a positive integer or "sqrt", got {width!r}.')
  if m > n:
    raise ValueError(f'{method}: width M={m} exceeds N={n} beams (budget={budget}, k={k}).')
  if n % m:
    raise ValueError(f'{method}: N={n} beams (budget={budget}, k={k}) is not divisible by '
                     f'width M={m}.')
  return n, int(m), int(k)


def run_search(method: str, params, cfg: ModelConfig, scorer: StepScorer | None,
               problems: ProblemSet, budget: int, *, tokenizer: Tokenizer,
               parse_answer: Callable[[str], str | None],
               is_correct: Callable[[str, str], bool], key, width: int | str | None = None,
               k: int = 0, max_rounds: int = MAX_ROUNDS, max_step_tokens: int,
               cache_len: int, temperature: float = 1.0, batch_problems: int = 64,
               max_rows: int = 0, policy: steps_lib.Policy | None = None,
               verifier_cfg: ModelConfig | None = None, seconds: dict | None = None
               ) -> pd.DataFrame:
  """Runs `method` at `budget` generations on every problem; returns RESULT_COLUMNS rows.

  Args:
    method: one of METHODS. params, cfg: the policy. scorer: the step verifier (None only for
      majority_vote). problems: prompts with BOS. budget: generations (the paper's N).
    tokenizer, parse_answer, is_correct: the task's (e.g. ArithTask's).
    key: PRNG key; each problem's randomness is keyed by its id, not its batch position.
    width: beam width M (int or 'sqrt'); k: lookahead steps.
    max_rounds (steps), max_step_tokens (tokens), cache_len (tokens), temperature.
    batch_problems: problems searched together (the last batch is padded with repeats of its
      first problem, so every batch compiles to one shape; padding rows are dropped).
    max_rows: if positive, at most max_rows // N problems per batch (at least one), so the
      rows held at once (problems x N samples or beams) and their caches stay bounded.
    policy: reuse compiled policy steps across calls (built from cfg/tokenizer otherwise).
    verifier_cfg: the verifier's config for FLOPs (default: scorer.config, else cfg).
    seconds: optional dict, incremented with the per-phase wall time.
  All settings are checked before any compute.
  """
  n, m, k = resolve(method, budget, width, k)
  if scorer is None and method != 'majority_vote':
    raise ValueError(f'{method} needs a scorer (only majority_vote runs without one).')
  if len(problems) == 0:
    raise ValueError('problems is empty.')
  if not isinstance(batch_problems, (int, np.integer)) or batch_problems < 1:
    raise ValueError(f'batch_problems must be a positive integer, got {batch_problems!r}.')
  if not isinstance(max_rows, (int, np.integer)) or max_rows < 0:
    raise ValueError(f'max_rows must be an integer >= 0 (0: no cap), got {max_rows!r}.')
  if max_rows:
    batch_problems = max(1, min(batch_problems, max_rows // n))
  longest = int(np.max(problems.lengths))
  steps_lib.check_cache_fits(method, max_rounds, max_step_tokens, longest, cache_len)
  if cache_len > cfg.max_len:
    raise ValueError(f'cache_len={cache_len} exceeds the policy max_len={cfg.max_len}.')
  policy = policy or steps_lib.Policy(cfg, eos_id=tokenizer.eos_id, step_ids=tokenizer.step_ids)
  vcfg = verifier_cfg or getattr(scorer, 'config', None) or cfg
  frames = []
  for lo in range(0, len(problems), batch_problems):
    index = np.arange(lo, min(lo + batch_problems, len(problems)))
    real = len(index)
    if len(problems) > batch_problems and real < batch_problems:
      index = np.concatenate([index, np.full(batch_problems - real, index[0])])
    batch = problems.take(index)
    common = dict(n=n, key=key, max_rounds=max_rounds, max_step_tokens=max_step_tokens,
                  cache_len=cache_len, temperature=temperature)
    if method in BON_METHODS:
      use = None if method == 'majority_vote' else scorer
      result = sample_and_score(policy, params, use, batch, tokenizer, **common)
      how = BON_METHODS[method]
    else:
      result = tree_search(policy, params, scorer, batch, tokenizer, m=m, k=k,
                           mode='dvts' if method == 'dvts' else 'beam', **common)
      how = 'weighted'
    if seconds is not None:
      for phase, t in result.seconds.items():
        seconds[phase] = seconds.get(phase, 0.0) + t
    answers, pick_P = pick_answers(result.texts, result.scores_PxN, result.pool_PxN,
                                   parse_answer, how)
    correct = [j >= 0 and bool(is_correct(result.texts[i][j], str(batch.answers[i])))
               for i, j in enumerate(pick_P)]
    cost = accounting.cost_columns(result, method=method, n=n, k=k, policy_cfg=cfg,
                                   verifier_cfg=None if method == 'majority_vote' else vcfg)
    frame = pd.DataFrame({
        'problem_id': batch.ids.astype(str), 'method': method, 'budget': int(budget), 'n': n,
        'm': m, 'k': k, 'answer': answers, 'correct': np.asarray(correct, bool), **cost,
        'rounds': result.rounds,
        'finished': (result.pool_PxN & result.finished_PxN).sum(-1).astype(np.int64)})
    frames.append(frame.iloc[:real])
  return pd.DataFrame(pd.concat(frames, ignore_index=True), columns=list(RESULT_COLUMNS))


def task_kwargs(task: Any) -> dict:
  """tokenizer / parse_answer / is_correct of a Task (e.g. ArithTask) for `run_search`."""
  return dict(tokenizer=task.tokenizer, parse_answer=task.parse_answer,
              is_correct=task.is_correct)
