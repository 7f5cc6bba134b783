"""Where a decode step's matmul time goes: XLA's GEMM kernels by shape, from an HLO dump and a
trace of the same run (a probe, GPU).

  XLA_FLAGS='--xla_dump_to=DUMP --xla_dump_hlo_as_text' python3 -m ttc_jax.sample.bench ... \
      --reps 1 --trace TRACE
  python3 experiments/gpu/gemm_table.py DUMP TRACE/.../perfetto_trace.json.gz

For every GEMM fusion (`gemm_fusion_dot*`, XLA's Triton GEMMs) and cuBLAS call of the
optimised decode module: its output shape, contracting size, tile config, and from the
trace its calls and mean time, with the FLOP rate that implies. cuBLAS kernels are named by
cuBLAS in the trace (nvjet_*), so they are listed by name beside the calls of the module.
"""

import collections
import glob
import gzip
import json
import re
import sys


def operand_shapes(operands: str, scope: str) -> list[str]:
  """Shapes of an instruction's operands: printed with them, or else looked up by name among
  the definitions in `scope` (HLO text)."""
  shapes = re.findall(r'\w+\[[\d,]*\]', operands)
  if shapes:
    return shapes
  for name in re.findall(r'%?([\w.\-]+)', operands):
    m = re.search(rf'%?{re.escape(name)} = (\w+\[[\d,]*\])', scope)
    if m:
      shapes.append(m.group(1))
  return shapes


def hlo_gemms(dump_dir: str) -> dict:
  """{name: (output shape, operand shapes, config)} for the GEMM fusions and cuBLAS calls of
  the after-optimisation HLO modules of the dump whose name mentions decode. The config is
  the Triton fusion's output tile, stages and warps, or 'cuBLAS'."""
  out = {}
  for path in sorted(glob.glob(f'{dump_dir}/*decode*after_optimizations.txt')):
    text = open(path).read()
    comps = {m.group(1).lstrip('%'): m.group(2) for m in re.finditer(
        r'^(%?[\w.\-]+) (?:\([^\n]*\) -> [^\n]*)?\{\n(.*?)\n\}', text, re.M | re.S)}
    for line in text.splitlines():
      m = re.match(r'\s*(?:ROOT )?%?(gemm_fusion_dot[\w.]*) = (\w+\[[\d,]*\])\S* fusion\(.*'
                   r'calls=%?([\w.\-]+)', line)
      if m:
        body = comps.get(m.group(3), '')
        ops = re.search(r'= \S+ dot\(([^)]*)\)', body)
        tiles = re.search(r'"output_tiles":\[\{"sizes":\["(\d+)","(\d+)"\]', line)
        stages = re.search(r'"num_stages":"?(\d+)', line)
        warps = re.search(r'"num_warps":"?(\d+)', line)
        cfg = ' '.join(x for x in (
            tiles and f'tile {tiles.group(1)}x{tiles.group(2)}',
            stages and f'stages {stages.group(1)}', warps and f'warps {warps.group(1)}') if x)
        out[m.group(1)] = (m.group(2), ' x '.join(operand_shapes(ops.group(1), body) if ops
                                                  else []), cfg)
        continue
      m = re.match(r'\s*(?:ROOT )?%?([\w.\-]+) = \(?(\w+\[[\d,]*\])[^=]*? custom-call\((.*?)\), '
                   r'custom_call_target="__cublas\$[\w$]*"', line)
      if m:
        out[m.group(1)] = (m.group(2), ' x '.join(operand_shapes(m.group(3), text)), 'cuBLAS')
  return out


def trace_kernels(path: str) -> dict:
  """{kernel name: [total us, calls]} of device events."""
  with gzip.open(path, 'rt') as f:
    trace = json.load(f)
  events = trace['traceEvents'] if isinstance(trace, dict) else trace
  pids = {e['pid'] for e in events if e.get('ph') == 'M' and e.get('name') == 'process_name'
          and re.search(r'/device:GPU', e.get('args', {}).get('name', ''))}
  out = collections.defaultdict(lambda: [0.0, 0])
  for e in events:
    if e.get('ph') == 'X' and e.get('pid') in pids and 'dur' in e:
      name = e['name'].replace('.', '_')   # the HLO's 'x.3' may be traced as 'x_3'
      out[name][0] += e['dur']
      out[name][1] += 1
  return out


def flops(shape_out: str, operands: str) -> float:
  """2 * M * N * K from the output shape and the first operand's last dim (a guess that holds
  for [M, K] x [K, N]-like dots); 0 when it cannot tell."""
  out_dims = re.search(r'\[([\d,]*)\]', shape_out)
  dims = [int(d) for d in out_dims.group(1).split(',') if d] if out_dims else []
  ops = re.findall(r'\[([\d,]+)\]', operands)
  if not dims or not ops:
    return 0.0
  n_out = 1
  for d in dims:
    n_out *= d
  lhs = [int(d) for d in ops[0].split(',') if d]
  return 2.0 * n_out * (lhs[-1] if lhs else 0)


def main():
  dump_dir, trace_path = sys.argv[1], sys.argv[2]
  gemms = hlo_gemms(dump_dir)
  kernels = trace_kernels(trace_path)
  print(f'{len(gemms)} GEMMs in the decode module; trace kernels {len(kernels)}')
  rows = []
  for name, (shape, operands, cfg) in gemms.items():
    total, n = kernels.get(name.replace('.', '_'), (0.0, 0))
    rows.append((total, name, n, shape, operands, cfg))
  for total, name, n, shape, operands, cfg in sorted(rows, reverse=True):
    mean = total / n if n else 0.0
    f = flops(shape, operands)
    rate = f / (mean * 1e-6) / 1e12 if mean and f else 0.0
    print(f'{total / 1e3:8.2f} ms {n:5d}x {mean:7.1f} us  {rate:6.0f} TFLOP/s  {name:28s} '
          f'{shape:24s} <- {operands[:70]:70s} {cfg[:110]}')
  others = sorted(((v[0], k, v[1]) for k, v in kernels.items()
                   if k.startswith(('nvjet', 'sm90', 'cutlass', 'gemm'))
                   and k not in {g.replace('.', '_') for g in gemms}), reverse=True)
  for total, name, n in others[:8]:
    print(f'{total / 1e3:8.2f} ms {n:5d}x {total / n:7.1f} us  (not matched to the HLO) {name}')


if __name__ == '__main__':
  main()
