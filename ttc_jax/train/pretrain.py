"""Pretraining a family member: next-token loss on the task's training texts.

Examples are BOS + prompt + solution + EOS, packed into rows of `seq_len + 1` tokens; the
loss is taken on solution tokens (and EOS) by default, since the question's digits are random
and teach nothing the model can predict.
"""

from __future__ import annotations

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
  rows: list[list[tuple[list[int], int]]] = []
  used = width  # forces a new row for the first example
  for i, (p, s) in enumerate(zip(prompts, solutions)):
    pt, st = tokenizer.encode(p), tokenizer.encode(s)
    ex = [tokenizer.bos_id] + pt + st + [tokenizer.eos_id]
    if len(ex) > width:
      raise ValueError(f'example {i} ({p!r}) needs {len(ex)} tokens but seq_len + 1 = '
                       f'{width}; raise the seq_len.')
    if not pack or used + len(ex) > width:
      rows.append([])
      used = 0
    rows[-1].append((ex, 1 if loss_on_prompt else 1 + len(pt)))
    used += len(ex)
  out = {k: np.zeros((len(rows), width), np.int32) for k in ('tokens', 'positions', 'segments')}
  out['tokens'][:] = tokenizer.pad_id
  out['loss_mask'] = np.zeros((len(rows), width), np.float32)
  for r, row in enumerate(rows):
    at = 0
    for seg, (ex, first) in enumerate(row, start=1):
      n = len(ex)
      out['tokens'][r, at:at + n] = ex
      out['positions'][r, at:at + n] = np.arange(n)
      out['segments'][r, at:at + n] = seg
      out['loss_mask'][r, at + first:at + n] = 1.0
      at += n
    # Padding continues the last example's positions, so positions increase along the row
    # and the causal rule by position equals the rule by index (the unmasked pass relies on it).
    last = out['positions'][r, at - 1] if at else -1
    out['positions'][r, at:] = last + 1 + np.arange(width - at)
  return out


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
