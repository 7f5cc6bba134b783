"""One `Mesh` with axes ('data', 'model') and the rules that place parameters and batches.

The same code runs on 1 CPU, on 8 fake CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=8), on a GPU and on a TPU pod slice (after
`jax.distributed.initialize()`, every process builds the same global mesh).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """data * model must equal the number of devices; -1 means 'all remaining devices'."""
  data: int = -1
  model: int = 1
  fsdp: bool = False   # also shard the largest parameter dim over 'data' (ZeRO-3 style)


def make_mesh(cfg: MeshConfig = MeshConfig(), devices=None) -> Mesh:
  devices = np.asarray(jax.devices() if devices is None else devices)
  n = devices.size
  data, model = cfg.data, cfg.model
  if model <= 0 or (data != -1 and data <= 0):
    raise ValueError(f'mesh.data={data} and mesh.model={model} must be positive (or data=-1).')
  if data == -1:
    if n % model:
      raise ValueError(f'mesh.model={model} does not divide the {n} devices.')
    data = n // model
  if data * model != n:
    raise ValueError(f'mesh.data * mesh.model = {data * model} but there are {n} devices; '
                     'set mesh.data=-1 to use all of them.')
  return Mesh(devices.reshape(data, model), ('data', 'model'))


def _param_spec(path: str, shape, mesh: Mesh, fsdp: bool) -> P:
  """Tensor-parallel along 'model' on the heads / hidden-FF axis, Megatron style; optional
  FSDP over 'data' on another large axis. Dims that do not divide stay replicated."""
  m, d = mesh.shape['model'], mesh.shape['data']
  spec = [None] * len(shape)

  def put(axis, name, size):
    if -len(shape) <= axis < len(shape) and spec[axis] is None and shape[axis] % size == 0 \
       and size > 1:
      spec[axis] = name
      return True
    return False

  leaf = path.split('/')
  # Layer-stacked kernels have a leading L axis: index from the end.
  if 'q' in leaf or 'k' in leaf or 'v' in leaf:        # [.., D, N, H]
    put(-2, 'model', m)
  elif 'o' in leaf:                                     # [.., N, H, D]
    put(-3, 'model', m)
  elif 'gate' in leaf or 'up' in leaf:                  # [.., D, F]
    put(-1, 'model', m)
  elif 'down' in leaf:                                  # [.., F, D]
    put(-2, 'model', m)
  elif 'embedding' in leaf or 'unembed' in leaf:        # [V, D] / [D, V]
    put(0 if 'embedding' in leaf else -1, 'model', m)
  if fsdp and len(shape) >= 2:
    for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
      if put(axis, 'data', d):
        break
  return P(*spec)


def param_shardings(params, mesh: Mesh, fsdp: bool = False):
  """A pytree of NamedShardings matching `params` (arrays or ShapeDtypeStructs)."""
  def one(path, x):
    name = '/'.join(str(getattr(k, 'key', getattr(k, 'name', k))) for k in path)
    return NamedSharding(mesh, _param_spec(name, x.shape, mesh, fsdp))
  return jax.tree_util.tree_map_with_path(one, params)


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  """Rows over 'data', everything else replicated."""
  return NamedSharding(mesh, P('data', *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())
