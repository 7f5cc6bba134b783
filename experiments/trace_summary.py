"""Where the time goes in a jax.profiler Perfetto trace: device ops grouped by name.

  python experiments/trace_summary.py TRACE.json.gz [--top 25]

Reads the trace written by `jax.profiler.trace(dir, create_perfetto_trace=True)` (for example
by `ttc bench sampling --trace DIR`) and prints, for the events on device (GPU/TPU) tracks:
busy time, the span from first to last event, the idle time in gaps longer than 20 us (with
how much of it follows a device-to-host copy: a while loop's condition read by the host), and
the top op names by total time with their count and mean duration. Host tracks are
summarised in one line.
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
  device_events = []
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
      device_events.append(e)
    else:
      host_busy += e['dur']
  lines = [f'device tracks: {sorted(names[p] for p in device_pids)} '
           f'(all tracks: {sorted(set(names.values()))[:12]})',
           f'device busy {busy / 1e3:.2f} ms over a span of {(t1 - t0) / 1e3:.2f} ms '
           f'({busy / max(t1 - t0, 1e-9):.0%} busy); host events {host_busy / 1e3:.1f} ms',
           idle_gaps(device_events)]
  for name, (tot, n) in sorted(by_name.items(), key=lambda kv: -kv[1][0])[:top]:
    lines.append(f'{tot / 1e3:9.2f} ms {tot / max(busy, 1e-9):6.1%} {n:7d}x '
                 f'{tot / n:8.1f} us  {name[:110]}')
  return '\n'.join(lines)


def idle_gaps(device_events, min_gap_us: float = 20.0) -> str:
  """One line: device idle time in gaps over min_gap_us, and the part after a D2H copy."""
  end, prev_name = None, ''
  n = total = n_d2h = after_d2h = 0
  for e in sorted(device_events, key=lambda e: e['ts']):
    if end is not None and e['ts'] - end > min_gap_us:
      n, total = n + 1, total + e['ts'] - end
      if 'D2H' in prev_name or 'DtoH' in prev_name:
        n_d2h, after_d2h = n_d2h + 1, after_d2h + e['ts'] - end
    if end is None or e['ts'] + e['dur'] >= end:
      end, prev_name = e['ts'] + e['dur'], e['name']
  return (f'idle gaps > {min_gap_us:.0f} us: {n} totalling {total / 1e3:.2f} ms; '
          f'{n_d2h} of them after a device-to-host copy, {after_d2h / 1e3:.2f} ms '
          f'({after_d2h / max(n_d2h, 1):.0f} us each)')


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('trace')
  ap.add_argument('--top', type=int, default=25)
  args = ap.parse_args(argv)
  print(summarise(load(args.trace), args.top))


if __name__ == '__main__':
  main()
