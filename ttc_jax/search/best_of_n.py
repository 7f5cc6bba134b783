"""Best-of-N over fresh samples or over a sample bank: plain, majority vote, weighted.

Fresh samples: N independent solutions per problem from the policy (prefilled once, fanned
out), each scored once as a whole by the verifier: the score at its last token, i.e. the
last-step PRM score (the paper's best step aggregation). Row p * N + j samples with key
fold_in(fold_in(fold_in(key, crc32(problem id)), 0), j): a problem's samples do not depend on
its batch, and sample j's first step is exactly beam search's round-0 candidate j (common
random numbers make method comparisons less noisy).
"""

from __future__ import annotations

import time

import jax
import numpy as np
import pandas as pd

from ttc_jax.data.problems import ProblemSet
from ttc_jax.data.tokenizer import Tokenizer
from ttc_jax.search import steps as steps_lib
from ttc_jax.search.beam import MAX_ROUNDS, TreeResult, _Clock, decode_texts, prompt_counts
from ttc_jax.search.scorers import StepScorer
from ttc_jax.verify import aggregate

# method name -> answer aggregation of ttc_jax.verify.aggregate
BON_METHODS = {'best_of_n': 'best', 'majority_vote': 'majority', 'best_of_n_weighted': 'weighted'}


def check_bon_settings(method: str, n: int, max_rounds: int, max_step_tokens: int,
                       longest_prompt: int, cache_len: int) -> None:
  """Raises ValueError naming the setting before any compute."""
  for name, v in (('N (samples)', n), ('max_rounds', max_rounds),
                  ('max_step_tokens', max_step_tokens)):
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
      raise ValueError(f'{method}: {name} must be an integer >= 1, got {v!r}.')
  steps_lib.check_cache_fits(method, max_rounds, max_step_tokens, longest_prompt, cache_len)


def sample_and_score(policy: steps_lib.Policy, params, scorer: StepScorer | None,
                     problems: ProblemSet, tokenizer: Tokenizer, *, n: int, key,
                     max_rounds: int = MAX_ROUNDS, max_step_tokens: int, cache_len: int,
                     temperature: float = 1.0) -> TreeResult:
  """N whole solutions per problem, scored once each (scorer None: majority vote only, no
  verifier cost). Same limits as tree search: at most max_rounds steps of at most
  max_step_tokens tokens. Returns a TreeResult whose pool is every sample."""
  check_bon_settings('best_of_n', n, max_rounds, max_step_tokens,
                     int(np.max(problems.lengths)), cache_len)
  clock = _Clock()
  t0 = time.perf_counter()
  p = len(problems)
  pkeys_P = steps_lib.problem_keys(key, problems.ids)
  state = policy.start(params, problems.prompts, problems.lengths, n=n, cache_len=cache_len,
                       temperature=temperature, max_step_tokens=max_step_tokens,
                       max_steps=max_rounds)
  sstate = None if scorer is None else scorer.init(problems, state)
  before = steps_lib.light_copy(state)
  clock.lap('policy', state.lengths_B)
  state = policy.finish(params, state, steps_lib.row_keys(pkeys_P, 0, n=n))
  clock.lap('policy', state.lengths_B)
  prefill_tok_P, prefill_ctx_P = prompt_counts(problems, n)
  start_B, end_B = jax.device_get((before.lengths_B, state.lengths_B))
  new_B, pol_ctx_B, ver_ctx_B = steps_lib.span_counts(start_B, end_B)
  per_problem = lambda v: np.asarray(v, np.float64).reshape(p, n).sum(-1)
  if scorer is None:
    scores_PxN = np.zeros((p, n), np.float32)
    ver_tok_P, ver_ctx_P = np.zeros(p), np.zeros(p)
  else:
    scores_B, _ = scorer.score_new_step(sstate, before, state)
    scores_PxN = np.asarray(jax.device_get(scores_B), np.float32).reshape(p, n)
    ver_tok_P = prefill_tok_P + per_problem(new_B)
    ver_ctx_P = prefill_ctx_P + per_problem(ver_ctx_B)
    clock.lap('verifier', scores_PxN)
  texts = decode_texts(tokenizer, state)
  done_PxN = np.asarray(jax.device_get(state.done_B)).reshape(p, n)
  clock.seconds['total'] = time.perf_counter() - t0
  return TreeResult(
      texts=[texts[i * n:(i + 1) * n] for i in range(p)], scores_PxN=scores_PxN,
      pool_PxN=np.ones((p, n), bool), finished_PxN=done_PxN, prefill_tokens_P=prefill_tok_P,
      prefill_context_P=prefill_ctx_P, generated_tokens_P=per_problem(new_B),
      generated_context_P=per_problem(pol_ctx_B), verifier_tokens_P=ver_tok_P,
      verifier_context_P=ver_ctx_P, rounds=int(jax.device_get(state.n_steps_B).max()),
      seconds=clock.seconds)


def best_of_n_from_bank(bank: pd.DataFrame, budget: int, *, method: str = 'best_of_n_weighted',
                        score_column: str = 'score', problem_ids=None) -> pd.DataFrame:
  """Best-of-N over the first `budget` samples (by sample_index) of each problem of a bank.

  bank: columns problem_id, sample_index, answer (str or None), correct (bool) and, unless
    method is 'majority_vote', `score_column` (the aggregated PRM score of each sample).
    Optional n_prompt_tokens / n_generated_tokens give token counts.
  Returns one row per problem: problem_id, method, budget, answer, correct, generations,
  prefill_tokens, generated_tokens, verifier_tokens (NaN where the bank lacks counts).
  Ties and unparseable answers follow ttc_jax.verify.aggregate.
  """
  if method not in BON_METHODS:
    raise ValueError(f'method must be one of {sorted(BON_METHODS)}, got {method!r}.')
  if not isinstance(budget, (int, np.integer)) or budget < 1:
    raise ValueError(f'{method}: budget must be an integer >= 1, got {budget!r}.')
  need = {'problem_id', 'sample_index', 'answer', 'correct'}
  if method != 'majority_vote':
    need.add(score_column)
  missing = need - set(bank.columns)
  if missing:
    raise ValueError(f'bank lacks columns {sorted(missing)} needed by {method}.')
  df = bank[bank['sample_index'] < budget]
  if problem_ids is None:
    problem_ids = list(dict.fromkeys(df['problem_id'].astype(str)))
  df = df.assign(_p=df['problem_id'].astype(str).map({p: i for i, p in enumerate(problem_ids)}))
  df = df.dropna(subset=['_p']).sort_values(['_p', 'sample_index'], kind='stable')
  sizes = df.groupby('_p').size()
  if len(sizes) != len(problem_ids) or (sizes != budget).any():
    raise ValueError(f'{method}: budget={budget} needs {budget} samples for each of '
                     f'{len(problem_ids)} problems; the bank has '
                     f'{int(sizes.min()) if len(sizes) else 0}..'
                     f'{int(sizes.max()) if len(sizes) else 0}.')
  p = len(problem_ids)
  answers = df['answer'].to_numpy(object).reshape(p, budget)
  ids_PxN = aggregate.answer_ids([[a if isinstance(a, str) else None for a in row]
                                  for row in answers])
  scores = (None if method == 'majority_vote' else
            df[score_column].to_numpy(np.float64).reshape(p, budget))
  pick_P = aggregate.select(ids_PxN, scores, BON_METHODS[method])
  correct_PxN = df['correct'].to_numpy(bool).reshape(p, budget)

  def per_problem(col, first_only=False):
    if col not in df.columns:
      return np.full(p, np.nan)
    v = df[col].to_numpy(np.float64).reshape(p, budget)
    return v[:, 0] if first_only else v.sum(-1)

  prefill = per_problem('n_prompt_tokens', first_only=True)   # one prefill per problem
  generated = per_problem('n_generated_tokens')
  return pd.DataFrame({
      'problem_id': problem_ids, 'method': method, 'budget': budget,
      'answer': [answers[i, j] if j >= 0 else None for i, j in enumerate(pick_P)],
      'correct': aggregate.take_picked(correct_PxN, pick_P, fill=False).astype(bool),
      'generations': budget, 'prefill_tokens': prefill, 'generated_tokens': generated,
      'verifier_tokens': (np.zeros(p) if method == 'majority_vote' else prefill + generated)})
