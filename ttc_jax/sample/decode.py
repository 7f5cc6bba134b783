"""Batched sampling: prefill once per prompt, fan out to N samples, one compiled decode loop.

  sampler = Sampler(cfg, eos_id=tok.eos_id, step_ids=tok.step_ids)
  state = sampler.start(params, prompts_PxL, lengths_P, key, n_samples=N, cache_len=S,
                        temperature=0.8, max_new_tokens=256)
  state = sampler.generate(params, state)          # to EOS / caps, all rows
  state = sampler.extend_one_step(params, state)   # or: one reasoning step per row
  state = reorder(state, index_B)                  # search: keep / duplicate rows

Row b = p * N + n holds sample n of prompt p. Everything a row owns (cache, tokens, counters,
limits) is indexed by b, so search algorithms reorder rows with one gather.

Invariant of a `DecodeState` between calls: tokens_BxS[b, :lengths_B[b]] is the row's text
(prompt then generated); cache slots 0 .. lengths-2 hold its keys and values; the last token
(at lengths-1) is 'pending': the next decode iteration feeds it and samples the token after
it. A finished row (done_B) is never advanced again and its cache is never written.

Randomness: the token sampled at decode iteration `counter` for row b uses
fold_in(fold_in(key, counter), b) with b the global row index, so samples do not depend on
how rows are sharded over devices, and a prompt prefilled once and fanned out gives the same
samples as N separate copies of it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Any, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ttc_jax.model import transformer
from ttc_jax.model.config import ModelConfig
from ttc_jax.sharding import param_shardings

DEFAULT_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
NO_LIMIT = np.iinfo(np.int32).max // 2
# XLA options a Sampler compiles with on a GPU, under any the caller gives. CONCURRENT builds
# each CUDA graph as a dependency graph of its kernels (from the buffers they read and
# write) instead of serialising them in schedule order, so independent kernels of a decode
# step may overlap. Measured on an H200 in one process (experiments/results/
# h200_2026-11-29h/nano): +1.9% at S/4096 and +2.0% at M/1024; the same tokens and the same
# compiled memory (`experiments/gpu/conc_check.py`).
# Every matmul goes to cuBLAS with its own heuristic choice of algorithm (no Triton GEMMs, no
# autotuning). Measured on an H200 in one process (results/h200_2026-11-29k/cublas): M/1024
# 0.664-0.666M against 0.639-0.645M tokens/s, S/4096 6.54-6.85M against 6.69-6.78M, compile
# 3-6 s against 4-10 s. A row's tokens then no longer depend on how many rows share its
# device: the first half of M/1024's rows decoded alone equals them in the whole batch for
# every row, against 72% with the autotuned GEMMs, whose tiling follows the batch
# (results/h200_2026-11-29k/invariance). Training keeps XLA's own choices.
GPU_COMPILER_OPTIONS = {'xla_gpu_command_buffer_scheduling_mode': 'CONCURRENT',
                        'xla_gpu_enable_triton_gemm': False, 'xla_gpu_autotune_level': 0}


@flax.struct.dataclass
class DecodeState:
  """The decode loop's state; a pytree, so it goes in and out of jit (and is donated).

  cache:             {'kv'}: [L, B, 2, K, S', H] compute dtype (keys, values); slot s =
                     position s. S' = cache_len, or kv_slots(cache_len) with the Pallas
                     kernel (slots past cache_len are never used).
  tokens_BxS:        int32, prompt then generated tokens; pad (stale) past lengths_B.
  lengths_B:         int32, tokens in the row (prompt + generated).
  prompt_lengths_B:  int32, prompt tokens (so generated = lengths - prompt_lengths).
  done_B:            bool, the solution is finished (EOS, token cap, step cap or buffer full).
  n_steps_B:         int32, reasoning steps completed (a truncated last step counts).
  step_tokens_B:     int32, tokens generated so far in the current, unfinished step.
  step_end_BxS:      bool, True at the index of each token that ended a step (a delimiter,
                     EOS, the per-step cap or the solution cap).
  temperature_B:     float32, 0 means greedy.
  top_p_B:           float32 in (0, 1]; only applied when the sampler's top-p flag is on.
  max_new_B:         int32, cap on generated tokens per solution.
  max_step_tokens_B: int32, cap on tokens per reasoning step (the step is cut there).
  max_steps_B:       int32, cap on reasoning steps per solution.
  key:               typed PRNG key (scalar), the base of every row's randomness.
  counter:           int32 scalar, decode iterations run so far (folded into the keys).
  """
  cache: dict
  tokens_BxS: jax.Array
  lengths_B: jax.Array
  prompt_lengths_B: jax.Array
  done_B: jax.Array
  n_steps_B: jax.Array
  step_tokens_B: jax.Array
  step_end_BxS: jax.Array
  temperature_B: jax.Array
  top_p_B: jax.Array
  max_new_B: jax.Array
  max_step_tokens_B: jax.Array
  max_steps_B: jax.Array
  key: jax.Array
  counter: jax.Array

  @property
  def n_generated_B(self) -> jax.Array:
    """Generated tokens per row (for exact FLOPs accounting)."""
    return self.lengths_B - self.prompt_lengths_B

  @property
  def batch(self) -> int:
    return self.tokens_BxS.shape[0]

  @property
  def cache_len(self) -> int:
    return self.tokens_BxS.shape[1]


def kv_slots(cache_len: int) -> int:
  """Cache slots per row with the Pallas decode kernel: cache_len padded so the kernel reads
  it in full-size blocks (`pallas_decode.whole_block_window`: up to twice cache_len for
  caches up to 128 slots, else up to 63 more slots)."""
  from ttc_jax.model.pallas_decode import whole_block_window
  return whole_block_window(cache_len)


def bucket_length(n: int, buckets: Sequence[int] = DEFAULT_BUCKETS) -> int:
  """The smallest bucket >= n (prompts are padded to it, so lengths inside share a compile)."""
  for b in buckets:
    if b >= n:
      return int(b)
  return int(n)


def state_shardings(state: DecodeState, mesh: Mesh) -> DecodeState:
  """Rows over 'data': the cache on its batch axis, per-row arrays on axis 0; scalars copied."""
  def one(x):
    nd = len(x.shape)
    return NamedSharding(mesh, P() if nd == 0 else P('data', *([None] * (nd - 1))))
  cache = {name: NamedSharding(mesh, P(*[None] * transformer.CACHE_BATCH_AXIS, 'data'))
           for name in state.cache}
  return jax.tree.map(one, state.replace(cache={})).replace(cache=cache)


# ---- sampling --------------------------------------------------------------------------------
def sample_tokens(logits_BxV, temperature_B, top_p_B, key, counter, *, top_k: int = 0,
                  use_top_p: bool = False, row_keys_B=None, positions_B=None):
  """One token per row: greedy where temperature is 0, else softmax(logits / T) restricted to
  the top-k (static k; 0 = off) and the top-p nucleus (only when `use_top_p`, a static flag,
  so the sort is not paid when no row uses it).

  Gumbel noise: by default row b draws from fold_in(fold_in(key, counter), b), independent of
  the batch's sharding. With `row_keys_B` (typed keys [B]) row b draws from
  fold_in(row_keys_B[b], positions_B[b]) instead: the row's own stream, the same whatever
  else shares its batch (search keys rows by problem, round and slot).
  """
  b, v = logits_BxV.shape
  logits_BxV = logits_BxV.astype(jnp.float32)
  greedy_B = jnp.argmax(logits_BxV, axis=-1)
  scaled_BxV = logits_BxV / jnp.maximum(temperature_B, 1e-6)[:, None]
  if top_k and top_k < v:
    kth_Bx1 = jax.lax.top_k(scaled_BxV, top_k)[0][:, -1:]
    scaled_BxV = jnp.where(scaled_BxV < kth_Bx1, -jnp.inf, scaled_BxV)
  if use_top_p:
    sorted_BxV = -jnp.sort(-scaled_BxV, axis=-1)
    probs_BxV = jax.nn.softmax(sorted_BxV, axis=-1)
    # Keep a token while the mass strictly before it is below p (the top token always stays).
    keep_BxV = (jnp.cumsum(probs_BxV, axis=-1) - probs_BxV) < top_p_B[:, None]
    min_kept_Bx1 = jnp.min(jnp.where(keep_BxV, sorted_BxV, jnp.inf), axis=-1, keepdims=True)
    scaled_BxV = jnp.where(scaled_BxV < min_kept_Bx1, -jnp.inf, scaled_BxV)
  if row_keys_B is None:
    step_key = jax.random.fold_in(key, counter)
    gumbel_BxV = jax.vmap(lambda r: jax.random.gumbel(jax.random.fold_in(step_key, r), (v,)))(
        jnp.arange(b))
  else:
    gumbel_BxV = jax.vmap(lambda k, t: jax.random.gumbel(jax.random.fold_in(k, t), (v,)))(
        row_keys_B, positions_B)
  sampled_B = jnp.argmax(scaled_BxV + gumbel_BxV, axis=-1)
  return jnp.where(temperature_B > 0, sampled_B, greedy_B).astype(jnp.int32)


# ---- the compiled pieces ---------------------------------------------------------------------
def _start(params, prompts_PxL, lengths_P, temperature_B, top_p_B, max_new_B,
           max_step_tokens_B, max_steps_B, key, *, config: ModelConfig, n_samples: int,
           cache_len: int, slots: int = 0) -> DecodeState:
  """Prefill P prompts once, then fan each prompt's cache out to n_samples rows.

  slots: KV cache slots per row (0: cache_len); more than cache_len pads the cache for the
  Pallas kernel's blocks (`kv_slots`); slots past cache_len are never written or read."""
  p, lb = prompts_PxL.shape
  positions_PxL = jnp.broadcast_to(jnp.arange(lb, dtype=jnp.int32), (p, lb))
  cache = transformer.init_cache(config, p, lb)
  # Hidden states are discarded: the first decode iteration re-feeds the last prompt token
  # (the 'pending' token) and samples from its logits, so prefill needs no unembedding.
  _, cache = transformer.apply_features(params, prompts_PxL, positions_PxL, cache,
                                        config=config)
  b = p * n_samples
  full = transformer.init_cache(config, b, slots or cache_len)
  cache = jax.tree.map(
      lambda f, c: jax.lax.dynamic_update_slice_in_dim(f, c, 0, transformer.CACHE_SLOT_AXIS),
      full, transformer.cache_repeat_rows(cache, n_samples))
  tokens_BxS = jnp.zeros((b, cache_len), jnp.int32).at[:, :lb].set(
      jnp.repeat(prompts_PxL, n_samples, axis=0))
  lengths_B = jnp.repeat(lengths_P, n_samples).astype(jnp.int32)
  done_B = (max_new_B <= 0) | (max_steps_B <= 0) | (lengths_B >= cache_len)
  zeros_B = jnp.zeros((b,), jnp.int32)
  return DecodeState(
      cache=cache, tokens_BxS=tokens_BxS, lengths_B=lengths_B, prompt_lengths_B=lengths_B,
      done_B=done_B, n_steps_B=zeros_B, step_tokens_B=zeros_B,
      step_end_BxS=jnp.zeros((b, cache_len), bool), temperature_B=temperature_B,
      top_p_B=top_p_B, max_new_B=max_new_B, max_step_tokens_B=max_step_tokens_B,
      max_steps_B=max_steps_B, key=key, counter=jnp.zeros((), jnp.int32))


def auto_windows(config: ModelConfig) -> int:
  """Windows for n_windows=0 with the XLA attention: each window compiles its own copy of
  the (unrolled) layers, so deep models get fewer (about 48 layer bodies: compile stays
  under ~30 s on an H200)."""
  if not config.decode_unroll:
    return 8
  return int(np.clip(48 // config.n_layers, 2, 8))


# The Pallas decode's attention windows below the cache's slots (each a power of two read as
# one block, `pallas_decode.auto_block`). While every active row fits in 64 slots, a program
# loads a 64-slot block instead of a mostly masked 128-slot one: measured on an H200 in one
# process (experiments/results/h200_2026-11-29l/windows), [64, 128] against one 128-slot
# window gave M/1024 0.680-0.683M against 0.662M tokens/s and S/4096 7.03-7.07M against
# 6.86-6.95M (the kernel alone at 48 live slots: 48-58 against 64-89 us per M layer).
PALLAS_WINDOWS = (64, 128)


def pallas_windows(slots: int) -> list[int]:
  """The Pallas decode's windows for a cache of `slots` slots: PALLAS_WINDOWS below it, then
  the whole cache (whose rows the kernel reads in blocks up to each row's length)."""
  return [w for w in PALLAS_WINDOWS if w < slots] + [slots]


def _windows(slots: int, n_windows: int) -> list[int]:
  """Static attention windows: multiples of a chunk (of 8 slots at least) ending at the
  cache's `slots`."""
  chunk = max(8, -(-slots // n_windows))
  chunk = -(-chunk // 8) * 8
  return sorted({min(w, slots) for w in range(chunk, slots + chunk, chunk)})


def _decode(params, state: DecodeState, row_keys_B=None, *, config: ModelConfig, eos_id: int,
            step_ids: tuple[int, ...], top_k: int, use_top_p: bool, one_step: bool,
            windows: tuple[int, ...], steps_per_loop: int = 1) -> DecodeState:
  """Advance rows until each is done (or, with one_step, has ended one reasoning step).

  A sequence of `lax.while_loop`s, one per static attention window W (ascending, the last
  the cache's slots): loop W runs while the longest active row fits in W slots, so a step
  reads only the live prefix of the cache rounded up to the window, not all S slots. All
  limits are arrays in the state, so new budgets, temperatures or step caps never recompile.

  steps_per_loop > 1 runs that many decode steps per loop iteration (fewer loop-condition
  round trips to the host; a step with no active row changes nothing, counter included, so
  the samples are the same). Windows below S then get a one-step loop after the multi-step
  one, for the steps that would cross the window's end.
  """
  b, s = state.tokens_BxS.shape
  slots_S = jnp.arange(s)
  if config.decode_unroll:
    # Per-layer weight buffers, made once per call rather than sliced from the stack each
    # step, with q/k/v and gate/up concatenated (measured on an H200: 6% faster at M/1024 and
    # 3% at S/4096 than leaving XLA to merge the separate matmuls) and the pre-norms' gains
    # folded into them (the norms become row scales of the products).
    params = transformer.split_layers(params, fuse=True, config=config)
  # The body has no reduction across rows: XLA fuses one (the old `counter + any(active)`)
  # with the step's per-row bookkeeping into a single-block kernel on the path between steps
  # (6.6-7.1 us per step on an H200 at M/1024). A row is active in a prefix of the steps run
  # (done and paused never clear within a call), so the steps that advanced some row are the
  # first ones: step j samples with counter0 + j, and the state's counter grows by the most
  # steps any row advanced, the same values as counting steps with an active row.
  counter0, lengths0_B = state.counter, state.lengths_B

  def active(st, paused_B):
    return ~st.done_B & ~paused_B

  def cond(window, ahead, carry):
    # Some row is active and the longest still fits the window `ahead` steps later (active
    # rows grow by one per step).
    st, paused_B = carry[:2]
    act_B = active(st, paused_B)
    longest = jnp.max(jnp.where(act_B, st.lengths_B, 0))
    return jnp.any(act_B) & (longest + ahead <= window)

  def body(window, carry):
    # pending_B: each row's last token, carried from the step that sampled it so the next
    # step need not wait for the token buffer's update (an inactive row's is stale, unused).
    st, paused_B, step, pending_B = carry
    act_B = active(st, paused_B)
    pos_B = st.lengths_B - 1
    # Inactive rows may sit past the window: clamp their position (their output is dropped
    # and their cache is not written).
    feed_pos_B = jnp.where(act_B, pos_B, jnp.minimum(pos_B, window - 1))
    logits_Bx1xV, cache = transformer.apply_decode(
        params, pending_B[:, None], feed_pos_B[:, None], st.cache, act_B, config=config,
        window=window)
    # Per-row streams are keyed by the position being written (the row's length).
    new_B = sample_tokens(logits_Bx1xV[:, 0], st.temperature_B, st.top_p_B, st.key,
                          counter0 + step, top_k=top_k, use_top_p=use_top_p,
                          row_keys_B=row_keys_B, positions_B=st.lengths_B)
    at_new_BxS = (slots_S[None, :] == st.lengths_B[:, None]) & act_B[:, None]
    lengths_B = st.lengths_B + act_B
    n_gen_B = lengths_B - st.prompt_lengths_B
    step_tokens_B = st.step_tokens_B + act_B
    is_eos_B = new_B == eos_id
    is_delim_B = functools.reduce(jnp.logical_or, [new_B == i for i in step_ids],
                                  jnp.zeros_like(act_B))
    stop_solution_B = is_eos_B | (n_gen_B >= st.max_new_B) | (lengths_B >= s)
    step_end_B = act_B & (is_delim_B | stop_solution_B | (step_tokens_B >= st.max_step_tokens_B))
    n_steps_B = st.n_steps_B + step_end_B
    done_B = st.done_B | (act_B & (stop_solution_B | (n_steps_B >= st.max_steps_B)))
    st = st.replace(
        cache=cache,
        tokens_BxS=jnp.where(at_new_BxS, new_B[:, None], st.tokens_BxS),
        lengths_B=lengths_B, done_B=done_B, n_steps_B=n_steps_B,
        step_tokens_B=jnp.where(step_end_B, 0, step_tokens_B),
        step_end_BxS=st.step_end_BxS | (at_new_BxS & step_end_B[:, None]))
    if one_step:
      paused_B = paused_B | step_end_B
    return st, paused_B, step + 1, new_B

  def steps_body(window, steps, carry):
    for _ in range(steps):
      carry = body(window, carry)
    return carry

  pending_B = jnp.take_along_axis(state.tokens_BxS, state.lengths_B[:, None] - 1, axis=1)[:, 0]
  carry = (state, jnp.zeros((b,), bool), jnp.zeros((), jnp.int32), pending_B)
  k = steps_per_loop
  for window in windows:
    # (steps per iteration, steps ahead that must fit the window). In the last window (W = S)
    # active rows never pass the end (a row is done when it fills its buffer), so one loop
    # finishes every row; an earlier window needs a one-step tail for the steps that would
    # cross its end.
    loops = [(k, 0)] if window >= s or k == 1 else [(k, k - 1), (1, 0)]
    for steps, ahead in loops:
      carry = jax.lax.while_loop(functools.partial(cond, window, ahead),
                                 functools.partial(steps_body, window, steps), carry)
  st = carry[0]
  return st.replace(counter=counter0 + jnp.max(st.lengths_B - lengths0_B))


def _reorder(state: DecodeState, index_B) -> DecodeState:
  def take(x):
    return x if len(x.shape) == 0 else jnp.take(x, index_B, axis=0)
  return jax.tree.map(take, state.replace(cache={})).replace(
      cache=transformer.cache_take_rows(state.cache, index_B))


_reorder_jit = jax.jit(_reorder, donate_argnums=(0,))


def reorder(state: DecodeState, index_B) -> DecodeState:
  """Row b of the result is row index_B[b] of `state` (cache, tokens, counters, limits).

  index_B: int [B'] (B' may differ from B: keep, drop or duplicate rows). The key and the
  counter are shared, so duplicated rows still sample differently afterwards (the row index
  is folded into every row's key). `state` is donated: do not use it afterwards.
  """
  return _reorder_jit(state, jnp.asarray(index_B, jnp.int32))


# ---- the user-facing sampler -----------------------------------------------------------------
def _row_array(value, p: int, n: int, dtype, name: str) -> np.ndarray:
  """A scalar, a [P] per-prompt or a [P * N] per-row value as a [P * N] array."""
  arr = np.asarray(value, dtype)
  if arr.ndim == 0:
    return np.full((p * n,), arr, dtype)
  if arr.shape == (p,):
    return np.repeat(arr, n)
  if arr.shape == (p * n,):
    return arr
  raise ValueError(f'{name} must be a scalar, [P]={p} or [P*N]={p * n} values, got shape '
                   f'{arr.shape}.')


@dataclasses.dataclass
class Sampler:
  """Compiled prefill / decode / one-step functions for one model config and token ids.

  Static (changing them recompiles): config, eos_id, step_ids, top_k, whether any row uses
  top-p, the prompt bucket, P, N, cache_len. Everything else is an array.

  mesh: optional; rows are then sharded over its 'data' axis (B must divide evenly) and
    params placed by `param_shardings`. The decode is traced under the mesh, so the Pallas
    kernels run on each device's rows (`transformer.over_row_shards`). On CPU (8 fake
    devices in the tests) the same seed gives the same samples as one device; on GPUs the
    per-device batch changed XLA's autotuned matmul tilings and so the rounding (2 H200s:
    74-93% of rows identical), which GPU_COMPILER_OPTIONS' untuned cuBLAS matmuls avoid
    (one H200: a row's tokens the same with half the batch on its device).
  n_windows: number of static attention windows the cache is split into (more windows read
    less of the cache per step but compile more loop bodies); 0: `auto_windows(config)`.
    XLA attention only: the Pallas kernel, which reads only each row's live prefix, always
    uses `pallas_windows` (64 and 128 slots, then the whole cache), whatever is asked.
  steps_per_loop: decode steps per iteration of `generate`'s decode loop (more: fewer host
    round trips for the loop condition, more compiled steps, and up to steps_per_loop - 1
    idle steps at the end of a call); the samples do not depend on it. 0: 2 with the Pallas
    kernel or one window (measured 2% faster on an H200), else 1 (each window would compile
    two more loop bodies). `extend_one_step` runs one step per iteration: its
    calls are short, so idle steps would cost more there.
  compiler_options: XLA options for this sampler's compiled functions only (jax.jit's
    `compiler_options`, e.g. {'xla_gpu_enable_command_buffer': ''}); on a GPU they are
    applied over GPU_COMPILER_OPTIONS (give 'xla_gpu_command_buffer_scheduling_mode': 'LHS'
    for XLA's own default).
  """
  config: ModelConfig
  eos_id: int
  step_ids: tuple[int, ...] = ()
  top_k: int = 0
  mesh: Mesh | None = None
  buckets: Sequence[int] = DEFAULT_BUCKETS
  n_windows: int = 0
  steps_per_loop: int = 0
  compiler_options: dict[str, Any] | None = None

  def __post_init__(self):
    self.step_ids = tuple(int(i) for i in self.step_ids)
    if self.n_windows < 0:
      raise ValueError(f'n_windows must be >= 0 (0 = auto), got {self.n_windows}.')
    # With the Pallas kernel the KV cache is padded to `kv_slots` (whole blocks) and the
    # windows are `pallas_windows` (n_windows 0).
    self._pad_kv = transformer.decode_attention_kind(self.config) == 'pallas'
    if self._pad_kv:
      self.n_windows = 0
    else:
      self.n_windows = int(self.n_windows) or auto_windows(self.config)
    if not isinstance(self.steps_per_loop, (int, np.integer)) or self.steps_per_loop < 0:
      raise ValueError(f"steps_per_loop must be an integer >= 0 (0 = auto), got "
                       f"{self.steps_per_loop!r}.")
    self.steps_per_loop = int(self.steps_per_loop) or (
        2 if self._pad_kv or self.n_windows == 1 else 1)
    if self.top_k < 0:
      raise ValueError(f'top_k must be >= 0 (0 = off), got {self.top_k}.')
    if jax.default_backend() == 'gpu':
      self.compiler_options = {**GPU_COMPILER_OPTIONS, **(self.compiler_options or {})}
    self._jits: dict[Any, Any] = {}

  # Compiled functions are built lazily: with a mesh, their shardings need the params' tree.
  # Decoding donates its state unless `name` says 'keep' (search rollouts read a state they
  # must not consume); per-row keys, when given, are sharded like the rows.
  def _jit(self, name, fn, params, state_like=None, **static):
    key = (name, tuple(sorted(static.items())))
    if key not in self._jits:
      fn = functools.partial(fn, config=self.config, **static)
      donate = (1,) if name.startswith('decode') and 'keep' not in name else ()
      jit = functools.partial(jax.jit, compiler_options=self.compiler_options)
      if self.mesh is None:
        self._jits[key] = jit(fn, donate_argnums=donate)
      else:
        ps = param_shardings(params, self.mesh)
        if name == 'start':
          out = state_shardings(state_like, self.mesh)
          self._jits[key] = jit(fn, in_shardings=(ps,) + (None,) * 8, out_shardings=out)
        else:
          ss = state_shardings(state_like, self.mesh)
          rows = NamedSharding(self.mesh, P('data')) if 'rowkeys' in name else None
          self._jits[key] = jit(fn, in_shardings=(ps, ss, rows), out_shardings=ss,
                                donate_argnums=donate)
    return self._jits[key]

  def windows(self, slots: int) -> list[int]:
    """The decode's static attention windows (ascending) for a KV cache of `slots` slots."""
    return pallas_windows(slots) if self._pad_kv else _windows(slots, self.n_windows)

  def compile_count(self) -> int:
    """Executables compiled so far over all of this sampler's functions (for tests)."""
    return sum(f._cache_size() for f in self._jits.values())

  def start(self, params, prompts_PxL, lengths_P, key, *, n_samples: int = 1,
            cache_len: int, temperature=1.0, top_p=1.0, max_new_tokens=NO_LIMIT,
            max_step_tokens=NO_LIMIT, max_steps=NO_LIMIT) -> DecodeState:
    """Prefill P prompts and fan each out to n_samples rows (row p * N + n).

    prompts_PxL: int [P, L] right-padded prompts; lengths_P: their lengths in tokens.
    cache_len: S, slots per row for prompt + generated tokens (static). With the Pallas
      kernel the KV cache gets `kv_slots(S)` slots (up to twice S for S <= 128, else up to
      63 more; the extra slots are never used).
    temperature, top_p, max_new_tokens (tokens), max_step_tokens (tokens), max_steps:
      scalars, [P] or [P * N] arrays; passed as arrays, so sweeping them never recompiles.
    key: a PRNG key (typed or raw uint32[2]).
    """
    prompts_PxL = np.asarray(prompts_PxL, np.int32)
    lengths_P = np.asarray(lengths_P, np.int32)
    if prompts_PxL.ndim != 2 or lengths_P.shape != prompts_PxL.shape[:1]:
      raise ValueError(f'prompts must be [P, L] and lengths [P]; got {prompts_PxL.shape} and '
                       f'{lengths_P.shape}.')
    p = prompts_PxL.shape[0]
    if p == 0:
      raise ValueError('prompts is empty: pass at least one prompt.')
    if not isinstance(n_samples, (int, np.integer)) or n_samples <= 0:
      raise ValueError(f'n_samples must be a positive integer, got {n_samples!r}.')
    if lengths_P.min() <= 0:
      raise ValueError('lengths must be positive (each prompt needs at least a BOS token).')
    if lengths_P.max() >= cache_len:
      raise ValueError(f'a prompt of {lengths_P.max()} tokens leaves no room in cache_len='
                       f'{cache_len}; raise cache_len above the longest prompt.')
    if cache_len > self.config.max_len:
      raise ValueError(f'cache_len={cache_len} exceeds the model max_len={self.config.max_len}.')
    b = p * n_samples
    temperature_B = _row_array(temperature, p, n_samples, np.float32, 'temperature')
    if np.any(temperature_B < 0) or not np.all(np.isfinite(temperature_B)):
      raise ValueError(f'temperature must be finite and >= 0 (0 = greedy), got '
                       f'{temperature_B.min()}.')
    top_p_B = _row_array(top_p, p, n_samples, np.float32, 'top_p')
    if np.any(top_p_B <= 0) or np.any(top_p_B > 1):
      raise ValueError(f'top_p must be in (0, 1], got values in [{top_p_B.min()}, '
                       f'{top_p_B.max()}].')
    limits = {}
    for name, v in (('max_new_tokens', max_new_tokens), ('max_step_tokens', max_step_tokens),
                    ('max_steps', max_steps)):
      arr = _row_array(np.minimum(np.asarray(v, np.int64), NO_LIMIT), p, n_samples, np.int32,
                       name)
      if np.any(arr < 0):
        raise ValueError(f'{name} must be >= 0, got {arr.min()}.')
      limits[name] = arr
    if np.any(limits['max_step_tokens'] == 0):
      raise ValueError('max_step_tokens must be >= 1.')
    lb = min(bucket_length(int(lengths_P.max()), self.buckets), cache_len)
    padded = np.zeros((p, lb), np.int32)
    w = min(lb, prompts_PxL.shape[1])
    padded[:, :w] = prompts_PxL[:, :w]
    if not jax.dtypes.issubdtype(getattr(key, 'dtype', np.uint32), jax.dtypes.prng_key):
      key = jax.random.wrap_key_data(jnp.asarray(key, jnp.uint32))
    args = (padded, lengths_P, temperature_B, top_p_B, limits['max_new_tokens'],
            limits['max_step_tokens'], limits['max_steps'], key)
    state_like = None
    slots = kv_slots(cache_len) if self._pad_kv else cache_len
    if self.mesh is not None:
      if b % self.mesh.shape['data']:
        raise ValueError(f'P * n_samples = {b} rows must divide over mesh.data='
                         f'{self.mesh.shape["data"]} devices.')
      state_like = jax.eval_shape(
          functools.partial(_start, config=self.config, n_samples=n_samples,
                            cache_len=cache_len, slots=slots), params, *args)
    fn = self._jit('start', _start, params, state_like, n_samples=n_samples,
                   cache_len=cache_len, slots=slots)
    return fn(params, *args)

  def _run(self, params, state: DecodeState, one_step: bool, row_keys=None,
           donate: bool = True) -> DecodeState:
    # The top-p sort is compiled in only when some row asks for it (a static flag read from
    # B floats on the host; sweeping p values themselves never recompiles).
    use_top_p = bool(np.any(np.asarray(state.top_p_B) < 1))
    name = 'decode' + ('' if donate else '_keep') + ('' if row_keys is None else '_rowkeys')
    fn = self._jit(name, _decode, params, state if self.mesh is not None else None,
                   eos_id=int(self.eos_id), step_ids=self.step_ids, top_k=int(self.top_k),
                   use_top_p=use_top_p, one_step=one_step,
                   windows=tuple(self.windows(transformer.cache_slots(state.cache))),
                   steps_per_loop=1 if one_step else int(self.steps_per_loop))
    # Traced under the mesh, so the model runs its Pallas kernels per device's rows
    # (`transformer.over_row_shards`) instead of leaving XLA to gather their operands.
    with jax.set_mesh(self.mesh) if self.mesh is not None else contextlib.nullcontext():
      return fn(params, state, row_keys)

  def generate(self, params, state: DecodeState, row_keys=None,
               donate: bool = True) -> DecodeState:
    """Decode every row to its end (EOS, token cap, step cap or a full buffer).

    row_keys: optional typed PRNG keys [B]; row b then samples the token at position t from
      fold_in(row_keys[b], t), independent of the rest of the batch (see `sample_tokens`).
    donate: False keeps `state` usable (the result gets new buffers).
    """
    return self._run(params, state, False, row_keys, donate)

  def extend_one_step(self, params, state: DecodeState, row_keys=None,
                      donate: bool = True) -> DecodeState:
    """Advance every unfinished row by exactly one reasoning step: it stops after a step
    delimiter, EOS, the per-step token cap or the solution cap (rows that finish early wait
    for the others). step_end_BxS marks where the step ended; done_B says whether the
    solution is over. row_keys / donate as in `generate`."""
    return self._run(params, state, True, row_keys, donate)
