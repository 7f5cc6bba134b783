"""Where the time goes in a jax.profiler Perfetto trace: device ops grouped by name.

  python experiments/trace_summary.py TRACE.json.gz [--top 25]

Reads the trace written by `jax.profiler.trace(dir, create_perfetto_trace=True)` (for example
by `ttc bench sampling --trace DIR`) and prints, for the events on device (GPU/TPU) tracks:
busy time, the span from first to last event, and the top op names by total time with their
count and mean duration. Host tracks are summarised in one line.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re


def load(path: str) -> dict:
  opener = gzip.open if path.endswith('.gz') else open
  with opener(path, 'rt') as f:
    return json.load(f)


def summarise(trace: dict, top: int = 25) -> str:
  events = trace['traceEvents'] if isinstance(trace, dict) else trace
  names = {}
  for e in events:
    if e.get('ph') == 'M' and e.get('name') == 'process_name':
      names[e['pid']] = e.get('args', {}).get('name', '')
  device_pids = {p for p, n in names.items() if re.search(r'/device:(GPU|TPU)', n)}
  by_name = collections.defaultdict(lambda: [0.0, 0])
  host_busy = 0.0
  t0, t1, busy = float('inf'), 0.0, 0.0
  for e in events:
    if e.get('ph') != 'X' or 'dur' not in e:
      continue
    if e['pid'] in device_pids:
      # Group numbered instances of one fusion kind: 'loop_multiply_fusion_3' -> '..._N'.
      key = re.sub(r'[._]\d+$', '_N', e['name'])
      by_name[key][0] += e['dur']
      by_name[key][1] += 1
      busy += e['dur']
      t0, t1 = min(t0, e['ts']), max(t1, e['ts'] + e['dur'])
    else:
      host_busy += e['dur']
  lines = [f'device tracks: {sorted(names[p] for p in device_pids)} '
           f'(all tracks: {sorted(set(names.values()))[:12]})',
           f'device busy {busy / 1e3:.2f} ms over a span of {(t1 - t0) / 1e3:.2f} ms '
           f'({busy / max(t1 - t0, 1e-9):.0%} busy); host events {host_busy / 1e3:.1f} ms']
  for name, (tot, n) in sorted(by_name.items(), key=lambda kv: -kv[1][0])[:top]:
    lines.append(f'{tot / 1e3:9.2f} ms {tot / max(busy, 1e-9):6.1%} {n:7d}x '
                 f'{tot / n:8.1f} us  {name[:110]}')
  return '\n'.join(lines)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('trace')
  ap.add_argument('--top', type=int, default=25)
  args = ap.parse_args(argv)
  print(summarise(load(args.trace), args.top))


if __name__ == '__main__':
  main()
