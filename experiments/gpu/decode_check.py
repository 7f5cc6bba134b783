"""The compiled decode path on a GPU against the full forward pass (random weights).

  python experiments/gpu/decode_check.py

The CPU tests run the Pallas kernel in interpret mode; this runs it compiled (Triton) along
with the sampler's fast path (fused weights, in-place cache writes, one window), for each
decode attention, in float32 and bfloat16. It prints, per case, the largest difference from
the full pass's logits relative to their largest magnitude, and the share of positions whose
argmax agrees. float32 should agree to ~1e-5; bfloat16 to its rounding (~1e-2).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ttc_jax.model import ModelConfig, apply, init_cache, init_params
from ttc_jax.model.transformer import apply_decode, split_layers


def check(cfg: ModelConfig, attn: str, batch: int = 64, prompt: int = 9, total: int = 40):
  params = init_params(cfg, jax.random.key(0))
  toks = jax.random.randint(jax.random.key(1), (batch, total), 0, cfg.vocab_size)
  pos = lambda t: jnp.broadcast_to(jnp.arange(t), (batch, t))
  full, _ = apply(params, toks, pos(total), config=cfg)
  cache = init_cache(cfg, batch)
  _, cache = apply(params, toks[:, :prompt], pos(prompt), cache, config=cfg)
  fast = dataclasses.replace(cfg, decode_attention=attn)
  step = jax.jit(lambda p, t, i, c: apply_decode(p, t, i, c, config=fast))
  fused = split_layers(params, fuse=True, config=cfg)
  outs = []
  for i in range(prompt, total):
    logits, cache = step(fused, toks[:, i:i + 1], jnp.full((batch, 1), i), cache)
    outs.append(logits[:, 0])
  got = np.asarray(jnp.stack(outs, 1), np.float32)
  want = np.asarray(full[:, prompt:], np.float32)
  rel = np.abs(got - want).max() / np.abs(want).max()
  agree = (got.argmax(-1) == want.argmax(-1)).mean()
  return rel, agree


def main():
  print(f'backend {jax.default_backend()}: {jax.devices()[0]}')
  for dtype in ('float32', 'bfloat16'):
    for kv_heads in (4, 2):   # one query head per kv head, then grouped queries
      cfg = ModelConfig(vocab_size=128, d_model=256, n_layers=3, n_heads=4, n_kv_heads=kv_heads,
                        head_dim=64, d_ff=512, max_len=64, dtype=dtype, param_dtype=dtype)
      for attn in ('pallas', 'reduce', 'einsum'):
        rel, agree = check(cfg, attn)
        print(f'{dtype:>8} kv_heads={kv_heads} {attn:>6}: max |fast - full| / max |full| = '
              f'{rel:.2e}, argmax agrees at {agree:.1%} of positions', flush=True)


if __name__ == '__main__':
  main()
