"""The one FLOPs accountant: token counts in, FLOPs out, the same formula for every stage.

Every stage records a `TokenCounts` per model (how many tokens it ran through that model in
each phase, and how many keys those tokens attended to); this module turns counts into FLOPs
under one of three conventions:

  'v1'    arXiv v1 of Snell et al.: pretraining X = 6 N D_pretrain, inference
          Y = 2 N D_inference, where D_inference = prefill + decode tokens of the generator.
          The verifier is not counted.
  'iclr'  the ICLR version: X = 6 N D_pretrain, Y = 4 N D_inference (the extra 2 N D stands
          for a same-size verifier reading every generated token once).
  'exact' from the counted tokens, attention included: each phase costs
          tokens * 2 N + 4 * layers * heads * head_dim * (sum of attended keys), the verifier
          phase on the verifier's config, training at 3x forward.

N is `ModelConfig.matmul_params()`: the weights a token touches through a matmul (all
non-embedding matrices plus the unembedding; no norms, no embedding lookup). With this N,
2 N is exactly the non-attention part of `forward_flops_per_token`, so 'v1' is 'exact' minus
attention and minus the verifier, and the three conventions differ only by what they leave
out. (Kaplan et al. use non-embedding params; the unembedding is a real matmul per token and
is a large share of FLOPs for small models, so we count it.)

All FLOPs count a multiply-add as 2.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Literal

import numpy as np

from ttc_jax.model.config import ModelConfig

Convention = Literal['v1', 'iclr', 'exact']
CONVENTIONS = ('v1', 'iclr', 'exact')
_PHASES = ('prefill', 'decode', 'train', 'verifier')


def _check_convention(convention: str) -> None:
  if convention not in CONVENTIONS:
    raise ValueError(f'FLOPs convention must be one of {CONVENTIONS}, got {convention!r}.')


def causal_context_sum(length, offset=0):
  """Sum of attended keys over `length` new tokens appended after `offset` cached tokens.

  Token t (1-based) of the new span sees offset + t keys (itself included), so the sum is
  length * offset + length (length + 1) / 2. Broadcasts over arrays; units: key-tokens.
  """
  length = np.asarray(length, dtype=np.float64)
  offset = np.asarray(offset, dtype=np.float64)
  return length * offset + length * (length + 1.0) / 2.0


@dataclasses.dataclass(frozen=True)
class TokenCounts:
  """Tokens one model processed in one stage, per phase, with their attention context.

  For each phase P in (prefill, decode, train, verifier):
    P_tokens:  number of token positions run through the model (tokens).
    P_context: sum over those positions of the number of keys each attended to (key-tokens).
  Forward FLOPs are affine in the context, so (tokens, context sum) gives the exact
  attention FLOPs of any mix of lengths without keeping the lengths themselves.

  `verifier_*` are tokens scored by the verifier (PRM/ORM), which may be a different model
  from the generator: `inference_flops` takes its config separately. Counts add with `+`
  and scale with `*` (e.g. per-problem counts times problems).
  """
  prefill_tokens: float = 0.0
  prefill_context: float = 0.0
  decode_tokens: float = 0.0
  decode_context: float = 0.0
  train_tokens: float = 0.0
  train_context: float = 0.0
  verifier_tokens: float = 0.0
  verifier_context: float = 0.0

  def __add__(self, other: 'TokenCounts') -> 'TokenCounts':
    if not isinstance(other, TokenCounts):
      return NotImplemented
    return TokenCounts(**{f.name: getattr(self, f.name) + getattr(other, f.name)
                          for f in dataclasses.fields(self)})

  def __mul__(self, k: float) -> 'TokenCounts':
    return TokenCounts(**{f.name: getattr(self, f.name) * k for f in dataclasses.fields(self)})

  __rmul__ = __mul__

  @property
  def inference_tokens(self) -> float:
    """D_inference of the paper: generator tokens (prefill + decode), verifier excluded."""
    return self.prefill_tokens + self.decode_tokens

  @classmethod
  def causal(cls, phase: str, lengths, offsets=0) -> 'TokenCounts':
    """Counts for causal spans: `lengths[i]` new tokens after `offsets[i]` cached ones.

    E.g. a prompt of 40 tokens prefilled once: causal('prefill', 40); 8 samples decoding 25
    tokens each after it: causal('decode', [25] * 8, 40). Training on sequences of length L
    (no cache): causal('train', L) per sequence.
    """
    if phase not in _PHASES:
      raise ValueError(f'phase must be one of {_PHASES}, got {phase!r}.')
    lengths = np.asarray(lengths, dtype=np.float64)
    ctx = causal_context_sum(lengths, offsets)
    return cls(**{f'{phase}_tokens': float(np.sum(lengths)),
                  f'{phase}_context': float(np.sum(ctx))})

  def to_dict(self) -> dict[str, float]:
    return dataclasses.asdict(self)


def _forward_flops(cfg: ModelConfig, tokens: float, context_sum: float) -> float:
  """Exact forward FLOPs of `tokens` positions whose attended keys sum to `context_sum`.

  forward_flops_per_token is affine in its context, so its sum over positions is
  tokens * f(0) + slope * context_sum.
  """
  f0 = cfg.forward_flops_per_token(0.0)
  slope = cfg.forward_flops_per_token(1.0) - f0
  return float(tokens) * f0 + slope * float(context_sum)


def pretrain_flops(cfg: ModelConfig, tokens: float, seq_len: int,
                   convention: Convention = 'exact') -> float:
  """Pretraining FLOPs for `tokens` training tokens in sequences of `seq_len` tokens.

  'v1'/'iclr': 6 N D. 'exact': forward + backward (3x forward) at the causal mean context
  (seq_len + 1) / 2, i.e. tokens * cfg.train_flops_per_token(seq_len).
  """
  _check_convention(convention)
  if convention == 'exact':
    return float(tokens) * cfg.train_flops_per_token(seq_len)
  return 6.0 * cfg.matmul_params() * float(tokens)


def train_flops(cfg: ModelConfig, counts: TokenCounts, convention: Convention = 'exact') -> float:
  """FLOPs of the `train_*` phase of `counts` (fine-tuning a PRM or a revision model)."""
  _check_convention(convention)
  if convention == 'exact':
    return 3.0 * _forward_flops(cfg, counts.train_tokens, counts.train_context)
  return 6.0 * cfg.matmul_params() * counts.train_tokens


def inference_flops(cfg: ModelConfig, counts: TokenCounts, convention: Convention = 'exact',
                    verifier_cfg: ModelConfig | None = None) -> float:
  """Inference FLOPs of one stage's generator `counts` (FLOPs, multiply-add = 2).

  Args:
    cfg: the generator.
    counts: its token counts; `train_*` fields are ignored here (see `train_flops`).
    convention: 'v1' (2 N D_inference), 'iclr' (4 N D_inference) or 'exact' (counted
      prefill, decode and verifier tokens with attention).
    verifier_cfg: the model that scored `verifier_*` tokens under 'exact'; defaults to `cfg`
      (the paper initialises its PRM from the base model).
  """
  _check_convention(convention)
  n = cfg.matmul_params()
  if convention == 'v1':
    return 2.0 * n * counts.inference_tokens
  if convention == 'iclr':
    return 4.0 * n * counts.inference_tokens
  vcfg = cfg if verifier_cfg is None else verifier_cfg
  return (_forward_flops(cfg, counts.prefill_tokens, counts.prefill_context)
          + _forward_flops(cfg, counts.decode_tokens, counts.decode_context)
          + _forward_flops(vcfg, counts.verifier_tokens, counts.verifier_context))


def xla_flops(fn: Callable[..., Any], *args, **kwargs) -> float:
  """FLOPs XLA's cost analysis assigns to `jax.jit(fn)(*args, **kwargs)`.

  `cost_analysis()` returns a dict in recent jax and a one-element list of dicts in older
  ones; both are accepted. Caveat: XLA counts the body of a while loop (a `lax.scan`, e.g. a
  scanned layer stack) once, not once per trip.
  """
  import jax  # Deferred: the accountant itself is pure numpy.
  cost = jax.jit(fn).lower(*args, **kwargs).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost['flops'])
