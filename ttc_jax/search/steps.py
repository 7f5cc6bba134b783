"""The policy side of search: step-wise decoding whose randomness belongs to the problem.

A problem's samples must not depend on which other problems share its batch, or on its
position there. The shared `Sampler` decodes with one PRNG key per row when given `row_keys`:

  token sampled at position t of row b  ~  fold_in(key_B[b], t)

and search derives key_B[b] from (problem id, round, slot of the row within its problem):
`problem_keys` hashes ids, `row_keys` folds in the round and the slot. Rows are the sampler's
rows (b = p * N + j) and states its `DecodeState`, so gathers, the verifier and the
accounting all read the same layout.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ttc_jax.model.config import ModelConfig
from ttc_jax.sample.decode import NO_LIMIT, DecodeState, Sampler, reorder


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
  """Search's view of the shared `Sampler`: prefill and fan-out, then decoding with one PRNG
  key per row (the sampler's `row_keys` mode), so a problem's samples follow its own keys.

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
    return self.sampler.extend_one_step(params, state, row_keys=key_B)

  def finish(self, params, state: DecodeState, key_B) -> DecodeState:
    """Every row decodes to its end (EOS or a cap). Donates `state`."""
    return self.sampler.generate(params, state, row_keys=key_B)

  def rollout(self, params, state: DecodeState, n_steps: int) -> DecodeState:
    """Greedy (temperature 0) continuation of every unfinished row by up to `n_steps` more
    steps, stopping early at the end of the solution. `state` is kept (not donated)."""
    key_B = jax.random.split(jax.random.key(0), state.batch)   # unused at temperature 0
    ro = state.replace(temperature_B=jnp.zeros_like(state.temperature_B),
                       max_steps_B=jnp.minimum(state.max_steps_B, state.n_steps_B + n_steps))
    return self.sampler.generate(params, ro, row_keys=key_B, donate=False)

  def gather(self, state: DecodeState, index_B) -> DecodeState:
    """Row b of the result is row index_B[b] of `state`. Donates `state`."""
    return reorder(state, index_B)


def check_cache_fits(method: str, max_rounds: int, max_step_tokens: int,
                     longest_prompt: int, cache_len: int) -> None:
  """ValueError naming the settings when the longest prompt plus max_rounds steps of
  max_step_tokens tokens cannot fit the cache (checked before any compute)."""
  need = max_rounds * max_step_tokens + longest_prompt
  if need > cache_len:
    raise ValueError(
        f'{method}: max_rounds={max_rounds} x max_step_tokens={max_step_tokens} + the longest '
        f'prompt ({longest_prompt} tokens) = {need} tokens exceeds cache_len={cache_len}; '
        f'raise cache_len or lower max_rounds / max_step_tokens.')


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
