"""The policy side of search: step-wise decoding whose randomness belongs to the problem.

Search needs one thing the shared `Sampler` does not give: a problem's samples must not depend
on which other problems share its batch, or on its position there (the sampler folds the
global row index and a batch-wide decode counter into its keys). So prefill and fan-out reuse
`Sampler.start`, and decoding runs here with one PRNG key per row:

  token sampled at position t of row b  ~  fold_in(key_B[b], t)

where search derives key_B[b] from (problem id, round, slot of the row within its problem):
`problem_keys` hashes ids, `row_keys` folds in the round and the slot. Rows are the sampler's
rows (b = p * N + j) and states are its `DecodeState`, so `ttc_jax.sample.reorder`-style
gathers, the verifier and the accounting all read the same layout.

The loop mirrors the sampler's stop rules exactly (EOS, step delimiter, per-step and
per-solution token caps, step cap, full buffer), so a state can move between the two.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ttc_jax.model import transformer
from ttc_jax.model.config import ModelConfig
from ttc_jax.sample.decode import NO_LIMIT, DecodeState, Sampler


# ---- keys -------------------------------------------------------------------------------------
def problem_seeds(problem_ids: Sequence[str]) -> np.ndarray:
  """A stable 31-bit integer per problem id (crc32), so keys follow the problem, not its row."""
  return np.asarray([zlib.crc32(str(p).encode()) & 0x7FFFFFFF for p in problem_ids], np.int32)


@jax.jit
def _problem_keys(key, seeds_P):
  return jax.vmap(lambda s: jax.random.fold_in(key, s))(seeds_P)


def problem_keys(key, problem_ids: Sequence[str]) -> jax.Array:
  """Typed keys [P]: fold_in(key, crc32(problem id)). `key` typed or raw uint32[2]."""
  if not jax.dtypes.issubdtype(getattr(key, 'dtype', np.uint32), jax.dtypes.prng_key):
    key = jax.random.wrap_key_data(jnp.asarray(key, jnp.uint32))
  return _problem_keys(key, jnp.asarray(problem_seeds(problem_ids)))


@functools.partial(jax.jit, static_argnames=('n',))
def row_keys(problem_keys_P, salt, *, n: int) -> jax.Array:
  """Typed keys [P * n]: row p * n + j gets fold_in(fold_in(problem_keys_P[p], salt), j).

  salt: int32 scalar, e.g. the search round, so every round draws fresh steps.
  """
  def per_problem(k):
    k = jax.random.fold_in(k, salt)
    return jax.vmap(lambda j: jax.random.fold_in(k, j))(jnp.arange(n))
  return jax.vmap(per_problem)(problem_keys_P).reshape(-1)


# ---- the decode loop ----------------------------------------------------------------------------
def sample_rows(logits_BxV, temperature_B, key_B, position_B, *, top_k: int = 0) -> jax.Array:
  """One token per row: greedy where temperature is 0, else a Gumbel-max draw from
  softmax(logits / T) (top-k restricted when top_k > 0) with noise from
  fold_in(key_B[b], position_B[b]), which depends on the row alone."""
  v = logits_BxV.shape[-1]
  logits_BxV = logits_BxV.astype(jnp.float32)
  greedy_B = jnp.argmax(logits_BxV, axis=-1)
  scaled_BxV = logits_BxV / jnp.maximum(temperature_B, 1e-6)[:, None]
  if top_k and top_k < v:
    kth_Bx1 = jax.lax.top_k(scaled_BxV, top_k)[0][:, -1:]
    scaled_BxV = jnp.where(scaled_BxV < kth_Bx1, -jnp.inf, scaled_BxV)
  gumbel_BxV = jax.vmap(lambda k, t: jax.random.gumbel(jax.random.fold_in(k, t), (v,)))(
      key_B, position_B)
  sampled_B = jnp.argmax(scaled_BxV + gumbel_BxV, axis=-1)
  return jnp.where(temperature_B > 0, sampled_B, greedy_B).astype(jnp.int32)


def window_sizes(cache_len: int, n_windows: int) -> list[int]:
  """Static attention windows (multiples of a chunk of >= 8 slots, the last one = cache_len):
  a decode iteration reads only the smallest window holding every active row."""
  chunk = max(8, -(-cache_len // max(n_windows, 1)))
  chunk = -(-chunk // 8) * 8
  return sorted({min(w, cache_len) for w in range(chunk, cache_len + chunk, chunk)})


def _advance(params, state: DecodeState, key_B, *, config: ModelConfig, eos_id: int,
             step_ids: tuple[int, ...], top_k: int, one_step: bool,
             n_windows: int) -> DecodeState:
  """Decode until every row is done, or (one_step) has ended one more reasoning step."""
  b, s = state.tokens_BxS.shape
  slot_S = jnp.arange(s)
  step_ids_arr = jnp.asarray(step_ids if step_ids else (-1,), jnp.int32)

  def cond(window, carry):
    st, paused_B = carry
    act_B = ~st.done_B & ~paused_B
    longest = jnp.max(jnp.where(act_B, st.lengths_B, 0))
    return jnp.any(act_B) & (longest <= window)

  def body(window, carry):
    st, paused_B = carry
    act_B = ~st.done_B & ~paused_B
    pos_B = st.lengths_B - 1
    pending_Bx1 = jnp.take_along_axis(st.tokens_BxS, pos_B[:, None], axis=1)
    # Rows that do not move may sit past the window; clamp them (output dropped, no write).
    feed_B = jnp.where(act_B, pos_B, jnp.minimum(pos_B, window - 1))
    logits_Bx1xV, cache = transformer.apply_decode(
        params, pending_Bx1, feed_B[:, None], st.cache, act_B, config=config, window=window)
    new_B = sample_rows(logits_Bx1xV[:, 0], st.temperature_B, key_B, st.lengths_B,
                        top_k=top_k)
    at_new_BxS = (slot_S[None, :] == st.lengths_B[:, None]) & act_B[:, None]
    lengths_B = st.lengths_B + act_B
    step_tokens_B = st.step_tokens_B + act_B
    is_delim_B = jnp.any(new_B[:, None] == step_ids_arr[None, :], axis=-1)
    ends_solution_B = ((new_B == eos_id) | (lengths_B - st.prompt_lengths_B >= st.max_new_B)
                       | (lengths_B >= s))
    ends_step_B = act_B & (is_delim_B | ends_solution_B
                           | (step_tokens_B >= st.max_step_tokens_B))
    n_steps_B = st.n_steps_B + ends_step_B
    done_B = st.done_B | (act_B & (ends_solution_B | (n_steps_B >= st.max_steps_B)))
    st = st.replace(
        cache=cache, tokens_BxS=jnp.where(at_new_BxS, new_B[:, None], st.tokens_BxS),
        lengths_B=lengths_B, done_B=done_B, n_steps_B=n_steps_B,
        step_tokens_B=jnp.where(ends_step_B, 0, step_tokens_B),
        step_end_BxS=st.step_end_BxS | (at_new_BxS & ends_step_B[:, None]),
        counter=st.counter + 1)
    if one_step:
      paused_B = paused_B | ends_step_B
    return st, paused_B

  carry = (state, jnp.zeros((b,), bool))
  for window in window_sizes(s, n_windows):
    carry = jax.lax.while_loop(functools.partial(cond, window), functools.partial(body, window),
                               carry)
  return carry[0]


def _gather_rows(state: DecodeState, index_B) -> DecodeState:
  def take(x):
    if x.ndim == 0:
      return x
    return jnp.take(x, index_B, axis=1 if x.ndim == 5 else 0)
  return jax.tree.map(take, state)


def light_copy(state: DecodeState) -> DecodeState:
  """Everything but the cache, copied into fresh buffers (the cache becomes {}).

  Search hands the scorer the state from before a step; the step itself donates the state,
  so the 'before' view must not share its buffers. Cost: B * S int32 + bool, no cache.
  """
  return state.replace(cache={}, **{
      f.name: jnp.copy(getattr(state, f.name)) for f in dataclasses.fields(state)
      if f.name != 'cache'})


@dataclasses.dataclass
class Policy:
  """Compiled prefill (via the shared Sampler) and per-row-key decoding for one policy model.

  Static (changing them recompiles): config, eos_id, step_ids, top_k, n_windows, and shapes.
  """
  config: ModelConfig
  eos_id: int
  step_ids: tuple[int, ...] = ()
  top_k: int = 0
  n_windows: int = 4

  def __post_init__(self):
    self.step_ids = tuple(int(i) for i in self.step_ids)
    self.sampler = Sampler(self.config, eos_id=self.eos_id, step_ids=self.step_ids,
                           top_k=self.top_k, n_windows=self.n_windows)
    static = dict(config=self.config, eos_id=int(self.eos_id), step_ids=self.step_ids,
                  top_k=int(self.top_k), n_windows=int(self.n_windows))
    # The search loop owns its state and donates it; rollouts read a state that search keeps,
    # so they get a non-donating twin.
    self._step = jax.jit(functools.partial(_advance, one_step=True, **static),
                         donate_argnums=(1,))
    self._finish = jax.jit(functools.partial(_advance, one_step=False, **static),
                           donate_argnums=(1,))
    self._rollout = jax.jit(functools.partial(_advance, one_step=False, **static))
    self._gather = jax.jit(_gather_rows, donate_argnums=(0,))

  def start(self, params, prompts_PxL, lengths_P, *, n: int, cache_len: int,
            temperature=1.0, max_new_tokens=NO_LIMIT, max_step_tokens=NO_LIMIT,
            max_steps=NO_LIMIT) -> DecodeState:
    """Prefill P prompts once and fan out to P * n rows (row p * n + j); see Sampler.start.

    The sampler's own key is unused: every draw here comes from the row keys.
    """
    return self.sampler.start(params, prompts_PxL, lengths_P, jax.random.key(0), n_samples=n,
                              cache_len=cache_len, temperature=temperature,
                              max_new_tokens=max_new_tokens, max_step_tokens=max_step_tokens,
                              max_steps=max_steps)

  def extend_one_step(self, params, state: DecodeState, key_B) -> DecodeState:
    """Every unfinished row advances exactly one reasoning step. Donates `state`."""
    return self._step(params, state, key_B)

  def finish(self, params, state: DecodeState, key_B) -> DecodeState:
    """Every row decodes to its end (EOS or a cap). Donates `state`."""
    return self._finish(params, state, key_B)

  def rollout(self, params, state: DecodeState, n_steps: int) -> DecodeState:
    """Greedy (temperature 0) continuation of every unfinished row by up to `n_steps` more
    steps, stopping early at the end of the solution. `state` is kept (not donated)."""
    key_B = jax.random.split(jax.random.key(0), state.batch)   # unused at temperature 0
    ro = state.replace(temperature_B=jnp.zeros_like(state.temperature_B),
                       max_steps_B=jnp.minimum(state.max_steps_B, state.n_steps_B + n_steps))
    return self._rollout(params, ro, key_B)

  def gather(self, state: DecodeState, index_B) -> DecodeState:
    """Row b of the result is row index_B[b] of `state`. Donates `state`."""
    return self._gather(state, jnp.asarray(index_B, jnp.int32))


# ---- token counts -------------------------------------------------------------------------------
def span_counts(start_B, end_B) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Per-row counts of a decode span from length start_B to end_B (host numpy, int64/float64).

  Returns (new tokens n_B, policy decode context sum, verifier context sum) in tokens and
  key-tokens. The policy re-feeds the pending token at position start - 1, so its i-th new
  token costs a forward attending to start + i keys (i = 0..n-1); an incremental verifier
  holds `start` tokens and feeds the n new ones at positions start..start+n-1, attending to
  start + i + 1 keys.
  """
  start_B = np.asarray(start_B, np.int64)
  n_B = np.maximum(np.asarray(end_B, np.int64) - start_B, 0)
  tri_B = n_B * (n_B + 1) / 2.0
  policy_ctx_B = n_B * (start_B - 1) + tri_B
  verifier_ctx_B = n_B * start_B + tri_B
  return n_B, policy_ctx_B, verifier_ctx_B
