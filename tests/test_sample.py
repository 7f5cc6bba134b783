"""Sampler: exactness against the full forward pass, stops, compiles, seeds, sharding, search
primitives, argument errors, and the sample bank."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttc_jax.data.problems import ProblemSet
from ttc_jax.data.tokenizer import CharTokenizer
from ttc_jax.model import transformer
from ttc_jax.model.config import ModelConfig
from ttc_jax.sample import Sampler, reorder
from ttc_jax.sample.decode import kv_slots

CFG = ModelConfig(vocab_size=32, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8,
                  d_ff=64, max_len=64, tie_embeddings=False)
PROMPTS = np.array([[1, 5, 6, 7, 8, 9, 0], [1, 9, 10, 0, 0, 0, 0]], np.int32)
LENGTHS = np.array([6, 3], np.int32)
DELIM = 28


def make_params():
  """Random weights whose next-token distribution is neither one-hot (tied random embeddings
  make a random model repeat its input) nor flat (the default unembedding init), so samples
  vary and greedy choices have clear margins."""
  params = transformer.init_params(CFG, jax.random.key(0))
  params['unembed']['kernel'] = params['unembed']['kernel'] * 40.0
  return params


@pytest.fixture(scope='module')
def params():
  return make_params()


@pytest.fixture(scope='module')
def sampler():
  # Two windows keep CPU compiles short; the window logic is still exercised (32 -> 40).
  return Sampler(CFG, eos_id=-1, step_ids=(DELIM,), n_windows=2)


def _run(sampler, params, key=0, n=2, cache_len=40, prompts=PROMPTS, lengths=LENGTHS, **kw):
  st = sampler.start(params, prompts, lengths, jax.random.key(key), n_samples=n,
                     cache_len=cache_len, **kw)
  return jax.device_get(sampler.generate(params, st))


def test_greedy_matches_full_forward(params, sampler):
  st = _run(sampler, params, temperature=0.0, max_new_tokens=30)
  assert st.done_B.all()
  for b in range(st.batch):
    n, pl = int(st.lengths_B[b]), int(st.prompt_lengths_B[b])
    assert n > pl
    toks_1xN = st.tokens_BxS[b:b + 1, :n]
    logits, _ = transformer.apply(params, toks_1xN, jnp.arange(n)[None], config=CFG)
    np.testing.assert_array_equal(np.argmax(logits[0], -1)[pl - 1:n - 1], toks_1xN[0, pl:])


def test_greedy_via_top_k_one_and_tiny_top_p(params):
  ref = _run(Sampler(CFG, eos_id=-1, n_windows=2), params, temperature=0.0, max_new_tokens=8)
  k1 = _run(Sampler(CFG, eos_id=-1, top_k=1, n_windows=2), params, temperature=1.0,
            max_new_tokens=8)
  p0 = _run(Sampler(CFG, eos_id=-1, n_windows=2), params, temperature=1.0, top_p=1e-6,
            max_new_tokens=8)
  np.testing.assert_array_equal(ref.tokens_BxS, k1.tokens_BxS)
  np.testing.assert_array_equal(ref.tokens_BxS, p0.tokens_BxS)


_FREE = {}


def _free_run(params):
  """Sampling with no stop token and no caps but the buffer: the reference streams."""
  if not _FREE:
    _FREE['st'] = _run(Sampler(CFG, eos_id=-1, n_windows=2), params, key=3, temperature=1.5)
  return _FREE['st']


def test_stops_eos_and_total_cap(params):
  ref = _free_run(params)
  gen = [ref.tokens_BxS[b, ref.prompt_lengths_B[b]:ref.lengths_B[b]] for b in range(4)]
  eos = int(gen[0][3])
  st = _run(Sampler(CFG, eos_id=eos, n_windows=2), params, key=3, temperature=1.5,
            max_new_tokens=np.array([20, 20, 2, 20]))
  for b in range(4):
    hits = np.flatnonzero(gen[b][:20] == eos)
    n_expect = min(20 if b != 2 else 2, hits[0] + 1 if len(hits) else 10**9)
    assert st.lengths_B[b] - st.prompt_lengths_B[b] == n_expect
    np.testing.assert_array_equal(st.tokens_BxS[b, st.prompt_lengths_B[b]:st.lengths_B[b]],
                                  gen[b][:n_expect])
  assert st.done_B.all()


def test_stops_step_delimiter_and_step_caps(params):
  ref = _free_run(params)
  gen = [ref.tokens_BxS[b, ref.prompt_lengths_B[b]:ref.lengths_B[b]] for b in range(4)]
  delim = int(gen[1][2])
  s = Sampler(CFG, eos_id=-1, step_ids=(delim,), n_windows=2)
  # One step per solution: each row ends at its first delimiter (or the 4-token step cap).
  st = _run(s, params, key=3, temperature=1.5, max_steps=1, max_step_tokens=4)
  for b in range(4):
    hits = np.flatnonzero(gen[b] == delim)
    n_expect = min(4, hits[0] + 1 if len(hits) else 10**9)
    assert st.n_generated_B[b] == n_expect
    ends = np.flatnonzero(st.step_end_BxS[b])
    assert list(ends) == [st.lengths_B[b] - 1]
  assert (st.n_steps_B == 1).all() and st.done_B.all()
  # Step cap of 2 tokens and 3 steps: step ends after every delimiter or 2 tokens.
  st = _run(s, params, key=3, temperature=1.5, max_steps=3, max_step_tokens=2)
  for b in range(4):
    ends, run, k = [], 0, 0
    while len(ends) < 3:
      run += 1
      if gen[b][k] == delim or run == 2:
        ends.append(int(st.prompt_lengths_B[b]) + k)
        run = 0
      k += 1
    assert list(np.flatnonzero(st.step_end_BxS[b])) == ends
    assert st.lengths_B[b] == ends[-1] + 1


def test_no_recompile_for_budgets_temperatures_prompt_lengths(params):
  s = Sampler(CFG, eos_id=-1, step_ids=(DELIM,), n_windows=2)
  _run(s, params, temperature=1.0, max_new_tokens=5)
  count = s.compile_count()
  _run(s, params, temperature=np.array([0.0, 0.5]), max_new_tokens=np.array([3, 9]),
       max_step_tokens=4, max_steps=2, top_p=1.0)
  other = np.array([[1, 3, 4, 5, 6, 7, 8, 9, 10, 11], [1, 2, 0, 0, 0, 0, 0, 0, 0, 0]])
  _run(s, params, prompts=other, lengths=np.array([10, 2]), temperature=2.0,
       max_new_tokens=7)   # still bucket 16
  st = s.start(params, PROMPTS, LENGTHS, jax.random.key(1), n_samples=2, cache_len=40)
  st = s.generate(params, st)
  assert s.compile_count() == count
  s.extend_one_step(params, st)  # a different program (one step), compiled once
  assert s.compile_count() == count + 1


def test_fixed_seed_reproducible(params, sampler):
  a = _run(sampler, params, key=7, temperature=1.0, max_new_tokens=12)
  b = _run(sampler, params, key=7, temperature=1.0, max_new_tokens=12)
  c = _run(sampler, params, key=8, temperature=1.0, max_new_tokens=12)
  np.testing.assert_array_equal(a.tokens_BxS, b.tokens_BxS)
  assert not np.array_equal(a.tokens_BxS, c.tokens_BxS)


def test_prefix_shared_equals_unshared(params, sampler):
  shared = _run(sampler, params, key=5, n=3, temperature=1.0, max_new_tokens=10)
  flat = _run(sampler, params, key=5, n=1, prompts=np.repeat(PROMPTS, 3, axis=0),
              lengths=np.repeat(LENGTHS, 3), temperature=1.0, max_new_tokens=10)
  np.testing.assert_array_equal(shared.tokens_BxS, flat.tokens_BxS)
  np.testing.assert_array_equal(shared.lengths_B, flat.lengths_B)


def test_reorder_then_extend_equals_extend_of_reordered_rows(params, sampler):
  st = sampler.start(params, PROMPTS, LENGTHS, jax.random.key(2), n_samples=2, cache_len=40,
                     temperature=1.0, max_step_tokens=3)
  st = sampler.extend_one_step(params, st)
  host = jax.device_get(st)
  assert (host.n_steps_B == 1).all() and not host.done_B.any()
  assert (host.step_end_BxS.sum(1) == 1).all()
  index = np.array([2, 2, 0, 1])
  a = jax.device_get(sampler.extend_one_step(params, reorder(st, index)))
  # The same rows built from scratch: prefill their text as prompts, same key and counter.
  lengths = host.lengths_B[index]
  direct = sampler.start(params, host.tokens_BxS[index, :lengths.max()], lengths,
                         jax.random.key(2), n_samples=1, cache_len=40, temperature=1.0,
                         max_step_tokens=3)
  direct = direct.replace(counter=jnp.asarray(host.counter))
  b = jax.device_get(sampler.extend_one_step(params, direct))
  np.testing.assert_array_equal(a.tokens_BxS, b.tokens_BxS)
  np.testing.assert_array_equal(a.lengths_B, b.lengths_B)
  assert (a.n_steps_B == 2).all()
  # Duplicated rows sample differently (their row index is folded into the key).
  assert not np.array_equal(a.tokens_BxS[0], a.tokens_BxS[1])


def test_steps_per_loop_changes_no_sample(params):
  """Three decode steps per loop iteration (a multi-step loop, then a one-step tail before the
  first window's end) give the same tokens, step ends, counters and counter as one."""
  out = []
  for k in (1, 3):
    s = Sampler(CFG, eos_id=-1, step_ids=(DELIM,), n_windows=2, steps_per_loop=k)
    st = s.start(params, PROMPTS, LENGTHS, jax.random.key(6), n_samples=3, cache_len=40,
                 temperature=1.0, max_new_tokens=30, max_step_tokens=5)
    st = s.extend_one_step(params, s.extend_one_step(params, st))
    out.append(jax.device_get(s.generate(params, st)))
  a, b = out
  assert a.lengths_B.max() > 24   # rows crossed the first window (24 slots)
  for name in ('tokens_BxS', 'lengths_B', 'step_end_BxS', 'n_steps_B', 'done_B', 'counter'):
    np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
  with pytest.raises(ValueError, match='steps_per_loop'):
    Sampler(CFG, eos_id=-1, steps_per_loop=-1)


def test_counter_counts_steps_that_advanced_a_row(params):
  """The state's counter grows by the decode steps in which some row was active: the longest
  any row advanced in the call (rows stop at different steps: caps of 2-7 tokens, or the end
  of a reasoning step), not the steps run: with 3 steps per loop iteration the last
  iteration's steps after every row stopped change nothing (test_steps_per_loop_... checks
  that 1 step per iteration gives the same counter)."""
  s = Sampler(CFG, eos_id=-1, step_ids=(DELIM,), steps_per_loop=3)
  st = s.start(params, PROMPTS, LENGTHS, jax.random.key(8), n_samples=2, cache_len=40,
               temperature=1.0, max_new_tokens=np.array([2, 7, 4, 5]), max_step_tokens=3)
  for call in (s.extend_one_step, s.generate):
    before = jax.device_get(st)
    st = call(params, st)
    after = jax.device_get(st)
    advanced = after.lengths_B - before.lengths_B
    assert len(set(advanced.tolist())) > 1   # rows stopped at different steps
    assert after.counter == before.counter + advanced.max(), call.__name__
  assert Sampler(CFG, eos_id=-1, n_windows=1).steps_per_loop == 2
  assert Sampler(CFG, eos_id=-1, n_windows=2).steps_per_loop == 1
  assert Sampler(CFG, eos_id=-1, n_windows=4).windows(40) == [16, 32, 40]
  # The Pallas kernel reads only live slots: its own windows whatever is asked, 2 steps a loop.
  pallas = Sampler(dataclasses.replace(CFG, decode_attention='pallas'), eos_id=-1, n_windows=4)
  assert pallas.steps_per_loop == 2
  assert [pallas.windows(n) for n in (64, 128, 1024)] == [[64], [64, 128], [64, 128, 1024]]


def test_compiler_options_reach_the_compiled_functions(params, sampler):
  """XLA options given to one Sampler compile its functions (same samples here: the option
  does not change CPU numerics); an unknown option fails naming it."""
  want = _run(sampler, params, key=3, temperature=1.0, max_new_tokens=12)
  tuned = Sampler(CFG, eos_id=-1, step_ids=(DELIM,), n_windows=2,
                  compiler_options={'xla_cpu_enable_fast_math': False})
  got = _run(tuned, params, key=3, temperature=1.0, max_new_tokens=12)
  np.testing.assert_array_equal(got.tokens_BxS, want.tokens_BxS)
  bad = Sampler(CFG, eos_id=-1, n_windows=2, compiler_options={'xla_no_such_option': 1})
  with pytest.raises(Exception, match='xla_no_such_option'):
    _run(bad, params, max_new_tokens=2)


def test_gpu_compiler_options_under_the_callers(monkeypatch):
  """On a GPU a Sampler compiles with GPU_COMPILER_OPTIONS (concurrent command buffers,
  untuned cuBLAS matmuls) under the caller's options, which win on a clash; elsewhere only
  the caller's."""
  from ttc_jax.sample.decode import GPU_COMPILER_OPTIONS
  assert Sampler(CFG, eos_id=-1).compiler_options is None   # CPU here
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert Sampler(CFG, eos_id=-1).compiler_options == GPU_COMPILER_OPTIONS
  mode, tune = 'xla_gpu_command_buffer_scheduling_mode', 'xla_gpu_autotune_level'
  got = Sampler(CFG, eos_id=-1, compiler_options={mode: 'LHS', tune: 4, 'xla_gpu_foo': 1})
  assert got.compiler_options == {**GPU_COMPILER_OPTIONS, mode: 'LHS', tune: 4,
                                  'xla_gpu_foo': 1}
  assert GPU_COMPILER_OPTIONS[mode] == 'CONCURRENT' and GPU_COMPILER_OPTIONS[tune] == 0


@pytest.mark.parametrize('cache_len,slots', [(32, 32), (40, 64), (150, 192)])
def test_pallas_sampler_equals_xla_sampler(params, cache_len, slots):
  """The GPU default (the Pallas kernel, here interpreted; one window, 2 steps per loop
  iteration) decodes the same greedy tokens as the XLA attention through one step, a
  reorder and the rest of the solution. Its KV cache is padded to `kv_slots`: 32 and 40
  (padded to 64) slots are read as one block, 150 (padded to 192) in 64-slot blocks."""
  cfg = dataclasses.replace(CFG, max_len=160)
  xla = Sampler(cfg, eos_id=-1, step_ids=(DELIM,), n_windows=2)
  pallas = Sampler(dataclasses.replace(cfg, decode_attention='pallas'), eos_id=-1,
                   step_ids=(DELIM,))
  out = []
  for s in (xla, pallas):
    st = s.start(params, PROMPTS, LENGTHS, jax.random.key(3), n_samples=2, cache_len=cache_len,
                 temperature=0.0, max_new_tokens=14, max_step_tokens=4)
    assert transformer.cache_slots(st.cache) == (slots if s is pallas else cache_len)
    assert st.cache_len == cache_len
    st = reorder(s.extend_one_step(params, st), np.array([1, 1, 3, 0]))
    out.append(jax.device_get(s.generate(params, st)))
  for name in ('tokens_BxS', 'lengths_B', 'step_end_BxS', 'n_steps_B', 'done_B'):
    np.testing.assert_array_equal(getattr(out[0], name), getattr(out[1], name), err_msg=name)


def test_pallas_windows_change_no_token(params, monkeypatch):
  """Rows crossing the Pallas decode's windows (16 and 32 slots here, patched down from 64
  and 128 so that short CPU runs cross them, then the 64-slot cache) decode the same sampled
  tokens, step ends and counter as the XLA attention in one window."""
  from ttc_jax.sample import decode
  monkeypatch.setattr(decode, 'PALLAS_WINDOWS', (16, 32))
  pallas = Sampler(dataclasses.replace(CFG, decode_attention='pallas'), eos_id=-1,
                   step_ids=(DELIM,))
  assert pallas.windows(64) == [16, 32, 64]
  xla = Sampler(CFG, eos_id=-1, step_ids=(DELIM,), n_windows=1)
  a, b = (_run(s, params, key=4, temperature=1.0, max_new_tokens=30) for s in (xla, pallas))
  assert a.lengths_B.max() > 32   # crossed both windows
  for name in ('tokens_BxS', 'lengths_B', 'step_end_BxS', 'n_steps_B', 'counter'):
    np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_kv_slots():
  assert [kv_slots(n) for n in (1, 8, 33, 64, 65, 128)] == [1, 8, 64, 64, 128, 128]
  assert [kv_slots(n) for n in (129, 154, 192, 1000)] == [192, 192, 192, 1024]


_SHARDED = textwrap.dedent('''
  import dataclasses, json, sys
  import jax, numpy as np
  from ttc_jax.sample import Sampler
  from ttc_jax.sharding import MeshConfig, make_mesh
  sys.path.insert(0, 'tests')
  from test_sample import CFG, PROMPTS, LENGTHS, DELIM, make_params
  assert jax.device_count() == 8
  params = make_params()
  # 'pallas': the Pallas attention and step kernels (interpreted on CPU), run per device's
  # rows under shard_map (transformer.over_row_shards).
  pallas = dataclasses.replace(CFG, decode_attention='pallas', decode_step_kernels='pallas')
  out = {}
  for kind, cfg, n in (('auto', CFG, 4), ('pallas', pallas, 4)):
    for name, mesh in (('one', None), ('eight', make_mesh(MeshConfig(data=-1)))):
      s = Sampler(cfg, eos_id=-1, step_ids=(DELIM,), n_windows=2, mesh=mesh)
      st = s.start(params, PROMPTS, LENGTHS, jax.random.key(4), n_samples=n, cache_len=40,
                   temperature=1.0, max_new_tokens=12, top_p=0.9)
      if mesh is not None:
        assert len(st.tokens_BxS.sharding.device_set) == 8
      st = s.extend_one_step(params, st)
      if mesh is not None and kind == 'pallas':
        # No gather in the compiled decode: each device reads only its rows' cache (without
        # shard_map XLA all-gathers the kernels' operands; the loop condition's all-reduce
        # over rows stays).
        decode = [f for k, f in s._jits.items() if k[0] == 'decode'][0]
        with jax.set_mesh(mesh):
          hlo = decode.lower(params, st, None).compile().as_text()
        out['gathers'] = [op for op in ('all-gather', 'all-to-all') if op in hlo]
      st = s.generate(params, st)
      out[f'{kind}_{name}'] = np.asarray(st.tokens_BxS).tolist()
  print(json.dumps(out))
''')


def test_eight_fake_devices_match_one(params):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
             JAX_PLATFORMS='cpu')
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env['PYTHONPATH'] = root + os.pathsep + env.get('PYTHONPATH', '')
  res = subprocess.run([sys.executable, '-c', _SHARDED], env=env, cwd=root,
                       capture_output=True, text=True, timeout=300)
  assert res.returncode == 0, res.stderr[-3000:]
  out = json.loads(res.stdout.strip().splitlines()[-1])
  assert out['auto_one'] == out['auto_eight']
  assert out['pallas_one'] == out['pallas_eight']
  assert out['gathers'] == []
  s = Sampler(CFG, eos_id=-1, step_ids=(DELIM,), n_windows=2)
  st = s.start(params, PROMPTS, LENGTHS, jax.random.key(4), n_samples=4, cache_len=40,
               temperature=1.0, max_new_tokens=12, top_p=0.9)
  st = s.generate(params, s.extend_one_step(params, st))
  assert np.asarray(st.tokens_BxS).tolist() == out['auto_one']


@pytest.mark.parametrize('kw, word', [
    (dict(cache_len=6), 'cache_len'),
    (dict(n_samples=0), 'n_samples'),
    (dict(temperature=-0.5), 'temperature'),
    (dict(top_p=0.0), 'top_p'),
    (dict(top_p=1.5), 'top_p'),
])
def test_clear_errors(params, sampler, kw, word):
  args = dict(n_samples=2, cache_len=40)
  args.update(kw)
  with pytest.raises(ValueError, match=word):
    sampler.start(params, PROMPTS, LENGTHS, jax.random.key(0), **args)


def test_sample_bank_roundtrip(params, tmp_path):
  from ttc_jax import io
  from ttc_jax.sample.bank import sample_bank, write_bank
  tok = CharTokenizer()
  problems = ProblemSet.from_texts(['a', 'b', 'c'], ['Q:1+2=', 'Q:3*3=', 'Q:9-1='],
                                   ['3', '9', '8'], tok)
  df, stats = sample_bank(params, CFG, problems, 2, jax.random.key(0), tok,
                          grader=lambda text, ref: text.strip() == ref,
                          parse_answer=lambda text: text[-1:] or None, max_new_tokens=6,
                          batch_size=4, progress=False)
  assert len(df) == 6 and stats['samples'] == 6
  assert list(df.problem_id) == ['a', 'a', 'b', 'b', 'c', 'c']
  assert (df.n_generated_tokens == df.tokens.map(len)).all()
  assert (df.n_generated_tokens <= 6).all() and (df.n_prompt_tokens == 7).all()
  write_bank(df, tmp_path / 'bank.parquet')
  back = io.read_parquet(tmp_path / 'bank.parquet')
  assert list(back.columns) == list(df.columns)
  assert [list(t) for t in back.tokens] == list(df.tokens)


def test_row_keys_make_a_row_independent_of_its_batch(params, sampler):
  """With per-row keys, a row samples the same tokens alone or beside other rows."""
  keys = jax.random.split(jax.random.key(7), len(LENGTHS))
  together = sampler.start(params, PROMPTS, LENGTHS, jax.random.key(0), n_samples=1,
                           cache_len=40, temperature=1.0, max_new_tokens=12)
  together = jax.device_get(sampler.generate(params, together, row_keys=keys))
  for r in range(len(LENGTHS)):
    alone = sampler.start(params, PROMPTS[r:r + 1], LENGTHS[r:r + 1], jax.random.key(3),
                          n_samples=1, cache_len=40, temperature=1.0, max_new_tokens=12)
    alone = jax.device_get(sampler.generate(params, alone, row_keys=keys[r:r + 1]))
    np.testing.assert_array_equal(alone.tokens_BxS[0], together.tokens_BxS[r])
