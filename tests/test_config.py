"""Config errors fail before compute and name the key at fault."""

from pathlib import Path

import pytest

from ttc_jax import configlib
from ttc_jax.model import ConfigError

QUICK = str(Path(__file__).parents[1] / 'configs' / 'quickstart.py')


def load(**overrides):
  return configlib.load(QUICK, {k.replace('__', '.'): v for k, v in overrides.items()})


def test_quickstart_loads():
  cfg, plain = load()
  assert cfg.family.members == ('xs', 's', 'm')
  assert plain['family']['max_len'] == cfg.family.max_len


def test_override_types_are_coerced():
  cfg, _ = load(pretrain__steps='10,20,30', pretrain__lr='0.01', family__members='xs,s',
                analysis__big_member='s')
  assert cfg.pretrain.steps == (10, 20, 30) and cfg.pretrain.lr == 0.01
  assert cfg.family.members == ('xs', 's')


@pytest.mark.parametrize('overrides,needle', [
    ({'pretrain.stepz': '3'}, "'pretrain.stepz'"),                  # unknown key
    ({'nope': '1'}, "'nope'"),                                      # unknown top-level key
    ({'pretrain.lr': 'fast'}, 'pretrain.lr'),                       # wrong type
    ({'family.base_width': '-32'}, 'family.base_width'),            # non-positive size
    ({'family.vocab_size': '64'}, 'family.vocab_size'),             # vocabulary mismatch
    ({'family.max_len': '40'}, 'family.max_len'),                   # text cannot fit
    ({'pretrain.seq_len': '20'}, 'pretrain.seq_len'),               # text cannot fit
    ({'task.arith.max_ops': '0'}, 'task.arith.max_ops'),            # impossible task
    ({'family.members': 'xs,huge'}, 'family.members'),              # unknown member
    ({'pretrain.min_lr_ratio': '2.0'}, 'pretrain.min_lr_ratio'),
    ({'family.decode_attention': 'fast'}, 'family.decode_attention'),
    ({'family.decode_kernel': '64:4'}, 'family.decode_kernel'),
    ({'family.decode_kernel': '48:4:2'}, 'family.decode_kernel'),
    ({'family.decode_kernel': '64:4:2:mma'}, 'family.decode_kernel'),
    ({'family.decode_step_kernels': 'triton'}, 'family.decode_step_kernels'),
])
def test_bad_values_name_the_key(overrides, needle):
  with pytest.raises(ConfigError, match=needle.replace('.', r'\.').replace('(', r'\(')):
    configlib.load(QUICK, overrides)


def test_wrong_type_in_file(tmp_path):
  f = tmp_path / 'c.py'
  f.write_text(Path(QUICK).read_text().replace("c.seed = 0", "c.seed = 'zero'"))
  with pytest.raises(ConfigError, match='seed must be of type int'):
    configlib.load(str(f))


def test_missing_file():
  with pytest.raises(ConfigError, match='does not exist'):
    configlib.load('configs/nope.py')


@pytest.mark.parametrize('spec', ['configs/arith_study.py', 'configs/arith_study.py:runlocal'])
def test_arith_study_config_is_valid(spec):
  cfg, _ = configlib.load(str(Path(QUICK).parents[1] / spec))
  models = cfg.family.models()
  ne = [m.param_counts()['non_embedding'] for m in models]
  assert len(models) >= (5 if ':' not in spec else 3)
  assert 10 < ne[2] / ne[0] < 25          # the ~14x pair of the matched comparison
  assert cfg.search.grid()                # every swept combination is valid


def test_missing_prm_checkpoint_names_the_path(tmp_path):
  from ttc_jax.verify.train_verifier import load_verifier
  with pytest.raises(FileNotFoundError, match=str(tmp_path / 'nope')):
    load_verifier(tmp_path / 'nope')


def test_decode_settings_reach_members_but_not_fingerprints():
  """family.decode_attention / decode_kernel / decode_step_kernels set every member's decode
  path; being speed knobs, they leave the pretraining stages' inputs (their fingerprints)
  unchanged."""
  from ttc_jax import pipeline
  base, _ = load()
  tuned, _ = load(family__decode_attention='reduce', family__decode_kernel='32:4:2',
                  family__decode_step_kernels='xla')
  assert {m.decode_attention for m in tuned.family.models()} == {'reduce'}
  assert {m.decode_kernel for m in tuned.family.models()} == {'32:4:2'}
  assert {m.decode_step_kernels for m in tuned.family.models()} == {'xla'}
  for i, member in enumerate(base.family.members):
    inputs = pipeline._pretrain_inputs(member, i)
    assert inputs(base) == inputs(tuned)
