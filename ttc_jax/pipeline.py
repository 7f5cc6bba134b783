"""The study's stage graph: which stages exist, what each reads, and what each writes.

Stage functions are the only places with side effects (files, logs, progress bars); they call
the pure, compiled code of the layers below.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path

import jax
import numpy as np

from ttc_jax.experiment import ExperimentConfig, build_task, policy_member
from ttc_jax.model import ConfigError, ModelConfig, init_params
from ttc_jax.sharding import make_mesh
from ttc_jax.study import Run, Stage
from ttc_jax import io
from ttc_jax import train as train_lib
from ttc_jax.train import pretrain as pretrain_lib


def _asdict(x):
  return dataclasses.asdict(x)


# Knobs that change speed or logging but not what a stage produces: kept out of stage
# fingerprints, so switching attention kernels or logging cadence reruns nothing.
_NOT_OUTPUTS = {'attention_impl', 'remat', 'scan_unroll', 'decode_attention', 'decode_unroll',
                'decode_kernel', 'decode_step_kernels', 'unroll_layers', 'log_every',
                'peak_flops', 'eval_batch', 'name'}


def _outputs_only(d: dict) -> dict:
  return {k: v for k, v in d.items() if k not in _NOT_OUTPUTS}


def member_configs(cfg: ExperimentConfig) -> dict[str, ModelConfig]:
  return {m.name: m for m in cfg.family.models()}


def stage_seed(cfg: ExperimentConfig, stage: str) -> int:
  """A per-stage seed derived from the config seed and the stage's name."""
  return int(np.random.default_rng([cfg.seed, *stage.encode()]).integers(2**31 - 1))


# ---- pretraining ----------------------------------------------------------------------------
def _pretrain_inputs(member: str, index: int):
  def inputs(cfg: ExperimentConfig) -> dict:
    if cfg.family.import_from:
      return {'import_from': str(Path(cfg.family.import_from).resolve()),
              'model': _outputs_only(_asdict(member_configs(cfg)[member]))}
    if cfg.family.from_run:
      return {'from_run': str(Path(cfg.family.from_run).resolve()), 'member': member}
    p = cfg.pretrain
    return {'model': _outputs_only(_asdict(member_configs(cfg)[member])),
            'task': _asdict(cfg.task),
            'pretrain': _outputs_only({**_asdict(p), 'steps': p.steps_for(index)}),
            'seed': cfg.seed}
  return inputs


def member_workdir(run: Run, member: str) -> Path:
  """Where member `member`'s pretraining checkpoints live (possibly in another run)."""
  if run.cfg.family.from_run:
    other = Path(run.cfg.family.from_run) / f'pretrain_{member}'
    if not (other / 'ckpt').exists():
      raise FileNotFoundError(
          f'family.from_run={run.cfg.family.from_run!r} has no checkpoint for member '
          f'{member!r} (looked in {other / "ckpt"}); run its pretraining first or fix the path.')
    return other
  return run.stage_dir(f'pretrain_{member}')


def load_member(run: Run, member: str):
  """(ModelConfig, params) of a family member (pretrained here, in another run, or
  imported from a Hugging Face checkpoint)."""
  mcfg = member_configs(run.cfg)[member]
  if run.cfg.family.import_from:
    from ttc_jax.model.hf_import import load_imported
    _, params, _ = load_imported(run.cfg.family.import_from, dtype=mcfg.dtype,
                                 max_len=mcfg.max_len)
    return mcfg, params
  abstract = jax.eval_shape(lambda: init_params(mcfg, jax.random.key(0)))
  params, _ = train_lib.load_params(member_workdir(run, member), abstract)
  return mcfg, params


def _pretrain_run(member: str, index: int):
  def run_stage(run: Run, stage: Stage) -> dict:
    cfg = run.cfg
    mcfg = member_configs(cfg)[member]
    if cfg.family.import_from:   # nothing to pretrain: record what was imported
      counts = mcfg.param_counts()
      return {'member': member, 'imported_from': cfg.family.import_from,
              'params': counts['total'], 'non_embedding_params': counts['non_embedding']}
    if cfg.family.from_run:
      _, meta = train_lib.load_params(member_workdir(run, member))
      return {'from_run': cfg.family.from_run, **meta}
    task = build_task(cfg)
    p = cfg.pretrain
    data = _pretrain_data(cfg.task, p.seq_len, p.loss_on_prompt, p.pack)
    seed = stage_seed(cfg, stage.name)
    batch_fn = pretrain_lib.epoch_batches(data, p.batch_size, seed)
    steps = p.steps_for(index)
    # Same parameters either way; only the train step's layer loop is unrolled.
    train_cfg = dataclasses.replace(mcfg, scan_unroll=mcfg.n_layers) if p.unroll_layers else mcfg
    counts = mcfg.param_counts()
    result = train_lib.train(
        loss_fn=lambda params, b, rng: pretrain_lib.lm_loss(params, b, rng, config=train_cfg,
                                                            packed=p.pack),
        init_fn=lambda: init_params(mcfg, jax.random.key(seed)),
        batch_fn=batch_fn, cfg=p, total_steps=steps, mesh=make_mesh(cfg.mesh),
        workdir=run.stage_dir(stage.name), tokens_per_step=p.batch_size * p.seq_len,
        flops_per_token=mcfg.train_flops_per_token(p.seq_len), seed=seed,
        metadata={'member': member, 'params': counts['total'],
                  'non_embedding_params': counts['non_embedding']},
        fsdp=cfg.mesh.fsdp, desc=f'pretrain {member}', peak_flops=p.peak_flops or None)
    acc = evaluate_greedy(run, mcfg, result.params, task,
                          save_to=run.stage_dir(stage.name) / GREEDY_TABLE)
    final_loss = result.metrics[-1]['loss'] if result.metrics else float('nan')
    return {'member': member, 'params': counts['total'],
            'non_embedding_params': counts['non_embedding'],
            'pretrain_tokens': result.metadata['tokens_seen'],
            'train_flops_6nd': result.metadata['train_flops_6nd'],
            'train_flops_analytic': result.metadata['train_flops_analytic'],
            'final_loss': final_loss, **acc}
  return run_stage


def greedy_table(mcfg: ModelConfig, params, task, problems, batch_size: int) -> 'pd.DataFrame':
  """Greedy (temperature 0) solutions of `problems`: problem_id, text, correct, tokens."""
  import pandas as pd
  from ttc_jax.sample import Sampler
  tok = task.tokenizer
  sampler = Sampler(mcfg, eos_id=tok.eos_id, step_ids=tok.step_ids)
  texts, n_gen = [], []
  for i in range(0, len(problems), batch_size):
    chunk = problems.take(np.arange(i, min(i + batch_size, len(problems))))
    state = sampler.start(params, chunk.prompts, chunk.lengths, jax.random.key(0),
                          cache_len=min(mcfg.max_len, task.max_text_len + 1),
                          temperature=0.0)
    state = sampler.generate(params, state)
    toks, lens, plens = jax.device_get((state.tokens_BxS, state.lengths_B,
                                        state.prompt_lengths_B))
    texts += [tok.decode(t[p:l]) for t, p, l in zip(toks, plens, lens)]
    n_gen += (lens - plens).tolist()
  return pd.DataFrame({'problem_id': problems.ids.astype(str), 'text': texts,
                       'correct': [task.is_correct(t, a) for t, a in zip(texts, problems.answers)],
                       'n_prompt_tokens': problems.lengths, 'n_generated_tokens': n_gen})


@functools.lru_cache(maxsize=2)
def _pretrain_data(task_cfg, seq_len: int, loss_on_prompt: bool, pack: bool) -> dict:
  """Packed training rows of the task, built once per process: every member shares them
  (generating and encoding 200K problems took ~15 s per member)."""
  task = task_cfg.build()
  problems = task.problems('train')
  return pretrain_lib.encode_examples([q.prompt for q in problems],
                                      [q.solution for q in problems], task.tokenizer,
                                      seq_len, loss_on_prompt, pack)


# A pretraining stage's greedy solutions of its evaluation problems; the greedy stage reuses
# them when it needs exactly those problems (saves one decode per member).
GREEDY_TABLE = 'greedy_test.parquet'


def evaluate_greedy(run: Run, mcfg: ModelConfig, params, task, save_to=None) -> dict:
  """Greedy accuracy on held-out test problems, overall and by number of operations.
  save_to: where to write the per-problem table (`greedy_table`'s columns), if given."""
  problems = task.problem_set('test', run.cfg.pretrain.eval_problems)
  table = greedy_table(mcfg, params, task, problems, run.cfg.pretrain.eval_batch)
  if save_to is not None:
    io.write_parquet(save_to, table)
  correct = table['correct'].to_numpy(bool)
  out = {'greedy_accuracy': float(correct.mean()), 'eval_problems': len(problems)}
  if 'n_ops' in problems.meta:
    ops = np.asarray(problems.meta['n_ops'])
    out['greedy_accuracy_by_n_ops'] = {int(k): float(correct[ops == k].mean())
                                       for k in np.unique(ops)}
  return out


def _greedy_run(run: Run, stage: Stage) -> dict:
  """Every member's greedy solution of the bank's test problems (per problem, for bins)."""
  import pandas as pd
  cfg = run.cfg
  task = build_task(cfg)
  problems = test_problems(cfg, task, cfg.sample_bank.problems)
  frames, out = [], {}
  want_ids = problems.ids.astype(str).tolist()
  for m in cfg.family.members:
    saved = run.stage_dir(f'pretrain_{m}') / GREEDY_TABLE
    df = io.read_parquet(saved) if saved.exists() else None
    if df is None or df['problem_id'].astype(str).tolist() != want_ids:
      # Not pretrained in this run, or evaluated on other problems: decode here.
      mcfg, params = load_member(run, m)
      df = greedy_table(mcfg, params, task, problems, cfg.pretrain.eval_batch)
    frames.append(df.assign(member=m))
    out[m] = float(df['correct'].mean())
  io.write_parquet(run.stage_dir(stage.name) / 'greedy.parquet', pd.concat(frames))
  return {'greedy_accuracy': out, 'problems': len(problems)}


def _family_run(run: Run, stage: Stage) -> dict:
  summ = run.summary()
  rows = []
  for m in run.cfg.family.members:
    rows.append({'name': m, **summ.get(f'pretrain_{m}', {})})
  rows.sort(key=lambda r: r.get('params', 0))
  return rows


# ---- the sample bank ------------------------------------------------------------------------
def bank_members(cfg: ExperimentConfig) -> list[str]:
  return list(cfg.sample_bank.members or cfg.family.members)


def bank_path(run: Run, member: str) -> Path:
  return run.stage_dir('sample_bank') / f'bank_{member}.parquet'


def test_problems(cfg: ExperimentConfig, task, n: int = 0):
  """The first n test problems (all when n is 0): every evaluation uses this one prefix."""
  return task.problem_set('test', n or None)


def _bank_run(run: Run, stage: Stage) -> dict:
  from ttc_jax.sample.bank import sample_bank, write_bank
  cfg, b = run.cfg, run.cfg.sample_bank
  task = build_task(cfg)
  problems = test_problems(cfg, task, b.problems)
  max_new = b.max_new_tokens or task.max_text_len
  out = {'n_samples': b.n_samples, 'problems': len(problems), 'members': {}}
  for m in bank_members(cfg):
    path = bank_path(run, m)
    stats_path = path.with_suffix('.json')
    if path.exists() and stats_path.exists():   # finished earlier: resume after it
      out['members'][m] = io.read_json(stats_path)
      continue
    mcfg, params = load_member(run, m)
    df, stats = sample_bank(params, mcfg, problems, b.n_samples,
                            jax.random.key(stage_seed(cfg, f'sample_bank/{m}')),
                            task.tokenizer, task.is_correct, task.parse_answer,
                            max_new_tokens=max_new, temperature=b.temperature, top_p=b.top_p,
                            top_k=b.top_k, batch_size=b.batch_size, mesh=make_mesh(cfg.mesh))
    write_bank(df, path)
    figures = {'path': str(path.relative_to(run.dir)), 'pass@1': float(df['correct'].mean()),
               'samples_per_s': stats['samples_per_s'], 'tokens_per_s': stats['tokens_per_s'],
               'seconds': stats['seconds'], 'samples': stats['samples']}
    io.write_json(stats_path, figures)
    out['members'][m] = figures
  return out


# ---- verifiers --------------------------------------------------------------------------------
def _train_bank_run(run: Run, stage: Stage) -> dict:
  """K samples per training problem from the policy (what the PRM labels, the ORM learns)."""
  from ttc_jax.sample.bank import sample_bank, write_bank
  cfg, b = run.cfg, run.cfg.train_bank
  task = build_task(cfg)
  problems = task.problem_set('train', b.problems or None)
  member = policy_member(cfg)
  mcfg, params = load_member(run, member)
  df, stats = sample_bank(params, mcfg, problems, b.n_samples,
                          jax.random.key(stage_seed(cfg, stage.name)), task.tokenizer,
                          task.is_correct, task.parse_answer,
                          max_new_tokens=task.max_text_len, temperature=b.temperature,
                          batch_size=b.batch_size, mesh=make_mesh(cfg.mesh))
  write_bank(df, run.stage_dir(stage.name) / 'bank.parquet')
  return {'policy': member, 'problems': len(problems), 'pass@1': float(df['correct'].mean()),
          'samples_per_s': stats['samples_per_s']}


def _verifier_run(kind: str):
  def run_stage(run: Run, stage: Stage) -> dict:
    from ttc_jax.verify.train_verifier import run_prm_pipeline
    cfg = run.cfg
    vcfg = getattr(cfg, kind)
    member = vcfg.policy or policy_member(cfg)
    task = build_task(cfg)
    mcfg, params = load_member(run, member)
    train_bank = io.read_parquet(run.stage_dir('train_bank') / 'bank.parquet')
    test_bank = io.read_parquet(bank_path(run, member))
    problems = task.problem_set('train', cfg.train_bank.problems or None)
    test = test_problems(cfg, task, cfg.sample_bank.problems)
    workdir = run.stage_dir(stage.name)
    summary = run_prm_pipeline(
        params, mcfg, task, train_bank, vcfg, workdir, make_mesh(cfg.mesh),
        jax.random.key(stage_seed(cfg, stage.name)), problems=problems,
        max_new_tokens=task.max_text_len,
        policy_checkpoint=str(member_workdir(run, member)), eval_bank_df=test_bank,
        eval_problems=test)
    # run_prm_pipeline wrote the test bank's step scores (predicted difficulty, the report).
    return {**summary, 'bank_scores': str((workdir / 'bank_scores.parquet').relative_to(run.dir))}
  return run_stage


# ---- search -----------------------------------------------------------------------------------
def _search_run(run: Run, stage: Stage) -> dict:
  """methods x budgets x widths / k on the test problems; one Parquet part per combination
  (a rerun skips finished parts), then one results table."""
  import pandas as pd
  from ttc_jax.search import PRMScorer, run_search, task_kwargs
  from ttc_jax.search import steps as steps_lib
  from ttc_jax.verify.train_verifier import load_verifier
  cfg, s = run.cfg, run.cfg.search
  task = build_task(cfg)
  member = policy_member(cfg)
  mcfg, params = load_member(run, member)
  vparams, _ = load_verifier(s.prm_from or run.stage_dir('prm'), mcfg, task.tokenizer)
  problems = test_problems(cfg, task, s.problems or cfg.sample_bank.problems)
  # The cache holds the prompt plus every round's step: no longer (attention reads it all).
  cache_len = int(problems.lengths.max()) + s.max_rounds * s.max_step_tokens
  if cache_len > mcfg.max_len:
    raise ConfigError(f'search: the longest prompt + search.max_rounds x '
                      f'search.max_step_tokens = {cache_len} tokens exceeds family.max_len='
                      f'{mcfg.max_len}; lower max_rounds / max_step_tokens or raise max_len.')
  scorer = PRMScorer(vparams, mcfg, cache_len)
  policy = steps_lib.Policy(mcfg, eos_id=task.tokenizer.eos_id,
                            step_ids=task.tokenizer.step_ids)
  parts = run.stage_dir(stage.name) / 'parts'
  key = jax.random.key(stage_seed(cfg, stage.name))
  seconds: dict = {}
  wall: dict = {}
  frames = []
  from tqdm.auto import tqdm
  for method, budget, width, k in tqdm(s.grid(), desc='search', unit='run'):
    name = f'{method}-N{budget}' + (f'-M{width}' if width else '') + (f'-k{k}' if k else '')
    path, timing = parts / f'{name}.parquet', parts / f'{name}.json'
    if not path.exists():
      t0 = time.perf_counter()
      df = run_search(method, params, mcfg, scorer, problems, budget, key=key,
                      width=int(width) if width and width.isdigit() else width, k=k,
                      max_rounds=s.max_rounds, max_step_tokens=s.max_step_tokens,
                      cache_len=cache_len, temperature=s.temperature,
                      batch_problems=s.batch_problems, max_rows=s.max_rows, policy=policy,
                      seconds=seconds,
                      **task_kwargs(task))
      # Wall time of this part, compiles included (the first part of a shape pays them).
      wall[name] = round(time.perf_counter() - t0, 2)
      io.write_parquet(path, df)
      io.write_json(timing, {'seconds': wall[name]})
    elif timing.exists():   # finished in an earlier call
      wall[name] = io.read_json(timing)['seconds']
    # Read back even when just written: fresh and resumed parts get the same dtypes.
    frames.append(io.read_parquet(path))
  results = pd.concat(frames, ignore_index=True)
  io.write_parquet(run.stage_dir(stage.name) / 'results.parquet', results)
  acc = results.assign(width=results['m']).groupby(['method', 'm', 'k', 'budget'])['correct']
  table = {f'{meth}' + (f'/M={m}' if m else '') + (f'/k={k}' if k else ''): {}
           for (meth, m, k, _) in acc.mean().index}
  for (meth, m, k, b), v in acc.mean().items():
    table[f'{meth}' + (f'/M={m}' if m else '') + (f'/k={k}' if k else '')][int(b)] = float(v)
  return {'policy': member, 'problems': len(problems), 'accuracy': table,
          'seconds_by_phase': {k: round(v, 2) for k, v in seconds.items()},
          'seconds_by_run': wall}


# ---- revisions --------------------------------------------------------------------------------
def _revisions_run(run: Run, stage: Stage) -> dict:
  import pandas as pd
  from ttc_jax.revise import infer, select
  from ttc_jax.revise.stage import run_revisions
  cfg = run.cfg
  rcfg = cfg.revisions
  task = build_task(cfg)
  member = policy_member(cfg)
  mcfg, params = load_member(run, member)
  d = run.stage_dir(stage.name)
  metrics = run_revisions(params, mcfg, task, rcfg, d, make_mesh(cfg.mesh),
                          jax.random.key(stage_seed(cfg, stage.name)))
  # Per-problem correctness of every (budget, ratio, rule): the analysis' strategy rows.
  attempts = io.read_parquet(d / 'attempts.parquet')
  scores = io.read_parquet(d / 'scores.parquet')
  ids = [p.id for p in task.problems(rcfg.eval_split, rcfg.eval_problems)]
  cols = {c: scores[c].to_numpy(np.float64) for c in ('aware_score', 'plain_score')
          if c in scores}
  arrays = select.to_arrays(attempts, ids, rcfg.max_budget, cols)
  rules = [r for r in select.RULES if r != 'oracle' and
           (r == 'majority' or {'hierarchical': 'aware_score',
                                'orm_best_of_n': 'plain_score'}[r] in cols)]
  frames = []
  for budget in infer.budgets(rcfg.max_budget):
    for seq, par in infer.ratios(budget):
      for rule in rules:
        frames.append(pd.DataFrame({
            'problem_id': ids, 'budget': budget, 'ratio': f'{seq}:{par}', 'selection': rule,
            'correct': select.pick_correct(arrays, rule, budget, seq)}))
  io.write_parquet(d / 'results.parquet', pd.concat(frames, ignore_index=True))
  return {'policy': member, **metrics}


# ---- analysis ---------------------------------------------------------------------------------
def _analysis_run(run: Run, stage: Stage) -> dict:
  from ttc_jax.analysis import tables
  cfg, a = run.cfg, run.cfg.analysis
  d = run.stage_dir(stage.name)
  policy = policy_member(cfg)
  bank = io.read_parquet(bank_path(run, policy))
  scores_path = run.stage_dir('prm') / 'bank_scores.parquet'
  scores = io.read_parquet(scores_path) if scores_path.exists() else None
  difficulty = tables.difficulty_table(bank, scores, a.n_bins)
  io.write_parquet(d / 'difficulty.parquet', difficulty)
  search_path = run.stage_dir('search') / 'results.parquet'
  rev_path = run.stage_dir('revisions') / 'results.parquet'
  strategies = tables.strategy_table(
      io.read_parquet(search_path) if search_path.exists() else None,
      io.read_parquet(rev_path) if rev_path.exists() else None)
  io.write_parquet(d / 'strategies.parquet', strategies)
  out = {'policy': policy, 'bins': a.n_bins,
         'pass_rate_by_oracle_bin': difficulty.groupby('oracle_bin')['pass_rate'].mean()
         .round(4).to_dict()}
  if strategies.empty:
    return out
  cv = tables.compute_optimal(strategies, difficulty, seed=stage_seed(cfg, 'cv'))
  io.write_parquet(d / 'compute_optimal.parquet', cv)
  io.write_parquet(d / 'curves.parquet', tables.curves(strategies))
  eff = tables.efficiency(strategies, cv)
  io.write_parquet(d / 'efficiency.parquet', eff)
  members = member_configs(cfg)
  big = a.big_member or list(members)[-1]
  greedy = io.read_parquet(run.stage_dir('greedy') / 'greedy.parquet')
  ratio = (members[big].param_counts()['non_embedding'] /
           members[policy].param_counts()['non_embedding'])
  matched = tables.matched(cv, greedy, difficulty, m=ratio, big_member=big)
  io.write_parquet(d / 'matched.parquet', matched)
  out['efficiency'] = eff.to_dict('records') if len(eff) else []
  out['matched'] = matched.to_dict('records') if len(matched) else []
  out['big_member'], out['M'] = big, ratio
  return out


def build_stages(cfg: ExperimentConfig) -> list[Stage]:
  stages = []
  members = list(member_configs(cfg))
  for i, m in enumerate(members):
    stages.append(Stage(f'pretrain_{m}', (), _pretrain_inputs(m, i), _pretrain_run(m, i)))
  stages.append(Stage('family', tuple(f'pretrain_{m}' for m in members),
                      lambda c: {'members': list(c.family.members)}, _family_run))
  stages.append(Stage('sample_bank', tuple(f'pretrain_{m}' for m in bank_members(cfg)),
                      lambda c: {'bank': _asdict(c.sample_bank), 'task': _asdict(c.task),
                                 'seed': c.seed}, _bank_run))
  pol = policy_member(cfg)
  stages.append(Stage('train_bank', (f'pretrain_{pol}',),
                      lambda c: {'bank': _asdict(c.train_bank), 'task': _asdict(c.task),
                                 'policy': policy_member(c), 'seed': c.seed}, _train_bank_run))
  for kind in ('prm', 'orm'):
    member = getattr(cfg, kind).policy or pol
    stages.append(Stage(kind, ('train_bank', 'sample_bank', f'pretrain_{member}'),
                        lambda c, kind=kind: {kind: _asdict(getattr(c, kind)),
                                              'policy': policy_member(c)},
                        _verifier_run(kind)))
  stages.append(Stage('search', (f'pretrain_{pol}', 'prm'),
                      lambda c: {'search': _asdict(c.search), 'task': _asdict(c.task),
                                 'policy': policy_member(c), 'problems': c.sample_bank.problems,
                                 'seed': c.seed}, _search_run))
  stages.append(Stage('revisions', (f'pretrain_{pol}',),
                      lambda c: {'revisions': _asdict(c.revisions), 'task': _asdict(c.task),
                                 'policy': policy_member(c), 'seed': c.seed},
                      _revisions_run))
  stages.append(Stage('greedy', tuple(f'pretrain_{m}' for m in cfg.family.members),
                      lambda c: {'bank': _asdict(c.sample_bank), 'task': _asdict(c.task)},
                      _greedy_run))
  analysis_deps = ('sample_bank', 'prm', 'greedy') + tuple(
      s.name for s in stages if s.name in ('search', 'revisions'))
  stages.append(Stage('analysis', analysis_deps,
                      lambda c: {'analysis': _asdict(c.analysis), 'policy': policy_member(c)},
                      _analysis_run))
  stages.append(Stage('report', ('analysis', 'family', 'orm'), lambda c: {},
                      _report_run, summary_key=None))
  return stages


def _report_run(run: Run, stage: Stage) -> dict:
  from ttc_jax.report import write_report
  path = write_report(run.dir)
  return {'path': str(path.relative_to(run.dir))}


def make_run(cfg: ExperimentConfig, plain: dict, run_dir=None) -> Run:
  return Run(cfg, plain, build_stages(cfg), run_dir)
