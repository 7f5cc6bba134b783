"""The whole study end to end on the tiny quickstart variant (slow: about two minutes)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_tiny_study_runs_end_to_end_and_resumes(tmp_path):
  cmd = [sys.executable, '-m', 'ttc_jax.cli', 'run', 'configs/quickstart.py:tiny',
         f'--config.workdir={tmp_path}']
  subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
  run = tmp_path / 'quickstart-tiny'
  summary = json.loads((run / 'summary.json').read_text())
  for stage in ('family', 'sample_bank', 'prm', 'orm', 'search', 'revisions', 'analysis'):
    assert stage in summary, stage
  assert [m['name'] for m in summary['family']] == ['xs', 's', 'm']
  report = (run / 'report.md').read_text()
  assert "The paper's claims on this run" in report
  for fig in ('family_by_ops', 'prm_aggregation', 'search_methods', 'compute_optimal',
              'flops_matched'):
    assert (run / 'figures' / f'{fig}.png').stat().st_size > 1000, fig
  # A rerun skips every stage; a changed search knob reruns search and what follows only.
  out = subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, text=True).stdout
  assert 'running' not in out and out.count('skipped') == 13
  out = subprocess.run(cmd + ['--config.search.max_rounds=7'], check=True, cwd=ROOT,
                       capture_output=True, text=True).stdout
  redone = {line.split(']')[0][1:] for line in out.splitlines() if 'redoing' in line}
  assert redone == {'search', 'analysis', 'report'}
  listing = subprocess.run([sys.executable, '-m', 'ttc_jax.cli', 'stages', str(run)],
                           check=True, cwd=ROOT, capture_output=True, text=True).stdout
  assert listing.count(' done ') == 13
