"""Runs and stages: skip what is done, redo what is stale, resume what was cut off."""

import dataclasses

import pytest

from ttc_jax.study import Run, Stage


@dataclasses.dataclass(frozen=True)
class Cfg:
  a: int = 1
  b: int = 2
  workdir: str = ''
  name: str = 'r'


def make(tmp_path, cfg, calls, fail_in=None):
  def body(key):
    def run(r, stage):
      calls.append(stage.name)
      if fail_in == stage.name:
        raise RuntimeError('killed')
      (r.stage_dir(stage.name) / 'out.txt').write_text(str(getattr(r.cfg, key)))
      return {'value': getattr(r.cfg, key)}
    return run
  stages = [
      Stage('first', (), lambda c: {'a': c.a}, body('a')),
      Stage('second', ('first',), lambda c: {'b': c.b}, body('b')),
      Stage('other', (), lambda c: {'b': c.b}, body('b')),
  ]
  return Run(cfg, dataclasses.asdict(cfg), stages, tmp_path / 'run')


def test_rerun_skips_done_and_knob_change_reruns_downstream(tmp_path):
  calls = []
  run = make(tmp_path, Cfg(), calls)
  assert set(run.states().values()) == {'pending'}
  run.run(log=lambda *_: None)
  assert calls == ['first', 'second', 'other']
  assert run.summary()['second'] == {'value': 2}
  calls.clear()
  make(tmp_path, Cfg(), calls).run(log=lambda *_: None)
  assert calls == []
  # Changing `a` makes first and (through the dependency) second stale; `other` stays done.
  changed = make(tmp_path, Cfg(a=5), calls)
  assert changed.states() == {'first': 'stale', 'second': 'stale', 'other': 'done'}
  changed.run(log=lambda *_: None)
  assert calls == ['first', 'second']


def test_cut_off_stage_is_partial_then_resumes(tmp_path):
  calls = []
  with pytest.raises(RuntimeError):
    make(tmp_path, Cfg(), calls, fail_in='second').run(log=lambda *_: None)
  run = make(tmp_path, Cfg(), calls)
  assert run.states()['first'] == 'done' and run.states()['second'] == 'partial'
  calls.clear()
  run.run(log=lambda *_: None)
  assert calls == ['second', 'other']
  assert set(run.states().values()) == {'done'}


def test_only_runs_requested_stage_and_its_deps(tmp_path):
  calls = []
  make(tmp_path, Cfg(), calls).run(['second'], log=lambda *_: None)
  assert calls == ['first', 'second']
  with pytest.raises(ValueError, match="unknown stage 'nope'"):
    make(tmp_path, Cfg(), calls).run(['nope'], log=lambda *_: None)


def test_speed_and_logging_knobs_do_not_rerun_pretraining(tmp_path):
  from pathlib import Path
  from ttc_jax import configlib, pipeline
  spec = str(Path(__file__).parents[1] / 'configs' / 'quickstart.py') + ':tiny'

  def fingerprints(**overrides):
    cfg, plain = configlib.load(spec, {'workdir': str(tmp_path), **overrides})
    run = pipeline.make_run(cfg, plain)
    return {n: run.fingerprint(n) for n in run.order()}

  base = fingerprints()
  assert fingerprints(**{'pretrain.peak_flops': '1e12', 'pretrain.log_every': '7'}) == base
  changed = fingerprints(**{'pretrain.lr': '0.02'})
  assert all(changed[n] != base[n] for n in ('pretrain_xs', 'family', 'prm', 'report'))


def test_greedy_stage_reuses_pretraining_evaluation(tmp_path, monkeypatch):
  """When the pretraining evaluation covered exactly the bank's test problems, the greedy
  stage takes each member's table from it instead of decoding again."""
  from pathlib import Path
  import pandas as pd
  from ttc_jax import configlib, io, pipeline
  spec = str(Path(__file__).parents[1] / 'configs' / 'quickstart.py') + ':tiny'
  cfg, plain = configlib.load(spec, {'workdir': str(tmp_path), 'family.members': 'xs',
                                     'pretrain.eval_problems': '16',
                                     'sample_bank.problems': '16', 'analysis.big_member': 'xs',
                                     'policy': 'xs'})
  run = pipeline.make_run(cfg, plain)
  run.run(['pretrain_xs'], log=lambda *_: None)
  saved = io.read_parquet(run.stage_dir('pretrain_xs') / pipeline.GREEDY_TABLE)
  assert len(saved) == 16
  calls = []
  real = pipeline.greedy_table
  monkeypatch.setattr(pipeline, 'greedy_table', lambda *a, **k: calls.append(1) or real(*a, **k))
  run.run(['greedy'], log=lambda *_: None)
  assert calls == []
  greedy = io.read_parquet(run.stage_dir('greedy') / 'greedy.parquet')
  pd.testing.assert_frame_equal(greedy.drop(columns='member'), saved)
  # Other problems than the evaluation's: the stage decodes them itself.
  cfg2, plain2 = configlib.load(spec, {'workdir': str(tmp_path), 'family.members': 'xs',
                                       'pretrain.eval_problems': '16',
                                       'sample_bank.problems': '8',
                                       'analysis.big_member': 'xs', 'policy': 'xs'})
  pipeline.make_run(cfg2, plain2).run(['greedy'], log=lambda *_: None)
  assert calls == [1]
