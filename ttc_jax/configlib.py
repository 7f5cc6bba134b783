"""The one boundary between ml_collections ConfigDicts and the frozen dataclasses the code uses.

`load(spec, overrides)` reads `configs/x.py[:arg]`, applies `--config.key=value` overrides to
the locked ConfigDict and converts it with `to_dataclass`, which checks every key and type and
calls each dataclass's `validate(key)`. Any problem raises `ConfigError` naming the key and
what would fix it, before any compute.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib.util
import types
import typing
from pathlib import Path
from typing import Any

import ml_collections

from ttc_jax.model.config import ConfigError

__all__ = ['ConfigError', 'load', 'load_config_dict', 'apply_overrides', 'to_dataclass',
           'to_plain']


def load_config_dict(spec: str) -> ml_collections.ConfigDict:
  """`path/to/config.py[:arg]` -> the locked ConfigDict its `get_config(arg)` returns."""
  path, _, arg = spec.partition(':')
  file = Path(path)
  if not file.is_file():
    raise ConfigError(f'config file {path!r} does not exist.')
  module_spec = importlib.util.spec_from_file_location(f'_ttc_config_{file.stem}', file)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, 'get_config'):
    raise ConfigError(f'config file {path!r} defines no get_config(arg).')
  cfg = module.get_config(arg or None)
  if not isinstance(cfg, ml_collections.ConfigDict):
    raise ConfigError(f'{path}: get_config must return an ml_collections.ConfigDict.')
  cfg.lock()
  return cfg


def _coerce(text: str, current: Any, key: str):
  """Parses an override string to the type of the value it replaces."""
  try:
    if isinstance(current, bool):
      low = text.lower()
      if low not in ('true', 'false', '1', '0'):
        raise ValueError
      return low in ('true', '1')
    if isinstance(current, int):
      return int(text)
    if isinstance(current, float):
      return float(text)
    if isinstance(current, str):
      return text
    if isinstance(current, (tuple, list)):
      parts = [p for p in text.strip('()[] ').split(',') if p.strip()]
      elem = current[0] if current else ''
      return tuple(_coerce(p.strip(), elem, key) for p in parts)
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    raise ConfigError(f'--config.{key}={text!r}: expected a value of type '
                      f'{type(current).__name__} (like {current!r}).') from None


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: dict[str, str]) -> None:
  """Applies {'a.b': 'value'} to a locked ConfigDict, naming unknown keys."""
  for key, text in overrides.items():
    node = cfg
    parts = key.split('.')
    for i, part in enumerate(parts):
      keys = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      if part not in keys:
        where = '.'.join(parts[:i]) or 'the top level'
        hint = difflib.get_close_matches(part, keys, n=1)
        raise ConfigError(f'unknown config key {key!r}: {where} has no {part!r}'
                          + (f' (did you mean {hint[0]!r}?)' if hint else
                             f'; valid keys there: {", ".join(sorted(keys))}') + '.')
      if i < len(parts) - 1:
        node = node[part]
    with node.unlocked():
      node[parts[-1]] = _coerce(text, node[parts[-1]], key)


def to_plain(cfg) -> Any:
  """ConfigDict -> nested plain dicts/lists (JSON-able)."""
  if isinstance(cfg, ml_collections.ConfigDict):
    return {k: to_plain(v) for k, v in cfg.items()}
  if isinstance(cfg, (list, tuple)):
    return [to_plain(v) for v in cfg]
  return cfg


def _check_type(value, hint, key):
  origin = typing.get_origin(hint)
  if hint is Any:
    return value
  if origin is typing.Literal:
    if value not in typing.get_args(hint):
      raise ConfigError(f'{key} must be one of {typing.get_args(hint)}, got {value!r}.')
    return value
  if origin in (typing.Union, types.UnionType):
    for arg in typing.get_args(hint):
      if arg is type(None) and value is None:
        return None
      try:
        return _check_type(value, arg, key)
      except ConfigError:
        pass
    raise ConfigError(f'{key}={value!r} has the wrong type; expected {hint}.')
  if origin in (tuple, list):
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
      raise ConfigError(f'{key} must be a tuple, got {value!r}.')
    args = typing.get_args(hint)
    elem = args[0] if args else Any
    return tuple(_check_type(v, elem, f'{key}[{i}]') for i, v in enumerate(value))
  if origin is dict or hint is dict:
    if not isinstance(value, dict):
      raise ConfigError(f'{key} must be a mapping, got {value!r}.')
    return dict(value)
  if hint is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if isinstance(hint, type):
    if hint is int and isinstance(value, bool) or not isinstance(value, hint):
      raise ConfigError(f'{key} must be of type {hint.__name__}, got {value!r} '
                        f'({type(value).__name__}).')
  return value


def to_dataclass(cls, data, key: str = ''):
  """Converts a (nested) ConfigDict / dict into dataclass `cls`, strictly.

  Unknown keys, missing nested sections and wrong types raise ConfigError naming the key;
  after conversion `validate(key)` of each dataclass (if defined) checks values.
  """
  if isinstance(data, ml_collections.ConfigDict):
    data = data.to_dict()
  if not isinstance(data, dict):
    raise ConfigError(f'{key or "the config"} must be a section (ConfigDict), got {data!r}.')
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = sorted(set(data) - set(fields))
  if unknown:
    hint = difflib.get_close_matches(unknown[0], list(fields), n=1)
    where = f'{key}.' if key else ''
    raise ConfigError(f'unknown config key {where}{unknown[0]}'
                      + (f' (did you mean {where}{hint[0]}?)' if hint else
                         f'; {key or "the top level"} accepts: {", ".join(sorted(fields))}')
                      + '.')
  hints = typing.get_type_hints(cls)
  kwargs = {}
  for name, f in fields.items():
    if name not in data:
      continue
    hint, value, sub = hints[name], data[name], f'{key}.{name}' if key else name
    if dataclasses.is_dataclass(hint):
      kwargs[name] = to_dataclass(hint, value, sub)
    else:
      kwargs[name] = _check_type(value, hint, sub)
  obj = cls(**kwargs)
  if hasattr(obj, 'validate'):
    obj.validate(key) if key else obj.validate()
  return obj


def load(spec: str, overrides: dict[str, str] | None = None, cls=None):
  """Config file spec + overrides -> (validated frozen dataclass, plain dict of the config)."""
  cd = load_config_dict(spec)
  apply_overrides(cd, overrides or {})
  if cls is None:
    from ttc_jax.experiment import ExperimentConfig
    cls = ExperimentConfig
  return to_dataclass(cls, cd), to_plain(cd)
