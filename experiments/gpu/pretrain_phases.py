"""Times the phases of one pretraining stage of arith_study's xs member: building the packed
rows, the train loop, the greedy evaluation; optionally a Perfetto trace of the train loop.

  python3 experiments/gpu/pretrain_phases.py [--trace DIR] [--config.KEY=VALUE ...]

Defaults: 400 steps, metrics every 100, run directory /tmp/profruns. Extra --config overrides
go to `ttc run` (for an A/B of the attention path: --config.pretrain.pack=False
--config.pretrain.seq_len=159 --config.family.attention_impl=cudnn). Summarise a trace with
`python3 experiments/trace_summary.py DIR/.../perfetto_trace.json.gz`.
"""
import functools
import sys
import time

import jax

from ttc_jax import cli, pipeline
from ttc_jax.train import loop as train_lib


def timed(mod, name, trace_dir=None):
  f = getattr(mod, name)

  @functools.wraps(f)
  def g(*a, **k):
    t = time.time()
    if trace_dir:
      with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        r = f(*a, **k)
    else:
      r = f(*a, **k)
    print(f'TIMER {name}: {time.time() - t:.1f}s', flush=True)
    return r
  setattr(mod, name, g)


def main(argv):
  trace = None
  if '--trace' in argv:
    i = argv.index('--trace')
    trace = argv[i + 1]
    argv = argv[:i] + argv[i + 2:]
  timed(pipeline, 'evaluate_greedy')
  timed(pipeline, '_pretrain_data')
  timed(train_lib, 'train', trace)
  pipeline.train_lib = train_lib
  sys.argv = ['ttc', 'run', 'configs/arith_study.py', '--config.workdir=/tmp/profruns',
              '--config.family.members=xs', '--config.pretrain.steps=400',
              '--config.pretrain.log_every=100', '--config.analysis.big_member=xs',
              '--stages=pretrain_xs', *argv]
  cli.main()


if __name__ == '__main__':
  main(sys.argv[1:])
