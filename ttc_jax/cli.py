"""`ttc`: the command line.

  ttc run CONFIG.py[:ARG] [--config.key=value ...] [--stages a,b] [--run-dir DIR]
  ttc stages RUN_DIR
  ttc report RUN_DIR
  ttc bench train|sampling|search [ARGS]
  ttc import-hf SRC_DIR OUT_DIR [--param-dtype D] [--dtype D] [--max-len N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ttc_jax.model.config import ConfigError


def _split_overrides(argv: list[str]) -> tuple[list[str], dict[str, str]]:
  rest, overrides = [], {}
  it = iter(argv)
  for a in it:
    if a.startswith('--config.'):
      key, eq, value = a[len('--config.'):].partition('=')
      if not eq:
        value = next(it, None)
        if value is None:
          raise ConfigError(f'--config.{key} needs a value (--config.{key}=VALUE).')
      overrides[key] = value
    else:
      rest.append(a)
  return rest, overrides


def _load_run(run_dir: str):
  from ttc_jax import configlib, io, pipeline
  from ttc_jax.experiment import ExperimentConfig
  plain = io.read_json(Path(run_dir) / 'config.json')
  if plain is None:
    raise ConfigError(f'{run_dir} has no config.json: is it a run directory made by ttc run?')
  cfg = configlib.to_dataclass(ExperimentConfig, plain)
  return pipeline.make_run(cfg, plain, run_dir)


def cmd_run(argv: list[str]) -> int:
  from ttc_jax import configlib, pipeline
  rest, overrides = _split_overrides(argv)
  ap = argparse.ArgumentParser(prog='ttc run')
  ap.add_argument('config', help='configs/x.py[:arg]')
  ap.add_argument('--stages', default='', help='comma-separated stages (and their deps)')
  ap.add_argument('--run-dir', default=None, help='default: <workdir>/<name>')
  ap.add_argument('--distributed', action='store_true',
                  help='call jax.distributed.initialize() first (multi-host: a TPU pod '
                  'slice or several GPU hosts; run the same command on every host)')
  args = ap.parse_args(rest)
  if args.distributed:
    import jax
    jax.distributed.initialize()
  cfg, plain = configlib.load(args.config, overrides)
  run = pipeline.make_run(cfg, plain, args.run_dir)
  print(f'run directory: {run.dir}')
  run.run([s for s in args.stages.split(',') if s] or None)
  print(f'summary: {run.summary_path}')
  return 0


def cmd_stages(argv: list[str]) -> int:
  ap = argparse.ArgumentParser(prog='ttc stages')
  ap.add_argument('run_dir')
  args = ap.parse_args(argv)
  run = _load_run(args.run_dir)
  for name, state in run.states().items():
    rec = run.record(name) or {}
    secs = f"{rec['seconds']:.1f} s" if 'seconds' in rec else ''
    print(f'{name:24s} {state:8s} {secs}')
  return 0


def cmd_report(argv: list[str]) -> int:
  from ttc_jax.report import write_report
  ap = argparse.ArgumentParser(prog='ttc report')
  ap.add_argument('run_dir')
  args = ap.parse_args(argv)
  print(write_report(args.run_dir))
  return 0


def cmd_bench(argv: list[str]) -> int:
  if not argv or argv[0] not in ('train', 'sampling', 'search'):
    print('usage: ttc bench train|sampling|search [ARGS]', file=sys.stderr)
    return 2
  if argv[0] == 'train':
    from ttc_jax.train import bench
  elif argv[0] == 'sampling':
    from ttc_jax.sample import bench
  else:
    from ttc_jax.search import bench
  return bench.main(argv[1:]) or 0


def cmd_import_hf(argv: list[str]) -> int:
  from ttc_jax.model.hf_import import HFImportError, import_hf
  ap = argparse.ArgumentParser(
      prog='ttc import-hf', description='Import a local Hugging Face checkpoint directory '
      '(Llama-3, Qwen2/2.5, Gemma, Gemma-2; safetensors) into a train workdir that '
      'ttc_jax.model.hf_import.load_imported and ttc_jax.train.loop.load_params read.')
  ap.add_argument('src_dir')
  ap.add_argument('out_dir')
  ap.add_argument('--param-dtype', choices=('float32', 'bfloat16', 'float16'), default=None,
                  help="stored parameter dtype (default: the checkpoint's)")
  ap.add_argument('--dtype', choices=('float32', 'bfloat16', 'float16'), default=None,
                  help="compute dtype recorded in the config (default: the checkpoint's)")
  ap.add_argument('--max-len', type=int, default=None,
                  help='KV-cache length in tokens (default: min(max_position_embeddings, 4096))')
  args = ap.parse_args(argv)
  try:
    cfg = import_hf(args.src_dir, args.out_dir, param_dtype=args.param_dtype,
                    dtype=args.dtype, max_len=args.max_len)
  except HFImportError as e:
    print(f'import-hf: {e}', file=sys.stderr)
    return 1
  counts = cfg.param_counts()
  print(f'imported {args.src_dir} -> {args.out_dir}: {cfg.n_layers} layers, d_model '
        f'{cfg.d_model}, {counts["total"] / 1e6:.1f}M parameters ({cfg.param_dtype})')
  return 0


COMMANDS = {'run': cmd_run, 'stages': cmd_stages, 'report': cmd_report, 'bench': cmd_bench,
            'import-hf': cmd_import_hf}


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if not argv or argv[0] not in COMMANDS:
    print(__doc__.strip(), file=sys.stderr)
    return 2
  try:
    return COMMANDS[argv[0]](argv[1:])
  except ConfigError as e:
    print(f'config error: {e}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  sys.exit(main())
