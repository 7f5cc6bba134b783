"""Process and outcome reward models: a base-policy transformer plus a scalar value head.

  params = {'base': transformer params, 'head': {'kernel': [D, 1], 'bias': [1]}}  (float32 head)

The head reads the final-norm hidden state at a token; sigmoid(head) is the predicted
probability that the solution ends correct from there. A PRM is scored at every step-end
token (the delimiter, EOS or cap that ended the step); an ORM is the same model scored at the
last token of the solution only (same code, `kind` says where the training targets sit).

Sequences are laid out as the sampler lays them out: BOS + prompt + generated tokens from
position 0, right-padded. Two ways to score:
  * `score_steps`: whole solutions in one forward pass -> scores_BxS, mask_BxS.
  * `extend_and_score`: incremental. The verifier keeps its own KV cache (the transformer's
    cache layout, slot s = position s) and is fed only the tokens new since its last call,
    so a search never re-reads a prefix. Rows may sit at different lengths.
"""

from __future__ import annotations

import functools
import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ttc_jax.data.problems import ProblemSet
from ttc_jax.model import transformer
from ttc_jax.model.config import ConfigError, ModelConfig
from ttc_jax.sample.decode import bucket_length


class VerifierMismatch(ConfigError):
  """A verifier does not fit the policy it is asked to score (vocabulary or tokenizer)."""


def init_verifier_params(base_params, config: ModelConfig) -> dict:
  """{'base': base_params, 'head': zeros}: starts at score 0.5 everywhere, and the value
  head's gradient is non-zero from the first step (it is the hidden state itself)."""
  return {'base': base_params,
          'head': {'kernel': jnp.zeros((config.d_model, 1), jnp.float32),
                   'bias': jnp.zeros((1,), jnp.float32)}}


def head_logits(head, h_BxTxD) -> jax.Array:
  """Value-head logits [B, T] float32 from hidden states [B, T, D]."""
  return jnp.einsum('btd,d->bt', h_BxTxD.astype(jnp.float32), head['kernel'][:, 0]) + \
      head['bias'][0]


def token_logits(params, tokens_BxT, positions_BxT=None, cache=None, mask_BxS=None, *,
                 config: ModelConfig):
  """Value logits at every token [B, T] float32 and the updated cache (None without one)."""
  if positions_BxT is None:
    positions_BxT = jnp.broadcast_to(jnp.arange(tokens_BxT.shape[1], dtype=jnp.int32),
                                     tokens_BxT.shape)
  h_BxTxD, cache = transformer.apply_features(params['base'], tokens_BxT, positions_BxT, cache,
                                              mask_BxS, config=config)
  return head_logits(params['head'], h_BxTxD), cache


def step_index(step_end_BxT, max_steps: int):
  """Token index of each row's first `max_steps` step ends: (index_BxS int32, mask_BxS bool).

  Padded steps get index 0 and mask False. Steps past max_steps are dropped.
  """
  b, t = step_end_BxT.shape
  # A stable sort of ~step_end puts the step-end indices first, in order.
  order_BxT = jnp.argsort(~step_end_BxT, axis=-1, stable=True).astype(jnp.int32)
  if max_steps > t:
    order_BxT = jnp.pad(order_BxT, ((0, 0), (0, max_steps - t)))
    valid_BxT = jnp.pad(jnp.ones((b, t), bool), ((0, 0), (0, max_steps - t)))
  else:
    valid_BxT = jnp.ones((b, t), bool)
  index_BxS = order_BxT[:, :max_steps]
  mask_BxS = jnp.take_along_axis(step_end_BxT, index_BxS, axis=-1) & valid_BxT[:, :max_steps]
  return jnp.where(mask_BxS, index_BxS, 0), mask_BxS


@functools.partial(jax.jit, static_argnames=('config', 'max_steps'))
def score_steps(params, tokens_BxT, step_end_BxT, *, config: ModelConfig, max_steps: int):
  """All step scores of whole solutions in one forward pass.

  Args:
    tokens_BxT: int32, BOS + prompt + solution from position 0, right-padded.
    step_end_BxT: bool, True at each step-ending token (False on prompt and padding); e.g.
      a DecodeState's step_end_BxS.
    max_steps: S, static; steps past it are dropped.
  Returns:
    scores_BxS float32 in (0, 1) (sigmoid of the head at the step ends; 0 where padded) and
    mask_BxS bool (True on real steps), ready for `aggregate.aggregate_steps`.
  """
  logits_BxT, _ = token_logits(params, tokens_BxT, config=config)
  index_BxS, mask_BxS = step_index(step_end_BxT, max_steps)
  scores_BxS = jax.nn.sigmoid(jnp.take_along_axis(logits_BxT, index_BxS, axis=-1))
  return jnp.where(mask_BxS, scores_BxS, 0.0), mask_BxS


@functools.partial(jax.jit, static_argnames=('config',))
def score_final(params, tokens_BxT, lengths_B, *, config: ModelConfig):
  """ORM score: sigmoid of the head at each row's last token (index lengths_B - 1): [B]."""
  logits_BxT, _ = token_logits(params, tokens_BxT, config=config)
  last_B = jnp.maximum(lengths_B - 1, 0)
  return jax.nn.sigmoid(jnp.take_along_axis(logits_BxT, last_B[:, None], axis=-1)[:, 0])


def init_cache(config: ModelConfig, batch: int, length: int):
  """An empty verifier cache of `length` slots: it must exceed every row's final length plus
  the widest extension T (see `extend_and_score`)."""
  return transformer.init_cache(config, batch, length)


def _extend_and_score(params, cache, tokens_BxT, start_B, n_new_B, *, config: ModelConfig):
  b, t = tokens_BxT.shape
  s = transformer.cache_slots(cache)
  positions_BxT = start_B[:, None].astype(jnp.int32) + jnp.arange(t, dtype=jnp.int32)
  logits_BxT, cache = token_logits(params, tokens_BxT, positions_BxT, cache, config=config)
  scores_BxT = jax.nn.sigmoid(logits_BxT)
  # A write that would run past the cache is clamped by dynamic_update_slice and lands on the
  # wrong slots; mark the whole row NaN so the caller cannot miss it.
  ok_BxT = (jnp.arange(t)[None, :] < n_new_B[:, None]) & (start_B + t <= s)[:, None]
  return jnp.where(ok_BxT, scores_BxT, jnp.nan), cache


_extend_jit = jax.jit(_extend_and_score, static_argnames=('config',), donate_argnames=('cache',))


def extend_and_score(params, cache, tokens_BxT, start_B, n_new_B, *, config: ModelConfig):
  """Feeds each row's new tokens to the verifier and scores them.

  Args:
    params: verifier params.
    cache: the verifier's cache {'kv'} [L, B, 2, K, S, H]; slots < start_B[b] must hold row
      b's earlier tokens (from earlier calls). Donated.
    tokens_BxT: int32 new tokens of each row, left-aligned: row b's are [:n_new_B[b]], the
      rest is padding (written to slots past the row's length, where no later query sees
      them before they are overwritten).
    start_B: int32 position of each row's first new token (= tokens the cache holds).
    n_new_B: int32 new tokens per row (0 for a row that does not move).
    config: the verifier's ModelConfig (static).
  Returns:
    (scores_BxT float32: sigmoid of the head at every new token, NaN on padding and on rows
    where start_B + T > S (the cache is too short: a wrong result), updated cache).
    A step's score is the entry at its step-end token; `last_score` takes index n_new - 1.
  Jitted; shapes B, T, S are static (a new T compiles once more).
  """
  return _extend_jit(params, cache, tokens_BxT, start_B, n_new_B, config=config)


def last_score(scores_BxT, n_new_B):
  """Score at each row's last new token: [B] (NaN for rows with no new token)."""
  idx_B = jnp.maximum(n_new_B - 1, 0)
  got_B = jnp.take_along_axis(scores_BxT, idx_B[:, None], axis=-1)[:, 0]
  return jnp.where(n_new_B > 0, got_B, jnp.nan)


@functools.partial(jax.jit, static_argnames=('width',))
def gather_new_tokens(tokens_BxS, start_B, end_B, *, width: int):
  """Tokens [start_B, end_B) of each row, left-aligned in [B, width], and n_new_B = end - start.

  Turns a sampler DecodeState before/after `extend_one_step` (lengths before and after) into
  `extend_and_score`'s input. Tokens past a row's count are 0; width must be >= max n_new.
  """
  idx_BxW = start_B[:, None] + jnp.arange(width)[None, :]
  n_new_B = (end_B - start_B).astype(jnp.int32)
  got_BxW = jnp.take_along_axis(tokens_BxS, jnp.minimum(idx_BxW, tokens_BxS.shape[1] - 1),
                                axis=-1)
  return jnp.where(jnp.arange(width)[None, :] < n_new_B[:, None], got_BxW, 0), n_new_B


# ---- whole banks ------------------------------------------------------------------------------
def bank_matrix(bank_df: pd.DataFrame, problem_ids=None) -> pd.DataFrame:
  """The bank ordered as a [P, N] matrix: problems in `problem_ids` order (default: first
  appearance), samples by sample_index. Raises unless every problem has the same N."""
  if problem_ids is None:
    problem_ids = list(dict.fromkeys(bank_df['problem_id']))
  order = {str(p): i for i, p in enumerate(problem_ids)}
  df = bank_df[bank_df['problem_id'].astype(str).isin(order)].copy()
  df['_p'] = df['problem_id'].astype(str).map(order)
  counts = df.groupby('_p').size()
  if len(counts) != len(order) or counts.nunique() != 1:
    raise ValueError(f'bank is not a [P, N] matrix: samples per problem range '
                     f'{counts.min() if len(counts) else 0}..{counts.max() if len(counts) else 0}'
                     f' over {len(counts)} of {len(order)} problems.')
  return df.sort_values(['_p', 'sample_index'], kind='stable').drop(columns='_p').reset_index(
      drop=True)


def encode_solutions(solutions: pd.DataFrame, problems: ProblemSet, *, pad_id: int,
                     width: int | None = None, max_len: int | None = None):
  """Rows of BOS + prompt + generated tokens: (tokens_ExT int32, lengths_E, step_end_ExT bool,
  prompt_lengths_E). T = width, or the longest row rounded up to a length bucket (so scoring
  many banks compiles a few shapes). Raises ValueError if a row exceeds max_len."""
  where = {str(p): i for i, p in enumerate(problems.ids)}
  missing = set(solutions['problem_id'].astype(str)) - set(where)
  if missing:
    raise ValueError(f'{len(missing)} bank problems are not in the ProblemSet, e.g. '
                     f'{sorted(missing)[:3]}.')
  p_E = np.asarray([where[str(p)] for p in solutions['problem_id']], np.int64)
  plen_E = problems.lengths[p_E].astype(np.int32)
  glen_E = np.asarray([len(t) for t in solutions['tokens']], np.int32)
  lengths_E = plen_E + glen_E
  longest = int(lengths_E.max()) if len(lengths_E) else 1
  if max_len is not None and longest > max_len:
    raise ValueError(f'a solution of {longest} tokens exceeds the verifier max_len={max_len}.')
  t = width or bucket_length(longest)
  if max_len is not None:
    t = min(t, max_len)
  tokens = np.full((len(p_E), t), pad_id, np.int32)
  step_end = np.zeros((len(p_E), t), bool)
  for e, (gen, ends) in enumerate(zip(solutions['tokens'], solutions['step_ends'])):
    tokens[e, :plen_E[e]] = problems.prompts[p_E[e], :plen_E[e]]
    tokens[e, plen_E[e]:lengths_E[e]] = gen
    step_end[e, plen_E[e] + np.asarray(ends, np.int64)] = True
  return tokens, lengths_E, step_end, plen_E


def score_bank(params, config: ModelConfig, bank_df: pd.DataFrame, problems: ProblemSet, *,
               pad_id: int, max_steps: int | None = None, batch_size: int = 256):
  """Step scores of a whole bank: (scores_PxNxS float32, mask_PxNxS bool, problem ids [P]).

  Problems follow `problems` order (only those in the bank). Batches of `batch_size` solutions
  (the last one padded), one compiled shape per length bucket.
  """
  in_bank = set(bank_df['problem_id'].astype(str))
  ids = [str(p) for p in problems.ids if str(p) in in_bank]
  df = bank_matrix(bank_df, ids)
  n = len(df) // max(len(ids), 1)
  tokens, _, step_end, _ = encode_solutions(df, problems, pad_id=pad_id, max_len=config.max_len)
  s = max_steps or max(1, int(step_end.sum(axis=1).max()))
  out_s, out_m = [], []
  for i in range(0, len(df), batch_size):
    tok, se = tokens[i:i + batch_size], step_end[i:i + batch_size]
    real = len(tok)
    if real < batch_size and len(df) > batch_size:
      tok = np.concatenate([tok, np.repeat(tok[:1], batch_size - real, 0)])
      se = np.concatenate([se, np.repeat(se[:1], batch_size - real, 0)])
    sc, m = jax.device_get(score_steps(params, tok, se, config=config, max_steps=s))
    out_s.append(sc[:real])
    out_m.append(m[:real])
  scores = np.concatenate(out_s).reshape(len(ids), n, s)
  mask = np.concatenate(out_m).reshape(len(ids), n, s)
  return scores, mask, np.asarray(ids)


# ---- compatibility -----------------------------------------------------------------------------
def tokenizer_fingerprint(tokenizer) -> str:
  """A short hash of what the tokenizer maps ids to (special ids, step ids, the first 4096
  ids' strings): two tokenizers with the same fingerprint read token ids the same way."""
  h = hashlib.sha1()
  h.update(repr((type(tokenizer).__name__, tokenizer.vocab_size, tokenizer.pad_id,
                 tokenizer.bos_id, tokenizer.eos_id, tuple(tokenizer.step_ids))).encode())
  for i in range(min(int(tokenizer.vocab_size), 4096)):
    try:
      piece = tokenizer.decode([i])
    except Exception:   # an id some tokenizers refuse to decode alone: still part of the map
      piece = '\0err'
    h.update(piece.encode('utf-8', 'replace') + b'\0')
  return h.hexdigest()[:16]


def check_compatible(meta: dict, policy_cfg: ModelConfig | None = None, tokenizer=None,
                     where: str = 'verifier') -> None:
  """Raises VerifierMismatch naming both sides if the verifier (its checkpoint metadata:
  'vocab_size', 'tokenizer') cannot read the policy's token ids."""
  if policy_cfg is not None and int(meta.get('vocab_size', -1)) != policy_cfg.vocab_size:
    raise VerifierMismatch(
        f'{where}: the verifier has vocab_size={meta.get("vocab_size")} but the policy '
        f'{policy_cfg.name or "(unnamed)"} has vocab_size={policy_cfg.vocab_size}; a verifier '
        'must be trained from a policy of the same vocabulary (set verifier.policy / '
        'verifier.checkpoint to a matching checkpoint).')
  if tokenizer is not None:
    fp = tokenizer_fingerprint(tokenizer)
    if meta.get('tokenizer') != fp:
      raise VerifierMismatch(
          f'{where}: the verifier was trained with tokenizer {meta.get("tokenizer")!r} but the '
          f'policy uses {type(tokenizer).__name__} with fingerprint {fp!r}; token ids would '
          'mean different things. Retrain the verifier from this policy.')
