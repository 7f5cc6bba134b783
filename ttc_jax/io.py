"""The one writer of run artifacts: every file is written to a temporary path in the same
folder and renamed into place, so a killed process never leaves a half-written file."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = '') -> Iterator[Path]:
  """Yields a temporary path beside `path`; renames it onto `path` if the block succeeds."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix=suffix + '.tmp', dir=path.parent)
  os.close(fd)
  tmp = Path(tmp)
  try:
    yield tmp
    os.replace(tmp, path)
  finally:
    if tmp.exists():
      tmp.unlink()


def write_json(path, obj: Any) -> None:
  with atomic_path(path) as tmp:
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + '\n')


def read_json(path, default=None):
  path = Path(path)
  if not path.exists():
    return default
  return json.loads(path.read_text())


def write_parquet(path, table) -> None:
  """`table`: a pandas DataFrame, a pyarrow Table or a dict of equal-length columns."""
  import pyarrow as pa
  import pyarrow.parquet as pq
  if isinstance(table, dict):
    table = pa.table(table)
  elif not isinstance(table, pa.Table):
    table = pa.Table.from_pandas(table, preserve_index=False)
  with atomic_path(path) as tmp:
    pq.write_table(table, tmp)


def read_parquet(path):
  """A pandas DataFrame."""
  import pyarrow.parquet as pq
  return pq.read_table(path).to_pandas()


def _jsonable(x):
  import numpy as np
  if isinstance(x, np.generic):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  if isinstance(x, Path):
    return str(x)
  raise TypeError(f'{type(x).__name__} is not JSON serialisable')
