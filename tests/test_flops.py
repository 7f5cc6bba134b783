"""The FLOPs accountant: conventions, counts, and the analytic count against XLA's."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttc_jax.analysis import flops as F
from ttc_jax.model.config import ModelConfig, ladder
from ttc_jax.model.transformer import ONE_HOT_MAX_VOCAB, Block, apply, init_params

FAMILY = ladder(32, 2, n=4, vocab_size=32, max_len=64)
B, T = 2, 64


def _xla_forward_flops(cfg: ModelConfig) -> float:
  """XLA's FLOPs for a no-cache forward of [B, T] tokens through the whole model.

  The layer stack is an nn.scan, i.e. a while loop, and XLA's cost analysis counts a loop
  body once whatever its trip count. So we measure a one-layer model (embedding, one layer,
  final norm, unembedding) and add (L - 1) copies of one layer measured on its own.
  """
  one = dataclasses.replace(cfg, n_layers=1)
  params = init_params(one, jax.random.PRNGKey(0))
  tokens = jnp.zeros((B, T), jnp.int32)
  positions = jnp.broadcast_to(jnp.arange(T), (B, T))
  whole = F.xla_flops(lambda p, t, q: apply(p, t, q, config=one)[0], params, tokens, positions)
  layer_params = jax.tree.map(lambda a: a[0], params['layers'])
  x = jnp.zeros((B, T, cfg.d_model), jnp.float32)
  layer = F.xla_flops(
      lambda lp, x, q: Block(cfg).apply({'params': lp}, x, (q, None), None)[0],
      layer_params, x, positions)
  return whole + (cfg.n_layers - 1) * layer


@pytest.mark.parametrize('cfg', FAMILY, ids=[c.name for c in FAMILY])
def test_analytic_forward_matches_xla(cfg):
  # Without a cache the model computes all T x T attention logits and masks the upper
  # triangle, so XLA counts context = T for every token, not the causal (T + 1) / 2.
  analytic = B * T * cfg.forward_flops_per_token(T)
  xla = _xla_forward_flops(cfg)
  if cfg.vocab_size <= ONE_HOT_MAX_VOCAB:
    # Small vocabularies embed by a one-hot matmul (a speed choice: its gradient is not a
    # colliding scatter). The model's FLOPs count a lookup as free, so take it out.
    xla -= 2 * B * T * cfg.vocab_size * cfg.d_model
  ratio = analytic / xla
  print(f'{cfg.name}: analytic/XLA = {ratio:.4f} (analytic {analytic:.4g}, XLA {xla:.4g})')
  # The analytic count omits elementwise work (norms, RoPE, softmax, SiLU, residuals), which
  # XLA counts; it is a few percent at these tiny widths, so analytic is slightly lower.
  assert 0.95 <= ratio <= 1.02, ratio


def test_conventions():
  cfg = FAMILY[1]
  n = cfg.matmul_params()
  counts = F.TokenCounts.causal('prefill', 40) + F.TokenCounts.causal('decode', [25] * 8, 40)
  assert counts.inference_tokens == 40 + 200
  assert F.inference_flops(cfg, counts, 'v1') == pytest.approx(2 * n * 240)
  assert F.inference_flops(cfg, counts, 'iclr') == pytest.approx(4 * n * 240)
  # Exact: prefill is the config's own causal prefill; each decoded token t sees 40 + t keys.
  want = cfg.prefill_flops(40) + 8 * sum(cfg.forward_flops_per_token(40 + t)
                                         for t in range(1, 26))
  assert F.inference_flops(cfg, counts, 'exact') == pytest.approx(want, rel=1e-12)
  with pytest.raises(ValueError, match='convention'):
    F.inference_flops(cfg, counts, 'kaplan')


def test_verifier_counted_on_its_own_config():
  gen, ver = FAMILY[0], FAMILY[2]
  counts = F.TokenCounts.causal('verifier', [30, 50])
  got = F.inference_flops(gen, counts, 'exact', verifier_cfg=ver)
  assert got == pytest.approx(ver.prefill_flops(30) + ver.prefill_flops(50), rel=1e-12)
  # v1 and iclr never look at verifier tokens.
  assert F.inference_flops(gen, counts, 'v1') == 0.0


def test_pretrain_and_train():
  cfg = FAMILY[0]
  assert F.pretrain_flops(cfg, 1e6, 64, 'v1') == pytest.approx(6 * cfg.matmul_params() * 1e6)
  assert F.pretrain_flops(cfg, 1e6, 64, 'exact') == pytest.approx(
      1e6 * cfg.train_flops_per_token(64))
  counts = F.TokenCounts.causal('train', [64] * 10)
  assert F.train_flops(cfg, counts, 'exact') == pytest.approx(
      F.pretrain_flops(cfg, 640, 64, 'exact'))
  scaled = 3 * counts
  assert scaled.train_tokens == 1920 and scaled.train_context == 3 * counts.train_context


def test_causal_context_sum():
  np.testing.assert_allclose(F.causal_context_sum([1, 3], [0, 10]), [1, 36])
