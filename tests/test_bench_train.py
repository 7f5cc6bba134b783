"""`ttc bench train` on a tiny shape: it runs, writes its record, and its loss is the loss."""

import json

import jax
import jax.numpy as jnp
import numpy as np

from ttc_jax.model import ModelConfig, init_params
from ttc_jax.train import bench, pretrain

CFG = ModelConfig(vocab_size=40, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8,
                  d_ff=64, max_len=16, tie_embeddings=False)


def test_main_writes_a_record(tmp_path):
  out = tmp_path / 'bench.json'
  rc = bench.main(['--d-model', '32', '--layers', '2', '--heads', '4', '--kv-heads', '2',
                   '--head-dim', '8', '--d-ff', '64', '--vocab', '40', '--batch', '2',
                   '--seq', '16', '--dtype', 'float32', '--attention', 'dot_product',
                   '--steps', '2', '--warmup', '1', '--windows', '2', '--peak-n', '64',
                   '--variants', 'loss=std,unroll=2,breakdown=1', '--out', str(out)])
  assert rc == 0
  rec = json.loads(out.read_text())
  assert rec['peak_flops'] > 0
  [v] = rec['variants']
  assert (v['loss'], v['attention'], v['unroll']) == ('std', 'dot_product', 2)
  assert v['tokens_per_s'] > 0 and 0 < v['mfu'] and np.isfinite(v['final_loss'])
  assert v['flops_per_token_analytic'] == CFG.train_flops_per_token(16)
  assert v['xla_cost_loop_free'] and v['forward_s'] > 0


def test_fused_loss_equals_lm_loss():
  params = init_params(CFG, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (3, 17), 0, CFG.vocab_size)
  mask = (jax.random.uniform(jax.random.key(2), tokens.shape) < 0.7).astype(jnp.float32)
  batch = {'tokens': tokens, 'loss_mask': mask,
           'positions': jnp.broadcast_to(jnp.arange(17), tokens.shape),
           'segments': jnp.ones_like(tokens)}
  ref = jax.jit(jax.value_and_grad(lambda p: pretrain.lm_loss(p, batch, None, config=CFG)[0]))
  got = jax.jit(jax.value_and_grad(
      lambda p: bench.fused_lm_loss(p, batch, None, config=CFG)[0]))
  (loss_got, grad_got), (loss_ref, grad_ref) = got(params), ref(params)
  np.testing.assert_allclose(loss_got, loss_ref, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(grad_got), jax.tree.leaves(grad_ref)):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-4)
