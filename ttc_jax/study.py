"""Runs and stages. A run is a directory; each stage writes its artifacts into its own folder
and a STAGE.json that records the fingerprint of the inputs it was made from.

Stage states (`ttc stages RUN_DIR`):
  done     STAGE.json says done and its fingerprint equals the current config's;
  stale    done, but made from other inputs (a knob changed upstream): it will be redone;
  partial  started under the current inputs and cut off: it resumes (from its checkpoints);
  pending  never started.
A stage's fingerprint hashes the config values it reads (its `inputs`) together with the
fingerprints of the stages it depends on, so changing one knob reruns exactly the stages
downstream of it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from ttc_jax import io


@dataclasses.dataclass(frozen=True)
class Stage:
  name: str
  deps: tuple[str, ...]
  inputs: Callable[[Any], dict]       # ExperimentConfig -> JSON-able values the stage reads
  run: Callable[['Run', 'Stage'], dict]   # does the work; returns figures for summary.json
  summary_key: str | None = None      # where its figures go in summary.json (default: name)


class Run:
  """A run directory plus the config that drives it."""

  def __init__(self, cfg, plain_config: dict, stages: list[Stage],
               run_dir: str | Path | None = None):
    self.cfg = cfg
    self.plain_config = plain_config
    self.dir = Path(run_dir) if run_dir else Path(cfg.workdir) / cfg.name
    self.stages = {s.name: s for s in stages}
    self._fp: dict[str, str] = {}

  # ---- fingerprints and state --------------------------------------------------------------
  def fingerprint(self, name: str) -> str:
    if name not in self._fp:
      stage = self.stages[name]
      payload = {'inputs': stage.inputs(self.cfg),
                 'deps': {d: self.fingerprint(d) for d in stage.deps}}
      blob = json.dumps(payload, sort_keys=True, default=_default)
      self._fp[name] = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return self._fp[name]

  def stage_dir(self, name: str) -> Path:
    return self.dir / name

  def record(self, name: str) -> dict | None:
    return io.read_json(self.stage_dir(name) / 'STAGE.json')

  def state(self, name: str) -> str:
    rec = self.record(name)
    if rec is None:
      return 'pending'
    if rec.get('fingerprint') != self.fingerprint(name):
      return 'stale'
    return 'done' if rec.get('status') == 'done' else 'partial'

  def states(self) -> dict[str, str]:
    return {n: self.state(n) for n in self.order()}

  def order(self) -> list[str]:
    seen, out = set(), []

    def visit(n, path=()):
      if n in path:
        raise ValueError(f'stage dependency cycle: {" -> ".join(path + (n,))}')
      if n in seen:
        return
      for d in self.stages[n].deps:
        if d not in self.stages:
          raise ValueError(f'stage {n!r} depends on unknown stage {d!r}')
        visit(d, path + (n,))
      seen.add(n)
      out.append(n)

    for n in self.stages:
      visit(n)
    return out

  # ---- summary -----------------------------------------------------------------------------
  @property
  def summary_path(self) -> Path:
    return self.dir / 'summary.json'

  def summary(self) -> dict:
    return io.read_json(self.summary_path, {})

  def update_summary(self, key: str, value) -> None:
    s = self.summary()
    s[key] = value
    io.write_json(self.summary_path, s)

  # ---- running -----------------------------------------------------------------------------
  def run(self, only: list[str] | None = None, log=print) -> dict:
    self.dir.mkdir(parents=True, exist_ok=True)
    io.write_json(self.dir / 'config.json', self.plain_config)
    names = self.order()
    if only:
      wanted = set()
      def need(n):
        wanted.add(n)
        for d in self.stages[n].deps:
          need(d)
      for n in only:
        if n not in self.stages:
          raise ValueError(f'unknown stage {n!r}; stages: {", ".join(names)}')
        need(n)
      names = [n for n in names if n in wanted]
    times = self.summary().get('stage_seconds', {})
    for name in names:
      state = self.state(name)
      if state == 'done':
        log(f'[{name}] done, skipped')
        continue
      d = self.stage_dir(name)
      if state == 'stale' and d.exists():
        log(f'[{name}] inputs changed: redoing')
        shutil.rmtree(d)
      elif state == 'partial':
        log(f'[{name}] resuming')
      else:
        log(f'[{name}] running')
      stage = self.stages[name]
      rec = {'fingerprint': self.fingerprint(name), 'status': 'running',
             'inputs': stage.inputs(self.cfg), 'deps': list(stage.deps)}
      io.write_json(d / 'STAGE.json', rec)
      t0 = time.perf_counter()
      figures = stage.run(self, stage)
      seconds = time.perf_counter() - t0
      if figures is not None:
        self.update_summary(stage.summary_key or name, figures)
      times[name] = round(seconds, 2)
      self.update_summary('stage_seconds', times)
      io.write_json(d / 'STAGE.json', {**rec, 'status': 'done', 'seconds': seconds,
                                        'finished': time.strftime('%Y-%m-%dT%H:%M:%S')})
      log(f'[{name}] done in {seconds:.1f} s')
    return self.summary()


def _default(x):
  if dataclasses.is_dataclass(x):
    return dataclasses.asdict(x)
  if isinstance(x, Path):
    return str(x)
  if isinstance(x, tuple):
    return list(x)
  raise TypeError(type(x).__name__)
