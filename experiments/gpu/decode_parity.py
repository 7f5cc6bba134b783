"""Greedy decoding of a trained family member with each decode attention, side by side.

  python experiments/gpu/decode_parity.py RUN_DIR [--member xs] [--problems 500]

Loads the member from RUN_DIR (a `ttc run` directory with its pretraining done), decodes the
run's test problems greedily with decode_attention 'pallas', 'reduce' and 'einsum', and
prints accuracy, decode seconds and, against 'reduce', the share of problems whose generated
text is identical. bf16 rounding differs between the kernels, so a near tie between two
tokens may break differently; the accuracies should agree to within a few such problems.
"""

import argparse
import dataclasses
import json
import time

import jax

from ttc_jax import cli, pipeline
from ttc_jax.experiment import build_task


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('run_dir')
  ap.add_argument('--member', default='xs')
  ap.add_argument('--problems', type=int, default=500)
  ap.add_argument('--batch', type=int, default=500)
  args = ap.parse_args()
  run = cli._load_run(args.run_dir)
  task = build_task(run.cfg)
  problems = pipeline.test_problems(run.cfg, task, args.problems)
  mcfg, params = pipeline.load_member(run, args.member)
  tables, out = {}, {'member': args.member, 'problems': len(problems),
                     'backend': jax.default_backend()}
  for kind in ('pallas', 'reduce', 'einsum'):
    cfg = dataclasses.replace(mcfg, decode_attention=kind)
    pipeline.greedy_table(cfg, params, task, problems, args.batch)   # compile
    t = time.perf_counter()
    tables[kind] = pipeline.greedy_table(cfg, params, task, problems, args.batch)
    out[kind] = {'accuracy': float(tables[kind]['correct'].mean()),
                 'seconds': time.perf_counter() - t}
  for kind in ('pallas', 'einsum'):
    same = (tables[kind]['text'].to_numpy() == tables['reduce']['text'].to_numpy()).mean()
    out[kind]['same_text_as_reduce'] = float(same)
  print(json.dumps(out, indent=1))


if __name__ == '__main__':
  main()
