"""What search asks of a verifier: score each row's newest step, follow the rows when they move.

  scorer_state = scorer.init(problems, state0)                 # rows of state0: p * n + j
  scores_B, scorer_state = scorer.score_new_step(scorer_state, before, after)
  scorer_state = scorer.reorder(scorer_state, index_B)         # same gather as the policy's
  spare = scorer.fork(scorer_state)                            # a copy safe to consume

`score_new_step` returns, per row, the verifier's score at the end of the tokens added between
`before` and `after` (a step, a lookahead rollout or a whole solution: the 'last step' score
of the paper, its best step aggregation). Rows that added nothing get NaN; search keeps their
earlier score. `before` is a cache-less copy of the policy state (see `steps.light_copy`):
scorers read lengths and tokens, never the policy's cache.

Token accounting for the verifier is done by search, not by the scorer: an incremental
verifier processes each problem's prompt once (`init`) and then every new span once, which is
exactly what `score_new_step` is asked to score. `config` names the model that did it, for
FLOPs (None: a non-model oracle, counted on the policy's config as if a same-size PRM).

Two scorers:
  * `PRMScorer`: the trained PRM of ttc_jax.verify.prm, scored incrementally against its own
    KV cache (compiled).
  * `OracleScorer`: the arithmetic task's exact step oracle, for tests and ablations. It runs
    on the host between compiled rounds (not under jax.pure_callback): it reads the tokens
    once per round, decodes text and calls `step_correctness`; fine for tests, not for speed.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from ttc_jax.data.problems import ProblemSet
from ttc_jax.data.tokenizer import Tokenizer
from ttc_jax.model import transformer
from ttc_jax.model.config import ModelConfig
from ttc_jax.sample.decode import DecodeState, bucket_length


class StepScorer(Protocol):
  """The verifier interface of search (see the module docstring)."""
  config: ModelConfig | None

  def init(self, problems: ProblemSet, state: DecodeState) -> Any:
    """Scorer state for the rows of `state` (row p * n + j holds problem p), at the prompt."""

  def score_new_step(self, scorer_state, before: DecodeState,
                     after: DecodeState) -> tuple[jax.Array, Any]:
    """(scores_B float32 at each row's last new token, NaN where none; new scorer state).
    May consume `scorer_state` (fork first to keep it)."""

  def reorder(self, scorer_state, index_B) -> Any:
    """Row b of the result is row index_B[b] (index_B: int [B'])."""

  def fork(self, scorer_state) -> Any:
    """An independent copy (lookahead scores a throw-away rollout from it)."""


def rows_per_problem(problems: ProblemSet, state: DecodeState) -> int:
  p = len(problems)
  if p == 0 or state.batch % p:
    raise ValueError(f'state has {state.batch} rows, not a multiple of {p} problems.')
  return state.batch // p


# ---- the exact oracle ---------------------------------------------------------------------------
@dataclasses.dataclass
class OracleScorer:
  """1.0 if the solution so far is still on the one correct path (every step right), else 0.

  step_correctness: (question, solution text) -> per-line bools, e.g.
    `ttc_jax.data.arith.step_correctness` (cumulative: one mistake makes later steps wrong).
  Host-side, between compiled rounds: state = numpy array of each row's question.
  """
  tokenizer: Tokenizer
  step_correctness: Callable[[str, str], list[bool]]
  config: ModelConfig | None = None

  def init(self, problems: ProblemSet, state: DecodeState) -> np.ndarray:
    n = rows_per_problem(problems, state)
    return np.repeat(np.asarray(problems.questions, dtype=object), n)

  def score_new_step(self, scorer_state, before: DecodeState, after: DecodeState):
    start_B, end_B, prompt_B, tokens_BxS = jax.device_get(
        (before.lengths_B, after.lengths_B, after.prompt_lengths_B, after.tokens_BxS))
    scores_B = np.full(len(end_B), np.nan, np.float32)
    for b in np.flatnonzero(end_B > start_B):  # host loop: the oracle is for tests, not speed
      text = self.tokenizer.decode(tokens_BxS[b, prompt_B[b]:end_B[b]])
      labels = self.step_correctness(str(scorer_state[b]), text)
      scores_B[b] = float(bool(labels) and labels[-1])
    return jnp.asarray(scores_B), scorer_state

  def reorder(self, scorer_state, index_B):
    return scorer_state[np.asarray(index_B)]

  def fork(self, scorer_state):
    return scorer_state   # immutable in use: reorder builds a new array


# ---- the trained PRM ----------------------------------------------------------------------------
_repeat_rows_jit = jax.jit(transformer.cache_repeat_rows, static_argnums=(1,))
_gather_cache_jit = jax.jit(transformer.cache_take_rows, donate_argnums=(0,))
_copy_jit = jax.jit(lambda c: jax.tree.map(jnp.copy, c))


@dataclasses.dataclass
class PRMScorer:
  """Adapter over ttc_jax.verify.prm: incremental scoring with the PRM's own KV cache.

  init prefills each prompt once (P rows) and fans the cache out to the n rows of its problem,
  as the policy sampler does. Each call feeds only the tokens new since the last call, padded
  to a length bucket (so widths compile a few shapes), and reads the score at the last one.

  params: verifier params {'base', 'head'}; config: the verifier's ModelConfig.
  cache_len: policy cache length S (tokens).
  span_slots: extra verifier slots past S (default S): `extend_and_score` writes a whole
    padded block of new tokens after each row's length, so the widest span scored at once
    must fit: a whole solution for best-of-N, a step (beam search) or k + 1 steps
    (lookahead) otherwise. Beam search at scale can pass (k + 1) * max_step_tokens rounded
    up to 8 and save memory.
  """
  params: Any
  config: ModelConfig
  cache_len: int
  span_slots: int | None = None

  @property
  def _span(self) -> int:
    return int(self.span_slots or self.cache_len)

  def init(self, problems: ProblemSet, state: DecodeState):
    from ttc_jax.verify import prm   # the verifier layer is optional for oracle-only users
    n = rows_per_problem(problems, state)
    lengths_P = np.asarray(problems.lengths, np.int32)
    width = min(bucket_length(int(lengths_P.max())), problems.prompts.shape[1])
    prompts_PxT = np.asarray(problems.prompts[:, :width], np.int32)
    cache = prm.init_cache(self.config, len(problems), self.cache_len + self._span)
    _, cache = prm.extend_and_score(self.params, cache, prompts_PxT,
                                    np.zeros(len(problems), np.int32), lengths_P,
                                    config=self.config)
    return _repeat_rows_jit(cache, n)

  def score_new_step(self, scorer_state, before: DecodeState, after: DecodeState):
    from ttc_jax.verify import prm
    start_B, end_B = before.lengths_B, after.lengths_B
    widest = int(jax.device_get(jnp.max(end_B - start_B)))
    if widest > self._span:
      raise ValueError(f'PRMScorer: a span of {widest} new tokens exceeds span_slots='
                       f'{self._span}; raise span_slots.')
    width = min(bucket_length(max(widest, 1), (8, 16, 32, 64, 128, 256, 512, 1024, 2048)),
                self._span)
    new_BxT, n_new_B = prm.gather_new_tokens(after.tokens_BxS, start_B, end_B, width=width)
    scores_BxT, cache = prm.extend_and_score(self.params, scorer_state, new_BxT, start_B,
                                             n_new_B, config=self.config)
    return prm.last_score(scores_BxT, n_new_B), cache

  def reorder(self, scorer_state, index_B):
    return _gather_cache_jit(scorer_state, jnp.asarray(index_B, jnp.int32))

  def fork(self, scorer_state):
    return _copy_jit(scorer_state)
