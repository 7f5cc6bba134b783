"""`ttc bench sampling` (ttc_jax/sample/bench.py) on CPU: the record it writes, variants read
from their specs, and a variant that fails to compile recorded while the others still run."""

import json

import pytest

from ttc_jax.sample import bench

TINY = ['--d-model', '32', '--layers', '1', '--heads', '2', '--head-dim', '16', '--d-ff', '64',
        '--vocab', '16', '--batch', '4', '--prompt-len', '4', '--new-tokens', '3', '--reps',
        '1', '--dtype', 'float32']


def test_parse_variant():
  assert bench.parse_variant('pallas:1:s4:k32x2x3:exla:xnocb') == {
      'decode_attention': 'pallas', 'decode_unroll': True, 'n_windows': 0,
      'steps_per_loop': 4, 'decode_kernel': '32:2:3', 'decode_step_kernels': 'xla',
      'xla_options': {'xla_gpu_enable_command_buffer': ''}}
  assert bench.parse_variant('reduce:0:w4')['n_windows'] == 4
  assert bench.parse_variant('auto:1')['decode_step_kernels'] == 'auto'
  with pytest.raises(ValueError, match="'etriton'"):
    bench.parse_variant('auto:1:etriton')
  with pytest.raises(ValueError, match="'q7'"):
    bench.parse_variant('auto:1:q7')
  with pytest.raises(ValueError, match="'xnone'"):
    bench.parse_variant('auto:1:xnone')


def test_records_each_variant_and_one_that_fails(tmp_path, monkeypatch):
  # The roofline's two ceilings are measured on large arrays: constants here.
  monkeypatch.setattr(bench, 'measure_bandwidth', lambda: 1e11)
  monkeypatch.setattr(bench, 'measure_matmul_rate', lambda: 1e12)
  real = bench.bench_jax

  def rejects_exhaustive_tiling(cfg, *args):
    if 'xla_gpu_exhaustive_tiling_search' in (args[-1] or {}):
      raise RuntimeError('No such compile option')
    return real(cfg, *args)

  monkeypatch.setattr(bench, 'bench_jax', rejects_exhaustive_tiling)
  out = tmp_path / 'bench.json'
  result = bench.main(TINY + ['--variants', 'reduce:1,reduce:1:xexh,einsum:0',
                              '--out', str(out)])
  ok, failed, scanned = result['runs']
  assert failed == {'batch': 4, 'variant': 'reduce:1:xexh',
                    'error': 'RuntimeError: No such compile option'}
  for run, unroll in ((ok, True), (scanned, False)):
    assert run['decode_unroll'] is unroll and run['decode_tokens_per_s'] > 0
    assert run['decode_tokens_per_s'] == pytest.approx(4 * 3 / run['decode_s'])
    assert 0 < run['fraction_of_roofline'] == pytest.approx(run['roofline_s'] /
                                                             run['decode_s'])
  assert json.loads(out.read_text())['runs'] == json.loads(json.dumps(result['runs']))
