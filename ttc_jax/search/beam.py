"""PRM-guided beam search and lookahead search, batched over problems x beams.

Layout: P problems x N slots = B rows (row p * N + j), a reshape of the batch as in t5x. A
round is three compiled pieces and one host read of [B] lengths:
  1. extend: every active row writes one more reasoning step (`Policy.extend_one_step`);
  2. score: the PRM scores the new step incrementally (`StepScorer.score_new_step`); with
     lookahead k > 0, a greedy rollout of up to k more steps is scored and thrown away, and
     its end score replaces the step score for ranking (the candidate itself is kept);
  3. select: one `lax.top_k` per problem over its [N] candidate scores picks the parents, and
     one gather reorders the policy state, the scorer state and the scores.
The Python loop is over rounds only (at most `max_rounds`, the paper's 40).

Finished answers (EOS or a length cap) leave the pool and keep their slot and their last
score. Pool semantics (our choice, documented): the pool SHRINKS. A problem has N answer
slots in all; F finished answers hold F of them, and the A = N - F active slots are refilled
from the ceil(A / M) best unfinished candidates, each duplicated M times in rank order (the
last parent may get fewer copies). With no finished answers this is exactly the paper's "keep
the top N/M, expand each M times". So a search ends with exactly N solutions and spends N
generations, never more. (huggingface/search-and-learn instead refills the active pool to N
every round and truncates its completed list to the best N at the end, which can produce more
than N solutions in total.) The final pick is best-of-N weighted (last-step scores) over the
finished answers; if none finished by the round limit, over the active beams.

DVTS (ttc_jax/search/dvts.py) runs the same loop with groups of M slots: each group (subtree)
keeps the single best of its M candidates, and a subtree whose best candidate finished ends.

Randomness: row p * N + j in round r samples with key fold_in(fold_in(fold_in(key,
crc32(problem id)), r), j) (see `steps`), so a problem's search does not depend on the other
problems in its batch.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable, Literal, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ttc_jax.data.problems import ProblemSet
from ttc_jax.data.tokenizer import Tokenizer
from ttc_jax.search import steps as steps_lib
from ttc_jax.search.scorers import StepScorer
from ttc_jax.verify import aggregate

Mode = Literal['beam', 'dvts']
MAX_ROUNDS = 40


# ---- validation ---------------------------------------------------------------------------------
def check_tree_settings(method: str, n: int, m: int, k: int, max_rounds: int,
                        max_step_tokens: int, longest_prompt: int, cache_len: int) -> None:
  """Raises ValueError naming the setting before any compute.

  n: beams (rows per problem); m: width; k: lookahead steps; units of the last three: tokens.
  """
  for name, v, lo in (('N (beams)', n, 1), ('M (width)', m, 1), ('k (lookahead)', k, 0),
                      ('max_rounds', max_rounds, 1), ('max_step_tokens', max_step_tokens, 1)):
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
      raise ValueError(f'{method}: {name} must be an integer >= {lo}, got {v!r}.')
  if m > n:
    raise ValueError(f'{method}: width M={m} exceeds N={n} beams; use M <= N.')
  if n % m:
    raise ValueError(f'{method}: N={n} beams is not divisible by width M={m} (N/M prefixes '
                     f'are kept and each is expanded M times); pick M dividing N.')
  steps_lib.check_cache_fits(method, max_rounds, max_step_tokens, longest_prompt, cache_len)


# ---- selection (compiled) ---------------------------------------------------------------------
def _finite(score):
  # NaN or infinite scores rank below every real score but above non-candidates (-inf).
  return jnp.nan_to_num(score, nan=-1e30, neginf=-1e30, posinf=1e30)


@functools.partial(jax.jit, static_argnames=('n', 'm'))
def select_beam(score_B, cand_B, done_B, *, n: int, m: int):
  """Parents for the next round of beam search with a shrinking pool: index_B int32 [B].

  score_B: float32 ranking score of each row's newest step; cand_B: the row was active this
  round; done_B: the row is finished (now or earlier). Per problem ([P, N] view): finished
  rows go to the tail slots; slot j < A = N - F copies the ((j // M) mod U)-th best unfinished
  candidate (U of them). Ties keep the lower slot (lax.top_k is stable), so the choice depends
  only on the problem's own rows.
  """
  p = score_B.shape[0] // n
  s_PxN = score_B.reshape(p, n)
  done_PxN = done_B.reshape(p, n)
  open_PxN = cand_B.reshape(p, n) & ~done_PxN
  slot_N = jnp.arange(n)
  n_active_Px1 = n - done_PxN.sum(-1, keepdims=True)
  n_open_Px1 = jnp.maximum(open_PxN.sum(-1, keepdims=True), 1)
  _, ranked_PxN = jax.lax.top_k(jnp.where(open_PxN, _finite(s_PxN), -jnp.inf), n)
  finished_PxN = jnp.argsort(jnp.where(done_PxN, slot_N, slot_N + n), axis=-1, stable=True)
  parent_PxN = jnp.take_along_axis(ranked_PxN, (slot_N // m) % n_open_Px1, axis=-1)
  tail_PxN = jnp.take_along_axis(finished_PxN, jnp.clip(slot_N - n_active_Px1, 0, n - 1),
                                 axis=-1)
  src_PxN = jnp.where(slot_N < n_active_Px1, parent_PxN, tail_PxN)
  return (src_PxN + n * jnp.arange(p)[:, None]).reshape(-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=('m',))
def select_dvts(score_B, cand_B, done_B, *, m: int):
  """Parents for DVTS: each group of M rows (a subtree) copies its best candidate to all M
  slots; a finished best ends the subtree (its copies are all done). Groups without
  candidates (ended earlier) stay. index_B int32 [B]; slot 0 of a group is its answer."""
  g = score_B.shape[0] // m
  s_GxM = jnp.where(cand_B.reshape(g, m), _finite(score_B.reshape(g, m)), -jnp.inf)
  best_G = jnp.argmax(s_GxM, axis=-1)   # first index on ties
  has_G = cand_B.reshape(g, m).any(-1)
  src_GxM = jnp.where(has_G[:, None], best_G[:, None], jnp.arange(m)[None, :])
  return (src_GxM + m * jnp.arange(g)[:, None]).reshape(-1).astype(jnp.int32)


# ---- the search loop --------------------------------------------------------------------------
@dataclasses.dataclass
class TreeResult:
  """Raw outcome of a tree search over P problems with N rows each (host numpy).

  texts: [P][N] generated text of each final row (decoded, EOS dropped).
  scores_PxN: float32 last (or lookahead) score of each row.
  pool_PxN: bool, rows that enter the final vote (finished answers, or active ones if none).
  finished_PxN: bool, the row ended (EOS or a cap) before the round limit.
  prefill_tokens_P, prefill_context_P: policy prompt prefill (once per problem).
  generated_tokens_P, generated_context_P: policy decode, rollouts included (tokens,
    key-tokens).
  verifier_tokens_P, verifier_context_P: verifier prompt prefill + every scored span.
  rounds: rounds run; seconds: {'policy', 'verifier', 'select', 'total'} wall time.
  """
  texts: list[list[str]]
  scores_PxN: np.ndarray
  pool_PxN: np.ndarray
  finished_PxN: np.ndarray
  prefill_tokens_P: np.ndarray
  prefill_context_P: np.ndarray
  generated_tokens_P: np.ndarray
  generated_context_P: np.ndarray
  verifier_tokens_P: np.ndarray
  verifier_context_P: np.ndarray
  rounds: int
  seconds: dict[str, float]


class _Clock:
  """Per-phase wall time; each phase ends on a device sync (once per phase per round)."""

  def __init__(self):
    self.seconds = {'policy': 0.0, 'verifier': 0.0, 'select': 0.0}
    self._t = time.perf_counter()

  def lap(self, phase: str, *values):
    jax.block_until_ready(values)
    now = time.perf_counter()
    self.seconds[phase] += now - self._t
    self._t = now


def decode_texts(tokenizer: Tokenizer, state) -> list[str]:
  """Generated text of every row of a DecodeState (host)."""
  tokens_BxS, prompt_B, len_B = jax.device_get(
      (state.tokens_BxS, state.prompt_lengths_B, state.lengths_B))
  return [tokenizer.decode(tokens_BxS[b, prompt_B[b]:len_B[b]]) for b in range(len(len_B))]


def prompt_counts(problems: ProblemSet, rows: int):
  """Policy and verifier prompt prefill per problem: (tokens_P, context_P)."""
  len_P = np.asarray(problems.lengths, np.float64)
  del rows   # prefix sharing: one prefill per problem, whatever the fan-out
  return len_P, len_P * (len_P + 1) / 2.0


def tree_search(policy: steps_lib.Policy, params, scorer: StepScorer, problems: ProblemSet,
                tokenizer: Tokenizer, *, n: int, m: int, key, mode: Mode = 'beam', k: int = 0,
                max_rounds: int = MAX_ROUNDS, max_step_tokens: int, cache_len: int,
                temperature: float = 1.0) -> TreeResult:
  """Beam search (mode='beam', k=0), lookahead search (k > 0) or DVTS (mode='dvts').

  Args:
    policy: compiled policy steps; params: its parameters.
    scorer: the step verifier; problems: P problems (prompts with BOS).
    n: N beams per problem (rows); m: width M; k: lookahead steps (greedy rollout).
    key: PRNG key; per-problem keys fold in crc32(problem id).
    max_rounds: round limit (steps per solution); max_step_tokens: cap per step (tokens);
    cache_len: policy KV slots per row (tokens); temperature: sampling temperature.
  """
  method = 'dvts' if mode == 'dvts' else ('lookahead' if k else 'beam')
  check_tree_settings(method, n, m, k, max_rounds, max_step_tokens,
                      int(np.max(problems.lengths)), cache_len)
  clock = _Clock()
  t0 = time.perf_counter()
  p = len(problems)
  pkeys_P = steps_lib.problem_keys(key, problems.ids)
  state = policy.start(params, problems.prompts, problems.lengths, n=n, cache_len=cache_len,
                       temperature=temperature, max_step_tokens=max_step_tokens)
  sstate = scorer.init(problems, state)
  clock.lap('policy', state.lengths_B)
  prefill_tok_P, prefill_ctx_P = prompt_counts(problems, n)
  gen_tok_P = np.zeros(p)
  gen_ctx_P = np.zeros(p)
  ver_tok_P, ver_ctx_P = prefill_tok_P.copy(), prefill_ctx_P.copy()
  score_B = jnp.zeros((p * n,), jnp.float32)
  done_B = np.asarray(jax.device_get(state.done_B))

  def add(counts_P, values_B):
    counts_P += np.asarray(values_B, np.float64).reshape(p, n).sum(-1)

  rounds = 0
  for r in range(max_rounds):
    if done_B.all():
      break
    rounds += 1
    before = steps_lib.light_copy(state)
    state = policy.extend_one_step(params, state, steps_lib.row_keys(pkeys_P, r, n=n))
    clock.lap('policy', state.lengths_B)
    step_B, sstate = scorer.score_new_step(sstate, before, state)
    # Rows that added nothing (finished earlier) keep their score.
    step_B = jnp.where(jnp.isnan(step_B), score_B, step_B)
    start_B, end_B, cand_B = jax.device_get((before.lengths_B, state.lengths_B,
                                             ~before.done_B))
    new_B, pol_ctx_B, ver_ctx_B = steps_lib.span_counts(start_B, end_B)
    add(gen_tok_P, new_B); add(gen_ctx_P, pol_ctx_B)
    add(ver_tok_P, new_B); add(ver_ctx_P, ver_ctx_B)
    clock.lap('verifier', step_B)
    rank_B = step_B
    if k:
      rollout = policy.rollout(params, state, k)
      end_ro_B = jax.device_get(rollout.lengths_B)
      clock.lap('policy', end_ro_B)
      ahead_B, _ = scorer.score_new_step(scorer.fork(sstate), state, rollout)
      rank_B = jnp.where(jnp.isnan(ahead_B), step_B, ahead_B)
      new_B, pol_ctx_B, ver_ctx_B = steps_lib.span_counts(end_B, end_ro_B)
      add(gen_tok_P, new_B); add(gen_ctx_P, pol_ctx_B)
      add(ver_tok_P, new_B); add(ver_ctx_P, ver_ctx_B)
      del rollout
      clock.lap('verifier', rank_B)
    cand_B = jnp.asarray(cand_B)
    if mode == 'dvts':
      index_B = select_dvts(rank_B, cand_B, state.done_B, m=m)
    else:
      index_B = select_beam(rank_B, cand_B, state.done_B, n=n, m=m)
    state = policy.gather(state, index_B)
    sstate = scorer.reorder(sstate, index_B)
    score_B = jnp.take(rank_B, index_B)
    done_B = np.asarray(jax.device_get(state.done_B))
    clock.lap('select', score_B)

  texts = decode_texts(tokenizer, state)
  finished_PxN = done_B.reshape(p, n)
  answer_PxN = np.ones((p, n), bool)
  if mode == 'dvts':
    answer_PxN = (np.arange(n) % m == 0)[None, :].repeat(p, 0)   # slot 0 of each subtree
  any_fin_Px1 = (finished_PxN & answer_PxN).any(-1, keepdims=True)
  pool_PxN = answer_PxN & (finished_PxN | ~any_fin_Px1)
  clock.seconds['total'] = time.perf_counter() - t0
  return TreeResult(
      texts=[texts[i * n:(i + 1) * n] for i in range(p)],
      scores_PxN=np.asarray(jax.device_get(score_B)).reshape(p, n), pool_PxN=pool_PxN,
      finished_PxN=finished_PxN, prefill_tokens_P=prefill_tok_P,
      prefill_context_P=prefill_ctx_P, generated_tokens_P=gen_tok_P,
      generated_context_P=gen_ctx_P, verifier_tokens_P=ver_tok_P,
      verifier_context_P=ver_ctx_P, rounds=rounds, seconds=clock.seconds)


def pick_answers(texts: Sequence[Sequence[str]], scores_PxN, pool_PxN,
                 parse_answer: Callable[[str], str | None],
                 how: aggregate.AnswerAggregation = 'weighted'):
  """Final pick per problem among pooled rows: (answers [P] (str or None), index [P], -1 =
  no answer). how: 'weighted' (best-of-N weighted), 'majority' or 'best' (plain best-of-N)."""
  parsed = [[parse_answer(t) for t in row] for row in texts]
  ids_PxN = aggregate.answer_ids(parsed)
  ids_PxN = np.where(np.asarray(pool_PxN), ids_PxN, aggregate.NO_ANSWER)
  pick_P = aggregate.select(ids_PxN, np.asarray(scores_PxN, np.float64), how)
  answers = [parsed[i][j] if j >= 0 else None for i, j in enumerate(pick_P)]
  return answers, pick_P
