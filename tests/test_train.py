"""The shared train loop: resume equals uninterrupted, 8 devices equal 1, the NaN guard."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttc_jax.model import ModelConfig, init_params
from ttc_jax.sharding import MeshConfig, make_mesh
from ttc_jax.train import TrainConfig, TrainingDiverged, load_params, train
from ttc_jax.train import pretrain as P

CFG = ModelConfig(vocab_size=32, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8,
                  d_ff=64, max_len=32)
TCFG = TrainConfig(steps=(6,), batch_size=8, seq_len=16, lr=1e-2, warmup_steps=2,
                   log_every=1, ckpt_every=3)


def _data():
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, 32, size=(64, 17)).astype(np.int32)
  return {'tokens': tokens, 'loss_mask': np.ones_like(tokens, np.float32),
          'positions': np.broadcast_to(np.arange(17), tokens.shape).astype(np.int32),
          'segments': np.ones_like(tokens)}


def _run(workdir, total, cfg=TCFG, loss=None):
  return train(loss_fn=loss or (lambda p, b, r: P.lm_loss(p, b, r, config=CFG)),
               init_fn=lambda: init_params(CFG, jax.random.key(0)),
               batch_fn=P.epoch_batches(_data(), cfg.batch_size, 0), cfg=cfg,
               total_steps=total, mesh=make_mesh(MeshConfig()), workdir=workdir,
               tokens_per_step=cfg.batch_size * cfg.seq_len,
               flops_per_token=CFG.train_flops_per_token(cfg.seq_len), seed=0,
               metadata={'non_embedding_params': CFG.param_counts()['non_embedding']},
               progress=False)


def test_resume_equals_uninterrupted(tmp_path):
  full = _run(tmp_path / 'a', 6)
  _run(tmp_path / 'b', 3)                 # "killed" after the step-3 checkpoint
  resumed = _run(tmp_path / 'b', 6)
  assert resumed.step == 6
  for x, y in zip(jax.tree.leaves(full.params), jax.tree.leaves(resumed.params)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  params, meta = load_params(tmp_path / 'b')
  assert meta['step'] == 6 and meta['tokens_seen'] == 6 * 8 * 16
  assert meta['train_flops_6nd'] == 6 * CFG.param_counts()['non_embedding'] * 6 * 8 * 16
  metrics = (tmp_path / 'a' / 'metrics.jsonl').read_text().splitlines()
  losses = [json.loads(l)['loss'] for l in metrics]
  assert losses[-1] < losses[0]


def test_nan_guard_keeps_last_good_checkpoint(tmp_path):
  # Poison the data from step 4 on: a NaN loss at step 5 (index 4).
  data = _data()
  bad = {k: v.copy() for k, v in data.items()}
  bad['loss_mask'][:] = np.nan
  good_fn = P.epoch_batches(data, 8, 0)
  bad_fn = P.epoch_batches(bad, 8, 0)
  with pytest.raises(TrainingDiverged, match=r'at step 4.*step 3'):
    train(loss_fn=lambda p, b, r: P.lm_loss(p, b, r, config=CFG),
          init_fn=lambda: init_params(CFG, jax.random.key(0)),
          batch_fn=lambda s: good_fn(s) if s < 4 else bad_fn(s), cfg=TCFG, total_steps=6,
          mesh=make_mesh(MeshConfig()), workdir=tmp_path, tokens_per_step=128,
          flops_per_token=1.0, seed=0, progress=False)
  _, meta = load_params(tmp_path)
  assert meta['step'] == 3


_EIGHT = textwrap.dedent('''
  import sys, jax, numpy as np
  sys.path.insert(0, {root!r})
  from tests.test_train import _run
  r = _run({workdir!r}, 2)
  assert len(jax.devices()) == {n}, jax.devices()
  np.savez({out!r}, *[np.asarray(x) for x in jax.tree.leaves(r.params)])
''')


def _params_on(n, tmp_path):
  out = tmp_path / f'p{n}.npz'
  env = {**os.environ, 'XLA_FLAGS': f'--xla_force_host_platform_device_count={n}',
         'JAX_PLATFORMS': 'cpu'}
  root = str(Path(__file__).parents[1])
  code = _EIGHT.format(root=root, workdir=str(tmp_path / f'w{n}'), n=n, out=str(out))
  subprocess.run([sys.executable, '-c', code], check=True, env=env, cwd=root)
  with np.load(out) as z:
    return [z[k] for k in sorted(z.files, key=lambda s: int(s.split('_')[1]))]


def test_eight_fake_devices_equal_one(tmp_path):
  one, eight = _params_on(1, tmp_path), _params_on(8, tmp_path)
  for a, b in zip(one, eight):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_packed_rows_equal_separate_examples():
  """Loss of packed rows equals the loss of the same examples one per row."""
  from ttc_jax.data.tokenizer import CharTokenizer
  tok = CharTokenizer()
  prompts = ['Q:1+2\n', 'Q:3*4-5\n', 'Q:9\n']
  sols = ['1+2=3\nA:3\n', '3*4=12\n12-5=7\nA:7\n', 'A:9\n']
  packed = P.encode_examples(prompts, sols, tok, 60, pack=True)
  single = P.encode_examples(prompts, sols, tok, 60, pack=False)
  assert len(packed['tokens']) == 1 and len(single['tokens']) == 3
  params = init_params(CFG, jax.random.key(1))
  lp, _ = P.lm_loss(params, packed, None, config=CFG)
  ls, _ = P.lm_loss(params, single, None, config=CFG)
  np.testing.assert_allclose(lp, ls, rtol=1e-5)
  # One example per row needs no segment mask: the plain causal pass gives the same loss.
  lu, _ = P.lm_loss(params, single, None, config=CFG, packed=False)
  np.testing.assert_allclose(lu, ls, rtol=1e-5)


def _encode_examples_by_loop(prompts, solutions, tok, seq_len, loss_on_prompt, pack):
  """The packing rule written one example at a time (the layout `encode_examples` documents)."""
  width = seq_len + 1
  rows, used = [], width
  for p, s in zip(prompts, solutions):
    pt, st = tok.encode(p), tok.encode(s)
    ex = [tok.bos_id] + pt + st + [tok.eos_id]
    if not pack or used + len(ex) > width:
      rows.append([])
      used = 0
    rows[-1].append((ex, 1 if loss_on_prompt else 1 + len(pt)))
    used += len(ex)
  out = {k: np.zeros((len(rows), width), np.int32) for k in ('tokens', 'positions', 'segments')}
  out['tokens'][:] = tok.pad_id
  out['loss_mask'] = np.zeros((len(rows), width), np.float32)
  for r, row in enumerate(rows):
    at = 0
    for seg, (ex, first) in enumerate(row, start=1):
      out['tokens'][r, at:at + len(ex)] = ex
      out['positions'][r, at:at + len(ex)] = np.arange(len(ex))
      out['segments'][r, at:at + len(ex)] = seg
      out['loss_mask'][r, at + first:at + len(ex)] = 1.0
      at += len(ex)
    out['positions'][r, at:] = out['positions'][r, at - 1] + 1 + np.arange(width - at)
  return out


@pytest.mark.parametrize('pack,loss_on_prompt', [(True, False), (True, True), (False, False)])
def test_encode_examples_equals_example_by_example_packing(pack, loss_on_prompt):
  from ttc_jax.data import arith
  from ttc_jax.data.tokenizer import CharTokenizer
  tok = CharTokenizer()
  probs = arith.generate(arith.ArithTaskConfig(train_size=300), 'train', 300)
  prompts, sols = [p.prompt for p in probs], [p.solution for p in probs]
  # Exact fits: an example of exactly seq_len + 1 tokens, and rows that fill to the last slot.
  prompts.append('Q:' + '1+' * 13 + '1\n')
  sols.append('A:' + '9' * (128 - len(prompts[-1]) - 2 - 3) + '\n')
  assert len(tok.encode(prompts[-1] + sols[-1])) + 2 == 128
  got = P.encode_examples(prompts, sols, tok, 127, loss_on_prompt, pack)
  want = _encode_examples_by_loop(prompts, sols, tok, 127, loss_on_prompt, pack)
  assert len(want['tokens']) < len(prompts) or not pack
  assert got.keys() == want.keys()
  for k in want:
    assert got[k].dtype == want[k].dtype, k
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)
  assert P.encode_examples([], [], tok, 60)['tokens'].shape == (0, 61)


def test_encode_examples_errors_name_the_example_and_the_character():
  from ttc_jax.data.tokenizer import CharTokenizer
  tok = CharTokenizer()
  with pytest.raises(ValueError, match=r"example 1 \('Q:2222"):
    P.encode_examples(['Q:1\n', 'Q:' + '2' * 70 + '\n'], ['A:1\n', 'A:2\n'], tok, 60)
  with pytest.raises(ValueError, match=r"\['é'\]"):
    P.encode_examples(['Q:1\n', 'Q:é\n'], ['A:1\n', 'A:2\n'], tok, 60)
  with pytest.raises(ValueError, match=r"\['x'\]"):
    P.encode_examples(['Q:1\n'], ['A:x\n'], tok, 60)
  ids, lens = tok.encode_many(['Q:12\n', '', 'A:3'])
  assert ids.tolist() == tok.encode('Q:12\n') + tok.encode('A:3') and lens.tolist() == [5, 0, 3]
