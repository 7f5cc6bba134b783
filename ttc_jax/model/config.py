"""Model configuration, the size ladder of a family, and exact parameter counts.

A `ModelConfig` is a frozen dataclass: it is hashable, so it can be a static argument of a
jitted function, and it is the only description of a model that the rest of the code sees.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import jax.numpy as jnp


class ConfigError(ValueError):
  """A configuration value is invalid. The message names the key and how to fix it."""


# ModelConfig.decode_step_kernels values.
DECODE_STEP_KERNELS = ('auto', 'pallas', 'xla')


def parse_decode_kernel(spec: str, key: str = 'decode_kernel') -> tuple[int, int, int, str]:
  """'block_s:num_warps:num_stages[:products]' -> (block_s, num_warps, num_stages, products);
  '' gives the default (0, 4, 2, 'auto'), block_s 0 meaning pallas_decode.auto_block (the
  whole window as one block up to 128 slots, else 64-slot blocks). products: 'auto', 'dot' or
  'reduce' (see pallas_decode.decode_attention). Raises ConfigError naming `key`."""
  if not spec:
    return (0, 4, 2, 'auto')
  parts = str(spec).split(':')
  products = parts.pop() if len(parts) == 4 else 'auto'
  if (len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts)
      or products not in ('auto', 'dot', 'reduce')):
    raise ConfigError(f"{key} must be 'block_s:num_warps:num_stages' (three positive "
                      "integers), optionally followed by ':auto', ':dot' or ':reduce', got "
                      f"{spec!r}.")
  block, warps, stages = (int(p) for p in parts)
  if block & (block - 1):
    raise ConfigError(f'{key}={spec!r}: block_s must be a power of two.')
  return block, warps, stages, products


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """A decoder-only transformer (Llama-style by default; Qwen2/Gemma switches below).

  Units: sizes are counts of elements; `max_len` is in tokens (the longest KV cache).
  """
  vocab_size: int = 32
  d_model: int = 64
  n_layers: int = 2
  n_heads: int = 4
  n_kv_heads: int = 4
  head_dim: int = 16
  d_ff: int = 256
  max_len: int = 128
  rope_theta: float = 10_000.0
  norm_eps: float = 1e-6
  tie_embeddings: bool = True
  qkv_bias: bool = False               # Qwen2 puts a bias on q, k and v.
  norm_offset: float = 0.0             # Gemma scales by (1 + w): offset 1.0.
  scale_embeddings: bool = False       # Gemma multiplies embeddings by sqrt(d_model).
  activation: Literal['silu', 'gelu_tanh'] = 'silu'
  # Imported-checkpoint details (defaults: off). See ttc_jax/model/hf_import.py.
  # Llama-3 'llama3' RoPE scaling: (factor, low_freq_factor, high_freq_factor,
  # original_max_positions); None: plain RoPE.
  rope_scaling: tuple[float, float, float, float] | None = None
  attn_logit_softcap: float = 0.0      # Gemma-2: cap * tanh(logits / cap); 0 = off.
  final_logit_softcap: float = 0.0     # Gemma-2, on the output logits; 0 = off.
  query_pre_attn_scalar: float = 0.0   # Gemma-2: scores scaled by this**-0.5; 0 = head_dim.
  post_norms: bool = False             # Gemma-2: RMSNorm on attention and MLP outputs too.
  # Sliding-window attention (Gemma-2, some Qwen2): on layers i with sliding_layers[i], a
  # query at position p sees keys at positions in (p - sliding_window, p]. 0 = off.
  sliding_window: int = 0
  sliding_layers: tuple[bool, ...] = ()
  param_dtype: str = 'float32'
  dtype: str = 'float32'               # compute dtype (bfloat16 on accelerators)
  # Execution choices for the full (no-cache) pass; they change speed, not the function.
  # 'xla': the einsum `attend`; 'dot_product': jax.nn.dot_product_attention (XLA);
  # 'cudnn': the same through cuDNN's fused flash attention (GPU, bf16/fp16 only).
  attention_impl: str = 'xla'
  remat: str = 'none'                  # per-layer rematerialisation: 'none', 'dots', 'full'
  scan_unroll: int = 1                 # layers per iteration of the layer scan
  # Execution choices for cached decoding (one query per row; `apply_decode`):
  # 'reduce': float32 multiply-and-reduce fusions over the cached window; 'einsum': bf16
  # batched matrix-vector products with float32 accumulation; 'pallas': the split-K Pallas
  # kernel (model/pallas_decode.py) reading exactly each row's live prefix (interpreted,
  # slowly, off GPU; power-of-two head_dim, no soft-capping or sliding windows); 'auto':
  # 'pallas' on a GPU where the model allows it (measured faster at every shape on an H200),
  # else 'reduce' when every query head has its own kv head and 'einsum' for grouped queries.
  decode_attention: str = 'auto'
  # Launch settings of the Pallas decode kernel, 'block_s:num_warps:num_stages[:products]'
  # (key slots per block, Triton warps, pipeline stages; products 'dot', 'reduce' or 'auto',
  # see pallas_decode.decode_attention); '' = automatic blocks (one block for a window of up
  # to 128 slots, else 64), 4 warps, 2 stages, 'auto' products: the fastest measured ('dot'
  # for one query head per kv head measured 30% slower alone on an H200).
  decode_kernel: str = ''
  # The decode step's elementwise work around the matmuls of a fused-weights layer (each
  # pre-norm's row scale; the q/k/v bias and RoPE with the cache write; SwiGLU): 'pallas' as
  # two Pallas kernels (model/pallas_step.py, interpreted off GPU), 'xla' as XLA's fusions,
  # 'auto' the Pallas kernels wherever the Pallas decode attention runs.
  decode_step_kernels: str = 'auto'
  # True: the sampler gives each layer its own weight buffers (`split_layers`) and unrolls the
  # layers; False: a layer scan over the stacked weights (compiles faster).
  decode_unroll: bool = True
  name: str = ''

  def validate(self, key: str = 'model') -> 'ModelConfig':
    """Raises ConfigError naming `key.field` for the first impossible value."""
    for f in ('vocab_size', 'd_model', 'n_layers', 'n_heads', 'n_kv_heads', 'head_dim',
              'd_ff', 'max_len'):
      v = getattr(self, f)
      if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise ConfigError(f'{key}.{f} must be a positive integer, got {v!r}.')
    if self.n_heads % self.n_kv_heads:
      raise ConfigError(
          f'{key}.n_heads={self.n_heads} must be a multiple of {key}.n_kv_heads='
          f'{self.n_kv_heads} (grouped-query attention shares each kv head among a group).')
    if self.head_dim % 2:
      raise ConfigError(f'{key}.head_dim={self.head_dim} must be even for rotary embeddings.')
    for f in ('param_dtype', 'dtype'):
      if getattr(self, f) not in ('float32', 'bfloat16', 'float16'):
        raise ConfigError(f'{key}.{f} must be float32, bfloat16 or float16, '
                          f'got {getattr(self, f)!r}.')
    if self.activation not in ('silu', 'gelu_tanh'):
      raise ConfigError(f"{key}.activation must be 'silu' or 'gelu_tanh', got "
                        f'{self.activation!r}.')
    if self.rope_theta <= 0 or self.norm_eps <= 0:
      raise ConfigError(f'{key}.rope_theta and {key}.norm_eps must be positive.')
    if self.rope_scaling is not None:
      rs = tuple(self.rope_scaling)
      if (len(rs) != 4 or rs[0] < 1 or not 0 < rs[1] < rs[2] or rs[3] <= 0):
        raise ConfigError(
            f'{key}.rope_scaling must be None or (factor >= 1, low_freq_factor, '
            f'high_freq_factor, original_max_positions) with 0 < low < high and '
            f'original_max_positions > 0, got {self.rope_scaling!r}.')
    for f in ('attn_logit_softcap', 'final_logit_softcap', 'query_pre_attn_scalar'):
      if not getattr(self, f) >= 0:
        raise ConfigError(f'{key}.{f} must be >= 0 (0 = off), got {getattr(self, f)!r}.')
    if not isinstance(self.sliding_window, int) or self.sliding_window < 0:
      raise ConfigError(f'{key}.sliding_window must be an integer >= 0 (0 = off), got '
                        f'{self.sliding_window!r}.')
    if self.sliding_window and len(self.sliding_layers) != self.n_layers:
      raise ConfigError(f'{key}.sliding_layers must give one bool per layer ({key}.n_layers='
                        f'{self.n_layers}) when {key}.sliding_window > 0, got '
                        f'{len(self.sliding_layers)}.')
    if self.attention_impl not in ('xla', 'dot_product', 'cudnn'):
      raise ConfigError(f"{key}.attention_impl must be 'xla', 'dot_product' or 'cudnn', got "
                        f'{self.attention_impl!r}.')
    if self.attention_impl == 'cudnn' and self.dtype == 'float32':
      raise ConfigError(f"{key}.attention_impl='cudnn' needs {key}.dtype bfloat16 or "
                        "float16 (cuDNN flash attention has no float32 kernel).")
    if self.remat not in ('none', 'dots', 'full'):
      raise ConfigError(f"{key}.remat must be 'none', 'dots' or 'full', got {self.remat!r}.")
    if self.decode_attention not in ('auto', 'reduce', 'einsum', 'pallas'):
      raise ConfigError(f"{key}.decode_attention must be 'auto', 'reduce', 'einsum' or "
                        f"'pallas', got {self.decode_attention!r}.")
    if self.decode_attention == 'pallas' and not self.pallas_decode_ok:
      raise ConfigError(f"{key}.decode_attention='pallas' needs a power-of-two head_dim (got "
                        f"{self.head_dim}) and supports neither attention logit soft-capping "
                        "nor sliding windows; use 'auto'.")
    if self.decode_kernel:
      self.decode_kernel_settings(key)
    if self.decode_step_kernels not in DECODE_STEP_KERNELS:
      raise ConfigError(f'{key}.decode_step_kernels must be one of {DECODE_STEP_KERNELS}, got '
                        f'{self.decode_step_kernels!r}.')
    if self.decode_step_kernels == 'pallas' and not self.pow2_head_dim:
      raise ConfigError(f"{key}.decode_step_kernels='pallas' needs a power-of-two head_dim, "
                        f'got {self.head_dim}.')
    if not isinstance(self.scan_unroll, int) or not 1 <= self.scan_unroll <= self.n_layers:
      raise ConfigError(f'{key}.scan_unroll must be an integer in [1, {key}.n_layers='
                        f'{self.n_layers}], got {self.scan_unroll!r}.')
    return self

  @property
  def pallas_decode_ok(self) -> bool:
    """Whether the Pallas decode kernel can run this model: a power-of-two head_dim (its
    blocks' sizes), no attention soft-capping, no sliding windows."""
    return self.pow2_head_dim and not self.attn_logit_softcap and not self.sliding_window

  @property
  def pow2_head_dim(self) -> bool:
    """Whether head_dim is a power of two, as the Pallas kernels' blocks need."""
    return self.head_dim & (self.head_dim - 1) == 0

  def decode_kernel_settings(self, key: str = 'model') -> tuple[int, int, int, str]:
    """(block_s, num_warps, num_stages, products) of the Pallas decode kernel, from
    `decode_kernel` (see `parse_decode_kernel`)."""
    return parse_decode_kernel(self.decode_kernel, f'{key}.decode_kernel')

  @property
  def jnp_dtype(self):
    return jnp.dtype(self.dtype)

  @property
  def jnp_param_dtype(self):
    return jnp.dtype(self.param_dtype)

  # ---- exact parameter counts -------------------------------------------------------------
  def param_counts(self) -> dict[str, int]:
    """Exact counts: {'embedding', 'non_embedding', 'total'} (the unembedding counts as
    embedding when untied, as in Kaplan et al.)."""
    d, h, kv, hd = self.d_model, self.n_heads, self.n_kv_heads, self.head_dim
    attn = d * h * hd + 2 * d * kv * hd + h * hd * d
    if self.qkv_bias:
      attn += h * hd + 2 * kv * hd
    mlp = 3 * d * self.d_ff
    norms = (4 if self.post_norms else 2) * d
    per_layer = attn + mlp + norms
    non_emb = self.n_layers * per_layer + d  # + final norm
    emb = self.vocab_size * d * (1 if self.tie_embeddings else 2)
    return {'embedding': emb, 'non_embedding': non_emb, 'total': emb + non_emb}

  # ---- analytic FLOPs ----------------------------------------------------------------------
  def matmul_params(self) -> int:
    """Weights touched by a matmul per token (everything except norms and the embedding
    lookup, plus the unembedding)."""
    d, h, kv, hd = self.d_model, self.n_heads, self.n_kv_heads, self.head_dim
    per_layer = d * h * hd + 2 * d * kv * hd + h * hd * d + 3 * d * self.d_ff
    return self.n_layers * per_layer + d * self.vocab_size

  def forward_flops_per_token(self, context: float) -> float:
    """Forward FLOPs for one token attending to `context` keys (multiply-add = 2 FLOPs):
    2 * matmul weights + 4 * layers * heads * head_dim * context (QK^T and AV)."""
    attn = 4 * self.n_layers * self.n_heads * self.head_dim * context
    return 2.0 * self.matmul_params() + attn

  def prefill_flops(self, length: int) -> float:
    """Forward FLOPs of a causal pass over `length` tokens (token t sees t+1 keys)."""
    mean_ctx = (length + 1) / 2.0
    return length * self.forward_flops_per_token(mean_ctx)

  def train_flops_per_token(self, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward = 3x forward) at causal mean context."""
    return 3.0 * self.forward_flops_per_token((seq_len + 1) / 2.0)


# ---- the size ladder ----------------------------------------------------------------------
# Each rung is about 4x the non-embedding parameters of the one below, so the ladder holds a
# pair ~14-16x apart two rungs away (the paper compares against a ~14x larger model).
LADDER_NAMES = ('xs', 's', 'm', 'l', 'xl', 'xxl')


def ladder(base_width: int, base_layers: int, *, n: int = 5, vocab_size: int, max_len: int,
           head_dim: int = 16, growth: str = 'balanced', **kw) -> tuple[ModelConfig, ...]:
  """A family of `n` models whose non-embedding parameters grow ~4x per rung.

  growth='balanced': rung i has width base_width * 2**(i/2) rounded to a multiple of
    head_dim, and the depth that brings its non-embedding params closest to 4**i times the
    first rung's (params ~16 L d^2, so depth also grows ~2x per rung).
  growth='width': width base_width * 2**i at a fixed depth of base_layers (exactly 4x per
    rung up to norms); shallow and wide runs far faster on CPUs, where small matmuls are
    overhead-bound.
  """
  if n > len(LADDER_NAMES):
    raise ConfigError(f'family.n must be <= {len(LADDER_NAMES)}, got {n}.')
  if growth not in ('balanced', 'width'):
    raise ConfigError(f"family.growth must be 'balanced' or 'width', got {growth!r}.")
  if growth == 'width':
    out = []
    for i in range(n):
      d = base_width * 2 ** i
      out.append(ModelConfig(vocab_size=vocab_size, d_model=d, n_layers=base_layers,
                             n_heads=d // head_dim, n_kv_heads=d // head_dim,
                             head_dim=head_dim, d_ff=4 * d, max_len=max_len,
                             name=LADDER_NAMES[i], **kw).validate(f'family[{i}]'))
    return tuple(out)
  out = []
  base_nonemb = None
  for i in range(n):
    d = max(head_dim, int(round(base_width * 2 ** (i / 2) / head_dim)) * head_dim)
    heads = d // head_dim
    target = None if base_nonemb is None else base_nonemb * 4 ** i
    best = None
    for layers in range(1, 8 * base_layers * (i + 1) + 1):
      cfg = ModelConfig(vocab_size=vocab_size, d_model=d, n_layers=layers, n_heads=heads,
                        n_kv_heads=heads, head_dim=head_dim, d_ff=4 * d, max_len=max_len,
                        name=LADDER_NAMES[i], **kw)
      if target is None:
        if layers == base_layers:
          best = cfg
          break
        continue
      err = abs(math.log(cfg.param_counts()['non_embedding'] / target))
      if best is None or err < best[0]:
        best = (err, cfg)
    cfg = best if target is None else best[1]
    if base_nonemb is None:
      base_nonemb = cfg.param_counts()['non_embedding']
    out.append(cfg.validate(f'family[{i}]'))
  return tuple(out)
