"""Search benchmark: wall time of beam search versus best-of-N weighted at the same budget.

  python -m ttc_jax.search.bench                       # CPU smoke: tiny models, < 1 minute
  python -m ttc_jax.search.bench --n 256 --m 4 --problems 500 --batch-problems 64 \\
      --d-model 64 --layers 2 --heads 4 --head-dim 16 --d-ff 256 --dtype bfloat16 \\
      --max-rounds 12 --max-step-tokens 12   # arith_study's policy shape and search settings
  python -m ttc_jax.search.bench --n 256 --m 4 --problems 64 --batch-problems 4 \\
      --d-model 512 --layers 8 --heads 8 --head-dim 64 --d-ff 2048 --dtype bfloat16 \\
      --max-rounds 40 --max-step-tokens 32   # the paper's 40 rounds (not yet timed; at 16
                                             # problems per batch, 4096 rows x 1298 slots ran
                                             # out of H200 memory)

Both methods run on the same problems with the same policy and the same PRM (incremental,
`PRMScorer`), each first once untimed (compiles), then timed. Reported per method: seconds,
problems/s, and the per-phase split (policy decode, PRM scoring, selection/reorder; 'other'
is the host work of picking answers), plus the beam / best-of-N time ratio.

Weights are random unless --policy-workdir / --prm-workdir point at train workdirs (then the
model flags must describe that checkpoint's config). Random weights stop at EOS or a cap at
random, so absolute numbers are only a shape check; use trained checkpoints for real ones.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import numpy as np

from ttc_jax.data.arith import ArithTask, ArithTaskConfig
from ttc_jax.model import init_params
from ttc_jax.model.config import ModelConfig
from ttc_jax.search.run import run_search, task_kwargs
from ttc_jax.search.scorers import PRMScorer
from ttc_jax.search.steps import Policy


def _parser() -> argparse.ArgumentParser:
  ap = argparse.ArgumentParser(prog='ttc bench search', description=__doc__.split('\n')[0])
  a = ap.add_argument
  a('--n', type=int, default=16, help='budget N (beams / samples per problem)')
  a('--m', type=int, default=4, help='beam width M')
  a('--problems', type=int, default=4, help='problems (arithmetic test split)')
  a('--batch-problems', type=int, default=4, help='problems searched together')
  a('--max-rounds', type=int, default=8, help='search rounds = max steps per solution')
  a('--max-step-tokens', type=int, default=8, help='tokens per step cap')
  a('--temperature', type=float, default=1.0)
  a('--d-model', type=int, default=32)
  a('--layers', type=int, default=2)
  a('--heads', type=int, default=4)
  a('--kv-heads', type=int, default=0, help='0: same as --heads')
  a('--head-dim', type=int, default=8)
  a('--d-ff', type=int, default=64)
  a('--dtype', default='float32', help='compute dtype (bfloat16 on accelerators)')
  a('--windows', type=int, default=2, help='static attention windows of the decode loop')
  a('--policy-workdir', default=None, help='train workdir of the policy (else random)')
  a('--prm-workdir', default=None, help='train workdir of the PRM (else random head)')
  a('--seed', type=int, default=0)
  a('--out', default=None, help='write the JSON record here')
  return ap


def _phases(seconds: dict, wall: float) -> dict:
  out = {k: float(seconds.get(k, 0.0)) for k in ('policy', 'verifier', 'select')}
  out['other'] = max(wall - sum(out.values()), 0.0)
  return out


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
  task = ArithTask(ArithTaskConfig(test_size=max(args.problems, 1)))
  tok = task.tokenizer
  problems = task.problem_set('test', args.problems)
  cache_len = args.max_rounds * args.max_step_tokens + int(problems.lengths.max()) + 1
  cfg = ModelConfig(vocab_size=tok.vocab_size, d_model=args.d_model, n_layers=args.layers,
                    n_heads=args.heads, n_kv_heads=args.kv_heads or args.heads,
                    head_dim=args.head_dim, d_ff=args.d_ff, max_len=cache_len,
                    dtype=args.dtype, name='bench').validate('bench')
  key = jax.random.key(args.seed)
  from ttc_jax.verify import prm   # deferred: only the benchmark needs a trained verifier
  if args.policy_workdir:
    from ttc_jax.train import load_params
    params, _ = load_params(args.policy_workdir)
  else:
    params = init_params(cfg, key)
  if args.prm_workdir:
    from ttc_jax.train import load_params
    vparams, _ = load_params(args.prm_workdir)
  else:
    vparams = prm.init_verifier_params(params, cfg)
    vparams['head']['kernel'] = jax.random.normal(jax.random.fold_in(key, 1),
                                                  (cfg.d_model, 1)) * 0.1
  scorer = PRMScorer(vparams, cfg, cache_len=cache_len)
  policy = Policy(cfg, eos_id=tok.eos_id, step_ids=tok.step_ids, n_windows=args.windows)
  print(f'device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax '
        f'{jax.__version__}; {args.problems} problems, N={args.n}, M={args.m}, '
        f'{args.max_rounds} rounds x {args.max_step_tokens} tokens, model d={args.d_model} '
        f'L={args.layers}', flush=True)

  runs = {'best_of_n_weighted': dict(), 'beam': dict(width=args.m)}
  record = {'n': args.n, 'm': args.m, 'problems': args.problems, 'device':
            jax.devices()[0].device_kind, 'methods': {}}
  for method, extra in runs.items():
    kw = dict(tokenizer=tok, key=key, max_rounds=args.max_rounds,
              max_step_tokens=args.max_step_tokens, cache_len=cache_len,
              temperature=args.temperature, batch_problems=args.batch_problems, policy=policy,
              **extra)
    kw.update({k: v for k, v in task_kwargs(task).items() if k != 'tokenizer'})
    t = time.perf_counter()
    run_search(method, params, cfg, scorer, problems, args.n, **kw)   # compiles
    compile_s = time.perf_counter() - t
    seconds: dict = {}
    t = time.perf_counter()
    df = run_search(method, params, cfg, scorer, problems, args.n, seconds=seconds, **kw)
    wall = time.perf_counter() - t
    rec = {'seconds': wall, 'first_run_seconds': compile_s,
           'problems_per_s': args.problems / wall, 'phases': _phases(seconds, wall),
           'generated_tokens': int(df['generated_tokens'].sum()),
           'verifier_tokens': int(df['verifier_tokens'].sum()),
           'mean_rounds': float(df['rounds'].mean())}
    record['methods'][method] = rec
    ph = rec['phases']
    print(f'[{method}] {wall:.2f} s ({rec["problems_per_s"]:.2f} problems/s; first run '
          f'{compile_s:.1f} s) | policy {ph["policy"]:.2f} s, PRM {ph["verifier"]:.2f} s, '
          f'select {ph["select"]:.2f} s, other {ph["other"]:.2f} s | '
          f'{rec["generated_tokens"]:,} generated tokens', flush=True)
  beam, bon = record['methods']['beam'], record['methods']['best_of_n_weighted']
  record['beam_over_bon_time'] = beam['seconds'] / bon['seconds']
  print(f'beam / best-of-N weighted wall time: {record["beam_over_bon_time"]:.2f}x',
        flush=True)
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(record, f, indent=1)
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
