"""`ttc report RUN_DIR`: report.md with PNG figures, every number read from the run's Parquet
tables and summary.json (nothing is recomputed from models here)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ttc_jax import io
from ttc_jax.report import claims as claims_lib

PAPER_BUDGETS = (4, 16, 64, 256)


def _plt():
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  return plt


def _read(path: Path) -> pd.DataFrame | None:
  return io.read_parquet(path) if path.exists() else None


def _fmt(x, digits=3):
  if x is None or (isinstance(x, float) and not math.isfinite(x)):
    return 'n/a'
  if isinstance(x, float):
    if abs(x) >= 1e5 or (0 < abs(x) < 1e-3):
      return f'{x:.3g}'
    return f'{x:.{digits}f}'
  return str(x)


def _py(x):
  return x.item() if isinstance(x, np.generic) else x


def _table(df: pd.DataFrame, cols=None, digits=3) -> str:
  cols = cols or list(df.columns)
  lines = ['| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
  for r in df.to_dict('records'):   # not iterrows: it would turn int columns into floats
    lines.append('| ' + ' | '.join(_fmt(_py(r[c]), digits) for c in cols) + ' |')
  return '\n'.join(lines)


def _save(fig, path: Path) -> str:
  path.parent.mkdir(parents=True, exist_ok=True)
  with io.atomic_path(path, '.png') as tmp:
    fig.savefig(tmp, dpi=110, bbox_inches='tight', format='png')
  _plt().close(fig)
  return f'{path.parent.name}/{path.name}'   # relative to report.md


def _colors(names) -> dict:
  """One fixed colour per strategy name (sorted), the same in every figure; tab20's
  dark/light pairs keep a method's variants (beam M=4, M=sqrtN) in one hue."""
  palette = _plt().get_cmap('tab20').colors
  return {n: palette[i % len(palette)] for i, n in enumerate(sorted(set(names)))}


def _legend_below(fig, ax, ncol: int) -> None:
  """One legend under the panels, from `ax`'s handles, clear of every bar."""
  handles, labels = ax.get_legend_handles_labels()
  fig.legend(handles, labels, loc='upper center', bbox_to_anchor=(0.5, 0.0), ncol=ncol,
             fontsize=7, frameon=False)


def _budget_axis(ax):
  ax.set_xscale('log', base=2)
  ax.set_xlabel('test-time budget (generations, log scale)')


# ---- sections ---------------------------------------------------------------------------------
def section_family(run: Path, summ: dict, figs: Path) -> list[str]:
  fam = summ.get('family')
  if not fam:
    return ['## Family', '', 'Not run.']
  df = pd.DataFrame(fam)
  # An imported family has no pretraining columns; show what the rows have.
  cols = [c for c in ('name', 'params', 'non_embedding_params', 'imported_from',
                      'pretrain_tokens', 'train_flops_analytic', 'final_loss',
                      'greedy_accuracy') if c in df]
  out = ['## The pretrained family' if 'pretrain_tokens' in df else '## The family', '',
         _table(df, cols), '']
  if 'greedy_accuracy_by_n_ops' in df:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for _, r in df.iterrows():
      by = r['greedy_accuracy_by_n_ops'] or {}
      ks = sorted(by, key=int)
      ax.plot([int(k) for k in ks], [by[k] for k in ks], marker='o',
              label=f"{r['name']} ({r['params']:,} params)")
    ax.set_xlabel('operations in the question (chain length)')
    ax.set_ylabel('greedy accuracy (fraction)')
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8)
    ax.set_title('Greedy accuracy of each member by problem length')
    out += [f'![family]({_save(fig, figs / "family_by_ops.png")})', '']
  return out


def section_bank(run: Path, summ: dict, figs: Path) -> list[str]:
  sb = summ.get('sample_bank')
  if not sb:
    return []
  rows = [{'member': m, **v} for m, v in sb['members'].items()]
  df = pd.DataFrame(rows)
  out = ['## Sample bank', '',
         f"{sb['n_samples']} samples per problem on {sb['problems']} test problems "
         '(temperature as configured).', '',
         _table(df, ['member', 'pass@1', 'samples_per_s', 'tokens_per_s', 'path']), '']
  diff = _read(run / 'analysis' / 'difficulty.parquet')
  if diff is not None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.hist(diff['pass_rate'], bins=20, color='tab:blue')
    ax.set_xlabel('per-problem pass@1 of the policy (fraction of samples correct)')
    ax.set_ylabel('problems')
    ax.set_title('Spread of difficulty (what the bins split)')
    out += [f'![difficulty]({_save(fig, figs / "difficulty_hist.png")})', '']
    t = diff.groupby('oracle_bin').agg(problems=('problem_id', 'size'),
                                       mean_pass_rate=('pass_rate', 'mean'))
    if 'prm_mean' in diff:
      t['mean_prm_score'] = diff.groupby('oracle_bin')['prm_mean'].mean()
      agree = float((diff['oracle_bin'] == diff['predicted_bin']).mean())
      out += [f'Predicted bins (mean PRM score) agree with oracle bins on {agree:.1%} of '
              'problems.', '']
    out += [_table(t.reset_index()), '']
  return out


def section_verifiers(run: Path, summ: dict, figs: Path) -> list[str]:
  out = ['## Verifiers', '']
  for kind in ('prm', 'orm'):
    v = summ.get(kind)
    if not v:
      continue
    q = v.get('heldout_quality', {})
    out.append(f"**{kind.upper()}** (policy {v.get('policy')}, best step "
               f"{v.get('train', {}).get('best_step')}): held-out step AUROC vs MC labels "
               f"{_fmt(q.get('auroc_vs_mc_hard'))}, vs the exact step oracle "
               f"{_fmt(q.get('auroc_vs_oracle'))}, final-answer AUROC "
               f"{_fmt(q.get('auroc_final_vs_correct'))}, ECE vs MC soft labels "
               f"{_fmt(q.get('ece_vs_mc_soft'))}.")
    lab = v.get('labels') or {}
    if lab.get('rollouts'):
      out.append(f"Labels: {lab['rollouts']:,} rollouts from {lab['prefixes']:,} prefixes, "
                 f"{_fmt(lab.get('rollout_tokens_per_s'), 0)} rollout tokens/s.")
    out.append('')
  prm = summ.get('prm')
  if prm and prm.get('curves'):
    c = prm['curves']
    b = np.asarray(c['budgets'])
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
    for name, style in (('pass@1', ':'), ('majority', '--')):
      for ax in axes:
        ax.plot(b, c[name], style, color='gray' if name == 'pass@1' else 'black', label=name)
    for agg, col in (('last', 'tab:blue'), ('min', 'tab:orange'), ('prod', 'tab:green')):
      axes[0].plot(b, c[f'weighted_best_of_n/{agg}'], color=col, label=f'weighted, {agg}')
      axes[1].plot(b, c[f'best_of_n/{agg}'], color=col, label=f'plain best-of-N, {agg}')
    for ax, title in zip(axes, ('PRM-weighted best-of-N by step aggregation',
                                'Plain best-of-N by step aggregation')):
      _budget_axis(ax)
      ax.set_ylabel('test accuracy (fraction)')
      ax.set_title(title, fontsize=10)
      ax.legend(fontsize=7)
    out += [f'![prm aggregation]({_save(fig, figs / "prm_aggregation.png")})', '']
    rows = []
    for i, n in enumerate(b):
      if n in (1, 2, 4, 8, 16, 32, 64, 128, 256) or i == len(b) - 1:
        rows.append({'budget': int(n), 'pass@1': c['pass@1'][i], 'majority': c['majority'][i],
                     'weighted (last)': c['weighted_best_of_n/last'][i],
                     'weighted (min)': c['weighted_best_of_n/min'][i],
                     'weighted (prod)': c['weighted_best_of_n/prod'][i],
                     'best-of-N (last)': c['best_of_n/last'][i]})
    out += ['Accuracy from the test bank (unbiased subsampling estimates):', '',
            _table(pd.DataFrame(rows)), '']
    w, maj = np.asarray(c['weighted_best_of_n/last']), np.asarray(c['majority'])
    wins = [int(n) for n, a, m in zip(b, w, maj) if a > m + 1e-9]
    q = prm.get('heldout_quality', {})
    if wins:
      out += [f'PRM-weighted best-of-N (last step) beats majority voting at budgets {wins}.', '']
    else:
      soft = prm.get('label_soft_mean')
      why = (' With a policy this weak, rollouts rarely reach the answer, so the labels carry '
             'little signal.' if soft is not None and soft < 0.2 else '')
      out += ['PRM-weighted best-of-N (last step) does not beat majority voting at any budget '
              f"on this run (the PRM's step AUROC against the exact step oracle is "
              f"{_fmt(q.get('auroc_vs_oracle'))}; mean soft label {_fmt(soft)}).{why}", '']
    out += _plain_best_of_n_note(c, prm.get('bank_texts') or {})
  return out


def _plain_best_of_n_note(curves: dict, texts: dict) -> list[str]:
  """A sentence when plain best-of-N falls below pass@1 as N grows, with the measured cause
  when the bank's text diversity is known."""
  plain, p1 = curves.get('best_of_n/last'), curves.get('pass@1')
  if not plain or not p1 or plain[-1] >= p1[-1] - 0.01:
    return []
  n = int(curves['budgets'][-1])
  out = (f'Plain best-of-N (highest last-step score) falls below pass@1 as N grows: '
         f'{_fmt(plain[-1])} at N = {n} against pass@1 {_fmt(p1[-1])}.')
  dc, di = texts.get('distinct_correct_texts'), texts.get('distinct_incorrect_texts')
  if dc is not None and di is not None:
    out += (f' A problem\'s correct samples are {_fmt(dc, 1)} distinct texts on average '
            f"({_fmt(texts.get('correct_samples'), 0)} samples), its incorrect ones "
            f"{_fmt(di, 1)} ({_fmt(texts.get('incorrect_samples'), 0)} samples): the few "
            'scores of the correct texts compete with the highest of many distinct wrong '
            'texts, so every misranking the verifier makes among them can win, and more '
            'of them are drawn as N grows. Weighted best-of-N sums the scores of each '
            'answer and does not fall.')
  return [out, '']


def section_search(run: Path, summ: dict, figs: Path) -> list[str]:
  curves = _read(run / 'analysis' / 'curves.parquet')
  strat = _read(run / 'analysis' / 'strategies.parquet')
  diff = _read(run / 'analysis' / 'difficulty.parquet')
  if curves is None or curves.empty:
    return ['## Search', '', 'Not run.']
  s = curves[curves['family'] == 'search']
  if s.empty:
    return ['## Search', '', 'Not run.']
  out = ['## Search against the PRM', '']
  plt = _plt()
  # One colour per strategy for both figures, over the strategies either one shows.
  per_problem = (strat[strat['family'] == 'search'] if strat is not None
                 else pd.DataFrame(columns=['strategy']))
  color = _colors(set(s['strategy']) | set(per_problem['strategy']))
  fig, ax = plt.subplots(figsize=(6.5, 4))
  for name, g in s.groupby('strategy'):
    g = g.sort_values('budget')
    ax.plot(g['budget'], g['accuracy'], marker='o', ms=3, label=name, color=color[name],
            ls='--' if 'sqrt' in name else '-')
  _budget_axis(ax)
  ax.set_ylabel('test accuracy (fraction)')
  ax.set_title('Search methods vs generation budget')
  ax.legend(fontsize=7, loc='center left', bbox_to_anchor=(1.01, 0.5), frameon=False)
  out += [f'![search]({_save(fig, figs / "search_methods.png")})', '']
  pivot = s.pivot_table(index='budget', columns='strategy', values='accuracy')
  out += [_table(pivot.reset_index()), '']
  if diff is not None and len(per_problem):
    bin_of = dict(zip(diff['problem_id'].astype(str), diff['oracle_bin']))
    t = per_problem.copy()
    t['bin'] = t['problem'].map(bin_of)
    budgets = [b for b in PAPER_BUDGETS if b in set(t['budget'])] or sorted(set(t['budget']))[-3:]
    names = sorted(t['strategy'].unique())
    fig, axes = plt.subplots(1, len(budgets), figsize=(4 * len(budgets), 3.5), squeeze=False,
                             constrained_layout=True)
    for ax, b in zip(axes[0], budgets):
      # Every panel has every strategy's column (NaN where it did not run at this budget), so
      # a strategy keeps its colour and slot across panels and the one legend covers all.
      g = t[t['budget'] == b].groupby(['bin', 'strategy'])['correct'].mean().unstack()
      g = g.reindex(columns=names)
      g.plot.bar(ax=ax, width=0.85, legend=False, color=[color[n] for n in names])
      ax.set_title(f'budget {b}')
      ax.set_xlabel('difficulty bin (1 easiest)')
      ax.set_ylabel('accuracy (fraction)')
    _legend_below(fig, axes[0][0], ncol=min(len(names), 6))
    out += [f'![search by bin]({_save(fig, figs / "search_by_bin.png")})', '']
  return out


def section_revisions(run: Path, summ: dict, figs: Path) -> list[str]:
  rev = summ.get('revisions')
  if not rev:
    return ['## Revisions', '', 'Not run.']
  out = ['## Sequential revisions', '']
  chain = rev.get('pass_at_1_by_position')
  if chain:
    out.append('pass@1 along the chain (position 1 = first attempt): ' +
               ', '.join(_fmt(float(x)) for x in chain) + '.')
  out.append('Of the answers that were correct and then revised, the fraction revised into '
             f"an incorrect one: {_fmt(rev.get('correct_to_incorrect'))} (paper: 0.38); "
             'incorrect revised into correct: '
             f"{_fmt(rev.get('incorrect_to_correct'))}.")
  if (rev.get('finetune') or {}).get('skipped'):
    out.append(f"Revision model not trained: {rev['finetune']['skipped']}.")
  best = rev.get('best_ratio') or {}
  if best:
    rows = [{'rule': rule, **{f'N={n}': r for n, r in per.items()}} for rule, per in best.items()]
    out += ['', 'Best sequential:parallel ratio per budget and selection rule:', '',
            _table(pd.DataFrame(rows))]
  out.append('')
  curves = _read(run / 'analysis' / 'curves.parquet')
  if curves is not None:
    r = curves[curves['family'] == 'revisions']
    if len(r):
      # The paper's view: accuracy against the sequential share of a budget, a line per
      # budget, one panel per selection rule.
      r = r.assign(seq=r['strategy'].str.split(':').str[0].astype(int),
                   rule=r['strategy'].str.split('/').str[1])
      rules = sorted(r['rule'].unique())
      plt = _plt()
      fig, axes = plt.subplots(1, len(rules), figsize=(4.4 * len(rules), 3.6), squeeze=False,
                               constrained_layout=True)
      for ax, rule in zip(axes[0], rules):
        for budget, g in r[r['rule'] == rule].groupby('budget'):
          g = g.sort_values('seq')
          ax.plot(g['seq'], g['accuracy'], marker='o', ms=3, label=f'N={budget}')
        ax.set_xscale('log', base=2)
        ax.set_xlabel('attempts per chain (N / chains, log scale)')
        ax.set_ylabel('test accuracy (fraction)')
        ax.set_title(f'selection: {rule}', fontsize=10)
        ax.legend(fontsize=7)
      out += [f'![revisions]({_save(fig, figs / "revision_ratios.png")})', '']
  return out


def section_compute_optimal(run: Path, summ: dict, figs: Path) -> list[str]:
  cv = _read(run / 'analysis' / 'compute_optimal.parquet')
  eff = _read(run / 'analysis' / 'efficiency.parquet')
  curves = _read(run / 'analysis' / 'curves.parquet')
  if cv is None or cv.empty:
    return ['## Compute-optimal scaling', '', 'Not run.']
  from ttc_jax.analysis.compute_optimal import compute_optimal_curve
  out = ['## Compute-optimal scaling', '',
         'For each difficulty bin and budget the strategy is chosen on one half of the bin '
         "and scored on the other (2-fold cross-validation); accuracy is the held-out folds'.",
         '']
  plt = _plt()
  fig, ax = plt.subplots(figsize=(6.5, 4))
  if curves is not None:
    bon = curves[(curves['family'] == 'search') & (curves['strategy'] == 'best_of_n_weighted')]
    bon = bon.sort_values('budget')
    ax.plot(bon['budget'], bon['accuracy'], 'k--', marker='o', ms=3,
            label='best-of-N weighted')
  for (family, bins), g in cv.groupby(['family', 'bins']):
    c = compute_optimal_curve(g).sort_values('budget')
    ax.plot(c['budget'], c['accuracy'], marker='o', ms=3,
            label=f'compute-optimal {family} ({bins} bins)')
  _budget_axis(ax)
  ax.set_ylabel('test accuracy (fraction)')
  ax.set_title('Compute-optimal vs best-of-N')
  ax.legend(fontsize=7)
  out += [f'![compute optimal]({_save(fig, figs / "compute_optimal.png")})', '']
  if eff is not None and len(eff):
    eff = eff.assign(budget=eff['budget'].astype(int))
    out += ['Efficiency: the best-of-N budget that matches compute-optimal accuracy at each '
            'budget (interpolated in log budget; the paper reports ~4x).', '',
            _table(eff, ['family', 'bins', 'budget', 'opt_acc', 'bon_acc_at_budget',
                         'bon_budget', 'ratio', 'status']), '']
  return out


def section_matched(run: Path, summ: dict, figs: Path) -> list[str]:
  m = _read(run / 'analysis' / 'matched.parquet')
  if m is None or m.empty:
    return ['## Test-time compute vs pretraining (FLOPs-matched)', '', 'Not run.']
  M = float(m['M'].iloc[0])
  big = m['big_member'].iloc[0]
  out = ['## Test-time compute vs pretraining (FLOPs-matched)', '',
         f'The policy spends test-time compute; the comparison model ({big}) has M = {M:.1f}x '
         'its non-embedding parameters and is evaluated by greedy pass@1. With pretraining '
         'FLOPs X = 6 N D_pretrain and inference FLOPs Y = 2 N D_inference (v1) or 4 N '
         'D_inference (ICLR, verifier counted), equal total FLOPs give the small model an '
         'inference multiplier K = M + 3 (M - 1) / R (v1) or K = M + 1.5 (M - 1) / R (ICLR), '
         'R = D_inference / D_pretrain. K is read as a budget in generations on the '
         "policy's compute-optimal curve of each bin; when K lies beyond the largest budget "
         'run, the accuracy there is n/a and the last measured budget is shown instead '
         '(a lower bound for test-time compute).', '',
         _table(m, ['convention', 'R', 'bin', 'matched_budget', 'small_acc',
                    'small_acc_at_max_budget', 'big_acc', 'winner']), '']
  plt = _plt()
  convs = list(m['convention'].unique())
  fig, axes = plt.subplots(1, len(convs), figsize=(6 * len(convs), 3.8), squeeze=False,
                           constrained_layout=True)
  for ax, conv in zip(axes[0], convs):
    g = m[m['convention'] == conv]
    bins = sorted(g['bin'].unique())
    rs = sorted(g['R'].unique())
    w = 0.8 / (len(rs) + 1)
    x = np.arange(len(bins))
    for i, r in enumerate(rs):
      gr = g[g['R'] == r].set_index('bin').reindex(bins)
      val = gr['small_acc'].where(gr['in_range'], gr['small_acc_at_max_budget'])
      beyond = not gr['in_range'].all()
      ax.bar(x + i * w, val, w, label=f'test-time, R={r}' +
             (' (hatched: K beyond the largest budget run; shown at it)' if beyond else ''),
             hatch='//' if beyond else None)
    big_acc = g.groupby('bin')['big_acc'].first().reindex(bins)
    ax.bar(x + len(rs) * w, big_acc, w, color='black', label=f'{big} greedy')
    ax.set_xticks(x + 0.4 - w / 2, [str(b) for b in bins])
    ax.set_xlabel('difficulty bin (1 easiest)')
    ax.set_ylabel('accuracy (fraction)')
    ax.set_title(f'FLOPs-matched ({conv})')
    ax.legend(fontsize=6, loc='upper center', bbox_to_anchor=(0.5, -0.16), ncol=2,
              frameon=False)
  out += [f'![matched]({_save(fig, figs / "flops_matched.png")})', '']
  return out


def section_times(summ: dict) -> list[str]:
  t = summ.get('stage_seconds')
  if not t:
    return []
  df = pd.DataFrame({'stage': list(t), 'seconds': list(t.values())})
  return ['## Stage times', '', _table(df, digits=1), '',
          f'Total: {sum(t.values()):.0f} s.', '']


def write_report(run_dir: str | Path) -> Path:
  run = Path(run_dir)
  summ = io.read_json(run / 'summary.json', {})
  if not summ:
    raise FileNotFoundError(f'{run} has no summary.json: run `ttc run` first.')
  figs = run / 'figures'
  cfg = io.read_json(run / 'config.json', {})
  lines = [f"# ttc_jax report: {cfg.get('name', run.name)}", '',
           'Snell et al. 2024 reproduced on this run\'s task; every number below is read '
           'from the Parquet tables and summary.json in this run directory.', '']
  for section in (section_family, section_bank, section_verifiers, section_search,
                  section_revisions, section_compute_optimal, section_matched):
    lines += section(run, summ, figs)
  claims = claims_lib.evaluate(run, summ)
  if claims:
    lines += ['## The paper\'s claims on this run', '',
              _table(pd.DataFrame(claims), ['claim', 'outcome', 'evidence']), '']
  lines += section_times(summ)
  path = run / 'report.md'
  with io.atomic_path(path) as tmp:
    tmp.write_text('\n'.join(lines) + '\n')
  io.write_json(run / 'claims.json', claims)
  return path
