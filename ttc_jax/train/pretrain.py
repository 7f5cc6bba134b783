"""Pretraining a family member: next-token loss on the task's training texts.

Examples are BOS + prompt + solution + EOS, packed into rows of `seq_len + 1` tokens; the
loss is taken on solution tokens (and EOS) by default, since the question's digits are random
and teach nothing the model can predict.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ttc_jax.data.tokenizer import Tokenizer
from ttc_jax.model import ModelConfig, apply


def encode_examples(prompts: Sequence[str], solutions: Sequence[str], tokenizer: Tokenizer,
                    seq_len: int, loss_on_prompt: bool = False,
                    pack: bool = True) -> dict[str, np.ndarray]:
  """Tokenises examples (BOS + prompt + solution + EOS) into rows of seq_len + 1 tokens.

  With `pack`, consecutive examples share a row (first fit in order), each with its own
  positions from 0 and a segment id, so attention never crosses examples: a short task wastes
  little compute on padding. Returns {'tokens', 'positions', 'segments'} int32 and
  'loss_mask' float32, all [R, seq_len + 1]; loss_mask[r, t] = 1 where token t is a target
  (predicted from t - 1 of the same example). Segment 0 is padding; its positions continue
  the row's last example.
  Raises ValueError naming the example if one does not fit in a row.
  """
  width = seq_len + 1
  n = len(prompts)
  if len(solutions) != n:
    raise ValueError(f'{n} prompts but {len(solutions)} solutions.')
  pt_ids, pt_len = encode_many(tokenizer, prompts)
  st_ids, st_len = encode_many(tokenizer, solutions)
  ex_len = pt_len + st_len + 2                    # BOS + prompt + solution + EOS
  too_long = np.flatnonzero(ex_len > width)
  if too_long.size:
    i = int(too_long[0])
    raise ValueError(f'example {i} ({prompts[i]!r}) needs {ex_len[i]} tokens but seq_len + 1 = '
                     f'{width}; raise the seq_len.')
  # Row, offset and segment of each example (first fit in order): a loop over ints only.
  row, off, seg = (np.empty(n, np.int64) for _ in range(3))
  r, used, s = -1, width, 0
  for i, length in enumerate(ex_len.tolist()):
    if not pack or used + length > width:
      r, used, s = r + 1, 0, 0
    s += 1
    row[i], off[i], seg[i] = r, used, s
    used += length
  n_rows = r + 1
  out = {k: np.zeros((n_rows, width), np.int32) for k in ('tokens', 'positions', 'segments')}
  out['tokens'][:] = tokenizer.pad_id
  out['loss_mask'] = np.zeros((n_rows, width), np.float32)
  if not n:
    return out
  # Every token of every example at once: example index, position inside the example.
  ex = np.repeat(np.arange(n), ex_len)
  pos = np.arange(int(ex_len.sum())) - np.repeat(np.cumsum(ex_len) - ex_len, ex_len)
  toks = np.full(pos.shape, tokenizer.bos_id, np.int32)
  toks[pos == ex_len[ex] - 1] = tokenizer.eos_id
  in_prompt = (pos >= 1) & (pos <= pt_len[ex])
  toks[in_prompt] = pt_ids
  toks[(pos > pt_len[ex]) & (pos < ex_len[ex] - 1)] = st_ids
  first = np.ones(n, np.int64) if loss_on_prompt else 1 + pt_len
  rr, cc = row[ex], off[ex] + pos
  out['tokens'][rr, cc] = toks
  out['positions'][rr, cc] = pos
  out['segments'][rr, cc] = seg[ex]
  out['loss_mask'][rr, cc] = pos >= first[ex]
  # Padding continues the last example's positions, so positions increase along the row
  # and the causal rule by position equals the rule by index (the unmasked pass relies on it).
  last = np.r_[np.flatnonzero(row[1:] != row[:-1]), n - 1]      # each row's last example
  row_used = (off[last] + ex_len[last])[:, None]
  cols = np.arange(width)[None, :]
  out['positions'][:] = np.where(cols >= row_used, ex_len[last][:, None] + cols - row_used,
                                 out['positions'])
  return out


def encode_many(tokenizer: Tokenizer, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
  """(ids, lengths) of many texts: the ids of all texts concatenated (int32) and each text's
  token count (int64). Uses the tokenizer's own `encode_many` when it has one (the embedded
  character tokenizer encodes 400K texts in one table lookup)."""
  fast = getattr(tokenizer, 'encode_many', None)
  if fast is not None:
    return fast(texts)
  ids = [tokenizer.encode(t) for t in texts]
  lengths = np.fromiter(map(len, ids), np.int64, len(ids))
  return np.fromiter(itertools.chain.from_iterable(ids), np.int32, int(lengths.sum())), lengths


def epoch_batches(data: dict[str, np.ndarray], batch_size: int, seed: int):
  """batch_fn(step) for the train loop: shuffled epochs, a pure function of the step."""
  n = len(next(iter(data.values())))
  if n < batch_size:
    raise ValueError(f'{n} training examples is fewer than one batch of {batch_size}.')
  per_epoch = n // batch_size
  cache: dict[int, np.ndarray] = {}

  def batch_fn(step: int) -> dict[str, np.ndarray]:
    epoch, i = divmod(step, per_epoch)
    if epoch not in cache:
      cache.clear()
      cache[epoch] = np.random.default_rng([seed, epoch]).permutation(n)
    idx = cache[epoch][i * batch_size:(i + 1) * batch_size]
    return {k: v[idx] for k, v in data.items()}

  return batch_fn


def token_cross_entropy(logits_BxTxV, targets_BxT):
  """Cross-entropy per token, float32. The target's logit is picked by comparison with the
  vocabulary index, not a gather: a gather's gradient is a scatter, which on a GPU costs far
  more than this elementwise select for the small vocabularies trained here."""
  logits_BxTxV = logits_BxTxV.astype(jnp.float32)
  vocab_V = jnp.arange(logits_BxTxV.shape[-1])
  target_BxT = jnp.sum(jnp.where(vocab_V == targets_BxT[..., None], logits_BxTxV, 0.0), -1)
  return jax.nn.logsumexp(logits_BxTxV, axis=-1) - target_BxT


def lm_loss(params, batch, rng, *, config: ModelConfig, packed: bool = True):
  """Mean next-token cross-entropy over masked targets; also token accuracy.

  `batch` as made by `encode_examples`. packed=True: attention stays inside a segment (a
  [B, T, T] mask). packed=False (rows from `encode_examples(..., pack=False)`: one example
  per row, padding after it): the plain causal pass, no mask, so config.attention_impl
  'cudnn' can run the fused kernel. Pads then attend to their example, but no target reads
  them.
  """
  del rng
  tokens, seg = batch['tokens'], batch['segments']
  inputs, targets, mask = tokens[:, :-1], tokens[:, 1:], batch['loss_mask'][:, 1:]
  seg_in = seg[:, :-1]
  visible = ((seg_in[:, :, None] == seg_in[:, None, :]) & (seg_in[:, None, :] > 0)
             if packed else None)
  logits, _ = apply(params, inputs, batch['positions'][:, :-1], None, visible, config=config)
  ce = token_cross_entropy(logits, targets)
  denom = jnp.maximum(mask.sum(), 1.0)
  acc = ((logits.argmax(-1) == targets) * mask).sum() / denom
  return (ce * mask).sum() / denom, {'token_accuracy': acc}
