"""The transformer: cached decode equals the full pass, causality, exact parameter counts."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttc_jax.model.config import ConfigError
from ttc_jax.model import ModelConfig, apply, init_cache, init_params, ladder

CFG = ModelConfig(vocab_size=32, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8,
                  d_ff=64, max_len=24)


@pytest.fixture(scope='module')
def params():
  return init_params(CFG, jax.random.key(0))


def _positions(b, t):
  return jnp.broadcast_to(jnp.arange(t), (b, t))


def test_cached_decode_equals_full_forward(params):
  b, t = 3, 14
  toks = jax.random.randint(jax.random.key(1), (b, t), 0, CFG.vocab_size)
  full, _ = apply(params, toks, _positions(b, t), config=CFG)
  cache = init_cache(CFG, b)
  logits, cache = apply(params, toks[:, :5], _positions(b, 5), cache, config=CFG)
  outs = [logits]
  for i in range(5, t):
    logits, cache = apply(params, toks[:, i:i + 1], jnp.full((b, 1), i), cache, config=CFG)
    outs.append(logits)
  np.testing.assert_allclose(jnp.concatenate(outs, 1), full, atol=2e-5, rtol=1e-5)


def _decode_matches_full_pass(params, cfg, fast_params, fast_cfg, b, t, prefix, seed):
  """Prefill `prefix` tokens with `apply`, then decode the rest one at a time with
  `apply_decode(fast_params, config=fast_cfg)`; each step's logits must equal the full
  pass's. Returns (tokens, cache after the last step)."""
  from ttc_jax.model.transformer import apply_decode
  toks = jax.random.randint(jax.random.key(seed), (b, t), 0, cfg.vocab_size)
  full, _ = apply(params, toks, _positions(b, t), config=cfg)
  cache = init_cache(cfg, b)
  _, cache = apply(params, toks[:, :prefix], _positions(b, prefix), cache, config=cfg)
  for i in range(prefix, t):
    logits, cache = apply_decode(fast_params, toks[:, i:i + 1], jnp.full((b, 1), i), cache,
                                 config=fast_cfg, window=16)
    np.testing.assert_allclose(logits[:, 0], full[:, i], atol=2e-5, rtol=1e-5)
  return toks, cache


@pytest.mark.parametrize('attn,unroll,split', [
    ('reduce', True, False), ('einsum', True, True), ('reduce', False, False),
    ('auto', True, True), ('pallas', True, True), ('pallas', False, False),
    ('einsum', True, 'fused'), ('pallas', True, 'fused')])
def test_decode_fast_path_equals_full_forward(params, attn, unroll, split):
  """apply_decode (in-place cache writes, a static window, each attention kernel, unrolled or
  scanned layers) gives the full pass's logits; rows it must not write keep their cache."""
  from ttc_jax.model.transformer import apply_decode, split_layers
  cfg = dataclasses.replace(CFG, decode_attention=attn, decode_unroll=unroll)
  # split='fused': per-layer weights with q/k/v and gate/up concatenated (the sampler's).
  fast_params = split_layers(params, fuse=split == 'fused', config=CFG) if split else params
  b, t = 3, 14
  toks, cache = _decode_matches_full_pass(params, CFG, fast_params, cfg, b, t, 5, seed=1)
  frozen = jnp.array([True, False, True])
  _, after = apply_decode(fast_params, toks[:, :1], jnp.full((b, 1), t), cache, frozen,
                          config=cfg, window=16)
  np.testing.assert_array_equal(after['kv'][:, 1], cache['kv'][:, 1])
  assert not np.array_equal(after['kv'][:, 0], cache['kv'][:, 0])


@pytest.mark.parametrize('family', ['llama', 'qwen2_gelu'])
def test_step_kernels_equal_xla_fusions(family):
  """decode_step_kernels='pallas' (pallas_step's kernels, interpreted here) decodes like XLA's
  fusions: the same logits and cache at every step, frozen rows untouched; and with the
  Pallas attention it still equals the full pass. 'qwen2_gelu' adds q/k/v biases, Gemma's
  norm offset, tanh-GELU and Llama-3 RoPE scaling."""
  from ttc_jax.model.transformer import apply_decode, split_layers, uses_step_kernels
  cfg = CFG
  if family != 'llama':
    cfg = dataclasses.replace(CFG, qkv_bias=True, norm_offset=1.0, activation='gelu_tanh',
                              rope_scaling=(8.0, 1.0, 4.0, 16))
  params = init_params(cfg, jax.random.key(11))
  params['layers'] = jax.tree.map(
      lambda x: x + 0.1 * jax.random.normal(jax.random.key(12), x.shape), params['layers'])
  fused = split_layers(params, fuse=True, config=cfg)
  xla = dataclasses.replace(cfg, decode_attention='reduce', decode_step_kernels='xla')
  kern = dataclasses.replace(xla, decode_step_kernels='pallas')
  assert not uses_step_kernels(xla) and uses_step_kernels(kern)
  assert not uses_step_kernels(CFG)   # 'auto' on a CPU: the Pallas attention does not run
  b, t = 4, 9
  toks = jax.random.randint(jax.random.key(13), (b, t), 0, cfg.vocab_size)
  cache = init_cache(cfg, b)
  _, cache = apply(params, toks[:, :4], _positions(b, 4), cache, config=cfg)
  caches = {'xla': cache, 'pallas': cache}
  write = jnp.array([True, False, True, True])
  for i in range(4, t):
    logits = {}
    for name, c in (('xla', xla), ('pallas', kern)):
      logits[name], caches[name] = apply_decode(
          fused, toks[:, i:i + 1], jnp.full((b, 1), i), caches[name], write, config=c,
          window=16)
    # float32 model: the two sum the squares in different orders (rounding-level changes)
    np.testing.assert_allclose(logits['pallas'], logits['xla'], atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(caches['pallas']['kv'], caches['xla']['kv'], atol=2e-6,
                               rtol=1e-5)
  np.testing.assert_array_equal(caches['pallas']['kv'][:, 1], cache['kv'][:, 1])
  both = dataclasses.replace(kern, decode_attention='pallas')
  _decode_matches_full_pass(params, cfg, fused, both, 2, 8, 4, seed=14)


def test_fused_projections_keep_qkv_biases():
  """split_layers(fuse=True) concatenates q/k/v biases with their kernels (Qwen-style models):
  the fused decode path still equals the full pass."""
  from ttc_jax.model.transformer import split_layers
  cfg = dataclasses.replace(CFG, qkv_bias=True, tie_embeddings=True, decode_attention='reduce')
  params = init_params(cfg, jax.random.key(3))
  # Biases start at zero: perturb every weight so they count.
  params['layers'] = jax.tree.map(
      lambda x: x + 0.1 * jax.random.normal(jax.random.key(4), x.shape), params['layers'])
  fused = split_layers(params, fuse=True, config=cfg)
  assert set(fused['layers'][0]['qkv']) == {'kernel'}
  assert set(fused['folded_head']) == {'embedding'}   # tied: the gain folded into the table
  assert fused['layers'][0]['qkv_bias'].shape == (cfg.n_heads + 2 * cfg.n_kv_heads, 8)
  _decode_matches_full_pass(params, cfg, fused, cfg, 2, 9, 4, seed=5)


@pytest.mark.parametrize('norm_offset,tied', [(0.0, True), (1.0, False)])
def test_fused_layers_fold_norm_gains(norm_offset, tied):
  """split_layers(fuse=True) folds each pre-norm's gain (plus norm_offset, Gemma's 1 + w) into
  the projection it feeds, and the final norm's into the unembedding (the tied table or its
  own kernel); the fused decode path applies the norms as row scales: with gains far from 1
  it still equals the full pass, and no layer norm parameters are left."""
  from ttc_jax.model.transformer import split_layers
  cfg = dataclasses.replace(CFG, norm_offset=norm_offset, decode_attention='reduce',
                            tie_embeddings=tied)
  params = init_params(cfg, jax.random.key(6))
  params['layers'] = {
      name: ({'scale': 0.5 + jax.random.uniform(jax.random.key(i), sub['scale'].shape)}
             if name.endswith('norm') else sub)
      for i, (name, sub) in enumerate(params['layers'].items())}
  params['final_norm'] = {
      'scale': 0.5 + jax.random.uniform(jax.random.key(9), params['final_norm']['scale'].shape)}
  fused = split_layers(params, fuse=True, config=cfg)
  assert not [k for k in fused['layers'][0] if k.endswith('norm')]
  assert set(fused['folded_head']) == {'embedding' if tied else 'kernel'}
  _decode_matches_full_pass(params, cfg, fused, cfg, 2, 9, 4, seed=7)
  with pytest.raises(ValueError, match='config'):
    split_layers(params, fuse=True)


def test_decode_kernel_settings():
  assert CFG.decode_kernel_settings() == (0, 4, 2, 'auto')   # 0: pallas_decode.auto_block
  tuned = dataclasses.replace(CFG, decode_kernel='32:2:3:dot').validate()
  assert tuned.decode_kernel_settings() == (32, 2, 3, 'dot')


def test_auto_decode_attention_is_pallas_on_gpu_only(monkeypatch):
  from ttc_jax.model import transformer
  assert transformer.decode_attention_kind(CFG) in ('reduce', 'einsum')   # CPU
  monkeypatch.setattr(transformer.jax, 'default_backend', lambda: 'gpu')
  assert transformer.decode_attention_kind(CFG) == 'pallas'
  capped = dataclasses.replace(CFG, attn_logit_softcap=50.0)
  assert transformer.decode_attention_kind(capped) == transformer.xla_decode_attention_kind(CFG)
  explicit = dataclasses.replace(CFG, decode_attention='reduce')
  assert transformer.decode_attention_kind(explicit) == 'reduce'
  # The kernel's blocks need a power-of-two head_dim: 'auto' keeps XLA, 'pallas' is refused.
  odd = dataclasses.replace(CFG, head_dim=12)
  assert transformer.decode_attention_kind(odd) == transformer.xla_decode_attention_kind(odd)
  with pytest.raises(ConfigError, match='decode_attention.*head_dim'):
    dataclasses.replace(odd, decode_attention='pallas').validate('family')


def test_padded_prompts_of_different_lengths(params):
  """Right-padded prompts prefilled together, then each row decodes from its own length:
  every row's logits equal that row's unpadded full pass."""
  lengths = [3, 7, 5]
  seqs = [jax.random.randint(jax.random.key(10 + i), (12,), 0, CFG.vocab_size)
          for i in range(3)]
  prompt = jnp.stack([jnp.where(jnp.arange(12) < n, s, 0) for s, n in zip(seqs, lengths)])
  cache = init_cache(CFG, 3)
  pre, cache = apply(params, prompt[:, :8], _positions(3, 8), cache, config=CFG)
  pos = jnp.asarray(lengths)
  step_logits = []
  for k in range(4):
    tok = jnp.stack([s[n + k] for s, n in zip(seqs, lengths)])[:, None]
    lg, cache = apply(params, tok, (pos + k)[:, None], cache, config=CFG)
    step_logits.append(lg[:, 0])
  for r, (s, n) in enumerate(zip(seqs, lengths)):
    full, _ = apply(params, s[None, :n + 4], jnp.arange(n + 4)[None], config=CFG)
    np.testing.assert_allclose(pre[r, n - 1], full[0, n - 1], atol=2e-5)
    for k in range(4):
      np.testing.assert_allclose(step_logits[k][r], full[0, n + k], atol=2e-5)


def test_causality(params):
  toks = jax.random.randint(jax.random.key(2), (1, 10), 0, CFG.vocab_size)
  a, _ = apply(params, toks, _positions(1, 10), config=CFG)
  b, _ = apply(params, toks.at[0, 6].set((toks[0, 6] + 1) % CFG.vocab_size), _positions(1, 10),
               config=CFG)
  np.testing.assert_array_equal(a[0, :6], b[0, :6])
  assert not np.allclose(a[0, 6:], b[0, 6:])
  # And by gradients: d logits[t] / d embedding[s] = 0 for tokens only at s > t (untied, so
  # the embedding table gets no gradient through the output layer).
  cfg = dataclasses.replace(CFG, tie_embeddings=False)
  untied = init_params(cfg, jax.random.key(0))
  emb = untied['embed']['embedding']

  def logit_at(e, t):
    p = {**untied, 'embed': {'embedding': e}}
    return apply(p, toks, _positions(1, 10), config=cfg)[0][0, t].sum()

  g = jax.grad(logit_at)(emb, 3)
  later = np.setdiff1d(np.asarray(toks[0, 4:]), np.asarray(toks[0, :4]))
  assert later.size and np.all(np.asarray(g)[later] == 0)
  assert np.any(np.asarray(g)[np.asarray(toks[0, :4])] != 0)


@pytest.mark.parametrize('tie,bias', [(True, False), (False, True)])
def test_param_counts_exact(tie, bias):
  cfg = ModelConfig(vocab_size=40, d_model=48, n_layers=3, n_heads=6, n_kv_heads=2,
                    head_dim=8, d_ff=96, tie_embeddings=tie, qkv_bias=bias)
  p = init_params(cfg, jax.random.key(0))
  assert sum(x.size for x in jax.tree.leaves(p)) == cfg.param_counts()['total']


def test_ladder_spans_about_4x_per_rung():
  fam = ladder(32, 2, n=5, vocab_size=32, max_len=64)
  ne = np.array([c.param_counts()['non_embedding'] for c in fam], float)
  ratios = ne[1:] / ne[:-1]
  assert np.all((ratios > 3.0) & (ratios < 5.3)), ratios
  assert 10 < ne[2] / ne[0] < 25   # a member ~14x another exists


def test_width_ladder_is_exactly_4x_up_to_norms():
  fam = ladder(16, 2, n=4, vocab_size=32, max_len=64, head_dim=8, growth='width')
  assert [c.d_model for c in fam] == [16, 32, 64, 128]
  ne = np.array([c.param_counts()['non_embedding'] for c in fam], float)
  np.testing.assert_allclose(ne[1:] / ne[:-1], 4.0, rtol=0.03)


def test_one_hot_embedding_equals_gather_with_its_gradient():
  """Small vocabularies embed by one-hot matmul (its gradient is a matmul, not a colliding
  scatter); values and gradients must equal the gather's exactly."""
  from ttc_jax.model import transformer
  cfg = ModelConfig(vocab_size=24, d_model=16, n_layers=1, n_heads=2, n_kv_heads=2,
                    head_dim=8, d_ff=32, max_len=16, scale_embeddings=True)
  assert cfg.vocab_size <= transformer.ONE_HOT_MAX_VOCAB
  params = init_params(cfg, jax.random.key(3))
  tokens = jax.random.randint(jax.random.key(4), (3, 7), 0, cfg.vocab_size)
  tokens = tokens.at[0].set(5)   # many repeats of one token: the gather's worst case

  def embed(p, one_hot):
    model = transformer.Transformer(cfg)
    if one_hot:
      return model.apply({'params': p}, tokens, method=transformer.Transformer.embed_tokens)
    return p['embed']['embedding'][tokens] * cfg.d_model ** 0.5

  got, want = embed(params, True), embed(params, False)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  w = jax.random.normal(jax.random.key(5), want.shape)
  g1 = jax.grad(lambda p: jnp.sum(embed(p, True) * w))(params)['embed']['embedding']
  g2 = jax.grad(lambda p: jnp.sum(embed(p, False) * w))(params)['embed']['embedding']
  np.testing.assert_allclose(np.asarray(g1), np.asarray(g2), rtol=1e-6, atol=1e-6)


def test_token_cross_entropy_equals_optax():
  import optax
  from ttc_jax.train.pretrain import token_cross_entropy
  logits = jax.random.normal(jax.random.key(0), (2, 5, 11)) * 3
  targets = jax.random.randint(jax.random.key(1), (2, 5), 0, 11)
  np.testing.assert_allclose(
      np.asarray(token_cross_entropy(logits, targets)),
      np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits, targets)),
      rtol=1e-6, atol=1e-6)
