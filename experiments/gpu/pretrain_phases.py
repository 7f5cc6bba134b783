"""Times the phases of one pretraining stage (data, train loop, greedy eval) of arith_study's xs
member: `python3 experiments/gpu/pretrain_phases.py` (400 steps)."""
import time, functools, sys
from ttc_jax import pipeline, cli
from ttc_jax.train import loop as train_lib
def timed(mod, name):
  f = getattr(mod, name)
  @functools.wraps(f)
  def g(*a, **k):
    t = time.time(); r = f(*a, **k); print(f'TIMER {name}: {time.time()-t:.1f}s', flush=True); return r
  setattr(mod, name, g)
timed(pipeline, 'evaluate_greedy'); timed(pipeline, '_pretrain_data'); timed(train_lib, 'train')
pipeline.train_lib = train_lib
sys.argv = ['ttc', 'run', 'configs/arith_study.py', '--config.workdir=/tmp/profruns', '--config.family.members=xs', '--config.pretrain.steps=400', '--config.pretrain.log_every=100', '--stages=pretrain_xs', '--config.analysis.big_member=xs']
cli.main()
