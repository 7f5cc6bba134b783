"""Import a local Hugging Face checkpoint (Llama-3, Qwen2/2.5, Gemma, Gemma-2) as our model.

  cfg = import_hf('/ckpts/Qwen2.5-0.5B', 'runs/qwen05')     # or: ttc import-hf SRC OUT
  cfg, params, meta = load_imported('runs/qwen05')

The source directory holds config.json, the weights as *.safetensors (one file, or shards
listed by model.safetensors.index.json) and the tokenizer files. Nothing is downloaded; torch
and transformers are not needed: safetensors files are read directly (memory-mapped).

The output directory is a train workdir, so every stage that reads a trained policy reads an
imported one the same way:
  OUT/ckpt/0/state   orbax TrainState(step=0, params, opt_state=None): what
                     `ttc_jax.train.loop.load_params(OUT)` restores
  OUT/ckpt/0/meta    JSON: {'model_config': ModelConfig fields, 'source', 'hf_model_type',
                     'format': 'ttc_hf_import/1', 'non_embedding_params'}
  OUT/tokenizer/     the source's tokenizer.json (+ tokenizer_config.json,
                     special_tokens_map.json, generation_config.json, config.json) for
                     `ttc_jax.data.hf_tokenizer.load_tokenizer(OUT)`

What is refused (HFImportError naming the file and key): model types other than llama,
qwen2, gemma, gemma2; biases on the output or MLP projections (Llama attention_bias /
mlp_bias); RoPE scaling other than 'llama3' (linear, dynamic, yarn, longrope); partial
rotary embeddings; activations other than the family's; bidirectional attention; layer types
other than full/sliding attention. Gemma-2's soft-capping, post-norms,
query_pre_attn_scalar and alternating sliding-window layers are all imported.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path
from typing import Any, Callable

import jax
import ml_dtypes
import numpy as np

from ttc_jax.model.config import ModelConfig

FORMAT = 'ttc_hf_import/1'
SUPPORTED = ('llama', 'qwen2', 'gemma', 'gemma2')
TOKENIZER_FILES = ('tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json',
                   'generation_config.json', 'config.json')
# Default KV-cache length when the checkpoint allows more: enough for MATH solutions, and the
# cache grows linearly with it. Override with `max_len`.
DEFAULT_MAX_LEN = 4096

_ST_DTYPES = {'F64': np.float64, 'F32': np.float32, 'F16': np.float16,
              'BF16': ml_dtypes.bfloat16, 'I64': np.int64, 'I32': np.int32}


class HFImportError(ValueError):
  """The checkpoint cannot be imported faithfully; the message names the file and tensor."""


# ----------------------------------------------------------------------------- safetensors


@dataclasses.dataclass(frozen=True)
class _TensorRef:
  file: Path
  dtype: str
  shape: tuple[int, ...]
  start: int          # byte offset in the file
  end: int


def _read_header(path: Path) -> dict[str, _TensorRef]:
  """Tensor name -> location, from a safetensors file's JSON header."""
  try:
    with open(path, 'rb') as f:
      n = int.from_bytes(f.read(8), 'little')
      header = json.loads(f.read(n))
  except (OSError, ValueError) as e:
    raise HFImportError(f'{path}: not a readable safetensors file ({e}).') from None
  base, size, out = 8 + n, path.stat().st_size, {}
  for name, info in header.items():
    if name == '__metadata__':
      continue
    start, end = (base + int(o) for o in info['data_offsets'])
    if end > size:
      raise HFImportError(f'{path}: tensor {name} ends at byte {end} but the file has '
                          f'{size} bytes (truncated download?).')
    out[name] = _TensorRef(path, info['dtype'], tuple(info['shape']), start, end)
  return out


def tensor_index(src: str | Path) -> dict[str, _TensorRef]:
  """Every tensor of the checkpoint in `src`: sharded (model.safetensors.index.json) or not."""
  src = Path(src)
  index_path = src / 'model.safetensors.index.json'
  if index_path.exists():
    weight_map = json.loads(index_path.read_text())['weight_map']
    by_file: dict[str, list[str]] = {}
    for name, fname in weight_map.items():
      by_file.setdefault(fname, []).append(name)
    out = {}
    for fname, names in sorted(by_file.items()):
      if not (src / fname).exists():
        raise HFImportError(
            f'{index_path.name} lists shard {fname} (holding {len(names)} tensors, e.g. '
            f'{sorted(names)[0]}) but {src / fname} does not exist: copy the missing shard.')
      header = _read_header(src / fname)
      for name in names:
        if name not in header:
          raise HFImportError(f'{index_path.name} puts tensor {name} in {fname}, which does '
                              f'not hold it.')
        out[name] = header[name]
    return out
  files = sorted(src.glob('*.safetensors'))
  if not files:
    raise HFImportError(f'{src} holds no *.safetensors file (and no '
                        f'model.safetensors.index.json); convert .bin weights to safetensors.')
  out = {}
  for f in files:
    out.update(_read_header(f))
  return out


def _load(ref: _TensorRef, name: str) -> np.ndarray:
  if ref.dtype not in _ST_DTYPES:
    raise HFImportError(f'{ref.file.name}: tensor {name} has dtype {ref.dtype}; supported: '
                        f'{sorted(_ST_DTYPES)}.')
  dt = np.dtype(_ST_DTYPES[ref.dtype])
  count = math.prod(ref.shape)
  if count * dt.itemsize != ref.end - ref.start:
    raise HFImportError(f'{ref.file.name}: tensor {name} has {ref.end - ref.start} bytes, '
                        f'its shape {ref.shape} and dtype {ref.dtype} need '
                        f'{count * dt.itemsize}.')
  mm = np.memmap(ref.file, dtype=np.uint8, mode='r', offset=ref.start, shape=(ref.end - ref.start,))
  return mm.view(dt).reshape(ref.shape)


# ----------------------------------------------------------------------------- config


def _refuse(src: Path, msg: str):
  raise HFImportError(f'{src / "config.json"}: {msg}')


def _rope(hf: dict, src: Path) -> tuple[float, tuple | None]:
  """(rope_theta, llama3 scaling tuple or None), from transformers 4 (rope_theta +
  rope_scaling) or 5 (rope_parameters) config layouts."""
  params = hf.get('rope_parameters') or {}
  if 'rope_parameters' in hf and hf['rope_parameters'] and not isinstance(params, dict):
    _refuse(src, 'per-layer-type rope_parameters are not supported.')
  theta = float(params.get('rope_theta', hf.get('rope_theta', 10_000.0)))
  scaling = dict(hf.get('rope_scaling') or {})
  scaling.update({k: v for k, v in params.items() if k != 'rope_theta'})
  kind = scaling.get('rope_type', scaling.get('type', 'default'))
  if kind == 'default':
    return theta, None
  if kind != 'llama3':
    _refuse(src, f"rope type {kind!r} is not supported (only 'default' and 'llama3'); "
                 f'importing it without its scaling would give wrong logits.')
  try:
    return theta, (float(scaling['factor']), float(scaling['low_freq_factor']),
                   float(scaling['high_freq_factor']),
                   float(scaling['original_max_position_embeddings']))
  except KeyError as e:
    _refuse(src, f'llama3 rope scaling lacks {e.args[0]!r}.')


def config_from_hf(hf: dict, src: str | Path = '.', *, param_dtype: str | None = None,
                   dtype: str | None = None, max_len: int | None = None) -> ModelConfig:
  """Our ModelConfig for a Hugging Face config.json dict; refuses what we cannot run exactly.

  param_dtype / dtype default to the checkpoint's dtype (float32 stays float32, bfloat16
  stays bfloat16); max_len (tokens of KV cache) to min(max_position_embeddings, 4096).
  """
  src = Path(src)
  mt = hf.get('model_type')
  if mt not in SUPPORTED:
    _refuse(src, f'unsupported architecture: model_type={mt!r} '
                 f'(architectures={hf.get("architectures")}); supported: {", ".join(SUPPORTED)}.')
  gemma = mt in ('gemma', 'gemma2')
  for key in ('attention_bias', 'mlp_bias'):
    # Qwen2 has q/k/v biases by construction (no key); Llama's attention_bias also puts one
    # on the output projection, which our model lacks.
    if hf.get(key) and mt != 'qwen2':
      _refuse(src, f'{key}=true is not supported (biases on the output/MLP projections).')
  if float(hf.get('partial_rotary_factor', 1.0)) != 1.0:
    _refuse(src, 'partial_rotary_factor != 1 is not supported.')
  if hf.get('use_bidirectional_attention'):
    _refuse(src, 'use_bidirectional_attention=true is not supported (decoder-only, causal).')
  act = hf.get('hidden_activation') or hf.get('hidden_act') or (
      'gelu_pytorch_tanh' if gemma else 'silu')
  if gemma and act == 'gelu':
    act = 'gelu_pytorch_tanh'   # legacy Gemma configs; transformers maps it the same way
  want = 'gelu_pytorch_tanh' if gemma else 'silu'
  if act != want:
    _refuse(src, f'activation {act!r} is not supported for {mt} (expected {want!r}).')
  theta, scaling = _rope(hf, src)

  n_layers = int(hf['num_hidden_layers'])
  sliding_window, sliding_layers = 0, ()
  layer_types = hf.get('layer_types')
  if mt == 'gemma2' and layer_types is None:
    # Configs from transformers < 4.53 carry no layer_types: even layers slide.
    layer_types = ['sliding_attention' if i % 2 == 0 else 'full_attention'
                   for i in range(n_layers)]
  if mt == 'qwen2' and layer_types is None and hf.get('use_sliding_window'):
    layer_types = ['sliding_attention' if i >= int(hf.get('max_window_layers', 0))
                   else 'full_attention' for i in range(n_layers)]
  if mt == 'qwen2' and not hf.get('use_sliding_window'):
    layer_types = None   # sliding_window is ignored by transformers unless switched on
  if layer_types is not None:
    bad = sorted(set(layer_types) - {'sliding_attention', 'full_attention'})
    if bad or len(layer_types) != n_layers:
      _refuse(src, f'layer_types must be {n_layers} of full_attention / sliding_attention, '
                   f'got {layer_types!r}.')
    if 'sliding_attention' in layer_types:
      if not hf.get('sliding_window'):
        _refuse(src, 'sliding_attention layers but no sliding_window.')
      sliding_window = int(hf['sliding_window'])
      sliding_layers = tuple(t == 'sliding_attention' for t in layer_types)

  ckpt_dtype = {'float32': 'float32', 'bfloat16': 'bfloat16', 'float16': 'float16'}.get(
      str(hf.get('dtype') or hf.get('torch_dtype') or 'float32'), 'float32')
  n_heads = int(hf['num_attention_heads'])
  d_model = int(hf['hidden_size'])
  max_pos = int(hf.get('max_position_embeddings', DEFAULT_MAX_LEN))
  cfg = ModelConfig(
      vocab_size=int(hf['vocab_size']), d_model=d_model, n_layers=n_layers, n_heads=n_heads,
      n_kv_heads=int(hf.get('num_key_value_heads') or n_heads),
      head_dim=int(hf.get('head_dim') or d_model // n_heads),
      d_ff=int(hf['intermediate_size']),
      max_len=int(max_len or min(max_pos, DEFAULT_MAX_LEN)),
      rope_theta=theta, rope_scaling=scaling,
      norm_eps=float(hf.get('rms_norm_eps', 1e-6)),
      tie_embeddings=bool(hf.get('tie_word_embeddings', gemma)),
      qkv_bias=mt == 'qwen2', norm_offset=1.0 if gemma else 0.0, scale_embeddings=gemma,
      activation='gelu_tanh' if gemma else 'silu',
      attn_logit_softcap=float(hf.get('attn_logit_softcapping') or 0.0) if mt == 'gemma2'
      else 0.0,
      final_logit_softcap=float(hf.get('final_logit_softcapping') or 0.0) if mt == 'gemma2'
      else 0.0,
      query_pre_attn_scalar=float(hf.get('query_pre_attn_scalar') or 0.0) if mt == 'gemma2'
      else 0.0,
      post_norms=mt == 'gemma2', sliding_window=sliding_window, sliding_layers=sliding_layers,
      param_dtype=param_dtype or ckpt_dtype, dtype=dtype or ckpt_dtype,
      name=str(hf.get('_name_or_path') or src.name))
  return cfg.validate('hf_config')


# ----------------------------------------------------------------------------- weights


def _mapping(cfg: ModelConfig, mt: str) -> dict[tuple[str, ...], tuple[str, Callable]]:
  """Our per-layer param path -> (HF tensor name template with {i}, HF -> ours transform).

  HF Linear weights are [out, in]; our DenseGeneral kernels are [in, *out] (q: [D, N, H],
  o: [N, H, D]).
  """
  d, n, k, h = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
  p = 'model.layers.{i}.'
  m = {
      ('attn_norm', 'scale'): (p + 'input_layernorm.weight', lambda w: w),
      ('q', 'kernel'): (p + 'self_attn.q_proj.weight', lambda w: w.T.reshape(d, n, h)),
      ('k', 'kernel'): (p + 'self_attn.k_proj.weight', lambda w: w.T.reshape(d, k, h)),
      ('v', 'kernel'): (p + 'self_attn.v_proj.weight', lambda w: w.T.reshape(d, k, h)),
      ('o', 'kernel'): (p + 'self_attn.o_proj.weight', lambda w: w.T.reshape(n, h, d)),
      ('gate', 'kernel'): (p + 'mlp.gate_proj.weight', lambda w: w.T),
      ('up', 'kernel'): (p + 'mlp.up_proj.weight', lambda w: w.T),
      ('down', 'kernel'): (p + 'mlp.down_proj.weight', lambda w: w.T),
  }
  if mt == 'gemma2':
    # Gemma-2 names its post-attention norm literally; its pre-MLP norm is
    # pre_feedforward_layernorm (in Llama, post_attention_layernorm is the pre-MLP norm).
    m[('attn_post_norm', 'scale')] = (p + 'post_attention_layernorm.weight', lambda w: w)
    m[('mlp_norm', 'scale')] = (p + 'pre_feedforward_layernorm.weight', lambda w: w)
    m[('mlp_post_norm', 'scale')] = (p + 'post_feedforward_layernorm.weight', lambda w: w)
  else:
    m[('mlp_norm', 'scale')] = (p + 'post_attention_layernorm.weight', lambda w: w)
  if cfg.qkv_bias:
    m[('q', 'bias')] = (p + 'self_attn.q_proj.bias', lambda b: b.reshape(n, h))
    m[('k', 'bias')] = (p + 'self_attn.k_proj.bias', lambda b: b.reshape(k, h))
    m[('v', 'bias')] = (p + 'self_attn.v_proj.bias', lambda b: b.reshape(k, h))
  return m


# Tensors a checkpoint may carry that our model recomputes or does not need.
_IGNORED_SUFFIXES = ('rotary_emb.inv_freq',)


def convert(src: str | Path, cfg: ModelConfig, model_type: str) -> dict[str, Any]:
  """Numpy parameters in our layout (cfg.param_dtype) from the checkpoint in `src`.

  Every tensor is checked against the shape our model expects for `cfg`; a missing,
  misshapen or unexpected tensor raises HFImportError naming the file and the tensor.
  """
  from ttc_jax.model.transformer import init_params   # the abstract shapes of our params

  src = Path(src)
  refs = tensor_index(src)
  abstract = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
  out_dtype = np.dtype(cfg.param_dtype if cfg.param_dtype != 'bfloat16'
                       else ml_dtypes.bfloat16)
  used: set[str] = set()

  def get(name: str) -> np.ndarray:
    if name not in refs:
      raise HFImportError(f'{src}: tensor {name} is missing from the checkpoint (its config.json '
                          f'and weights disagree, or a shard is incomplete).')
    used.add(name)
    return _load(refs[name], name)

  def check(name: str, got: np.ndarray, want_shape) -> np.ndarray:
    if tuple(got.shape) != tuple(want_shape):
      raise HFImportError(
          f'{refs[name].file.name}: tensor {name} has shape {tuple(refs[name].shape)}, which '
          f'does not give the shape {tuple(want_shape)} that config.json implies.')
    return got.astype(out_dtype)

  def hf_shape_ok(name: str, transform, want_shape) -> np.ndarray:
    w = get(name)
    try:
      return check(name, transform(w), want_shape)
    except ValueError as e:
      if isinstance(e, HFImportError):
        raise
      raise HFImportError(
          f'{refs[name].file.name}: tensor {name} has shape {tuple(w.shape)}, which does not '
          f'give the shape {tuple(want_shape)} that config.json implies.') from None

  params: dict[str, Any] = {'embed': {}, 'final_norm': {}, 'layers': {}}
  params['embed']['embedding'] = hf_shape_ok(
      'model.embed_tokens.weight', lambda w: w, abstract['embed']['embedding'].shape)
  params['final_norm']['scale'] = hf_shape_ok(
      'model.norm.weight', lambda w: w, abstract['final_norm']['scale'].shape)
  if not cfg.tie_embeddings:
    params['unembed'] = {'kernel': hf_shape_ok(
        'lm_head.weight', lambda w: w.T, abstract['unembed']['kernel'].shape)}
  elif 'lm_head.weight' in refs:
    used.add('lm_head.weight')   # a tied checkpoint may still store the (same) head
  for (mod, leaf), (template, transform) in _mapping(cfg, model_type).items():
    want = abstract['layers'][mod][leaf].shape[1:]
    per_layer = [hf_shape_ok(template.format(i=i), transform, want)
                 for i in range(cfg.n_layers)]
    params['layers'].setdefault(mod, {})[leaf] = np.stack(per_layer)
  unexpected = sorted(n for n in refs if n not in used and not n.endswith(_IGNORED_SUFFIXES))
  if unexpected:
    raise HFImportError(
        f'{refs[unexpected[0]].file.name}: tensor {unexpected[0]} (and '
        f'{len(unexpected) - 1} more) has no place in the imported model: config.json does '
        f'not describe this checkpoint, or the architecture has parts we do not support.')
  if jax.tree.structure(params) != jax.tree.structure(abstract):
    raise HFImportError(f'{src}: the converted parameters {jax.tree.structure(params)} do not '
                        f'match the model {jax.tree.structure(abstract)} (an importer bug).')
  return params


# ----------------------------------------------------------------------------- save / load


def import_hf(src: str | Path, out: str | Path, *, param_dtype: str | None = None,
              dtype: str | None = None, max_len: int | None = None) -> ModelConfig:
  """Converts the checkpoint in `src` and writes it to `out` (layout in the module doc).
  Returns the ModelConfig. Refuses (HFImportError) anything it cannot import exactly."""
  import orbax.checkpoint as ocp
  from ttc_jax.train.loop import TrainState

  src, out = Path(src), Path(out).absolute()
  if not (src / 'config.json').exists():
    raise HFImportError(f'{src} has no config.json: point at a Hugging Face model directory.')
  hf = json.loads((src / 'config.json').read_text())
  cfg = config_from_hf(hf, src, param_dtype=param_dtype, dtype=dtype, max_len=max_len)
  params = convert(src, cfg, hf['model_type'])
  meta = {'format': FORMAT, 'model_config': dataclasses.asdict(cfg),
          'source': str(src.absolute()), 'hf_model_type': hf['model_type'],
          'non_embedding_params': cfg.param_counts()['non_embedding']}
  if (out / 'ckpt').exists():
    shutil.rmtree(out / 'ckpt')
  manager = ocp.CheckpointManager(
      out / 'ckpt', options=ocp.CheckpointManagerOptions(create=True),
      item_names=('state', 'meta'))
  state = TrainState(step=np.int32(0), params=params, opt_state=None)
  manager.save(0, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                          meta=ocp.args.JsonSave(meta)))
  manager.wait_until_finished()
  manager.close()
  # The same metadata as plain JSON, so configs can be checked without restoring weights.
  from ttc_jax import io
  io.write_json(out / 'model.json', meta)
  (out / 'tokenizer').mkdir(parents=True, exist_ok=True)
  for name in TOKENIZER_FILES:
    if (src / name).exists():
      shutil.copyfile(src / name, out / 'tokenizer' / name)
  return cfg


def model_config_from_meta(meta: dict) -> ModelConfig:
  """The ModelConfig recorded by `import_hf` (JSON lists back to tuples)."""
  fields = dict(meta['model_config'])
  for k in ('rope_scaling', 'sliding_layers'):
    if fields.get(k) is not None:
      fields[k] = tuple(fields[k])
  return ModelConfig(**fields).validate('imported model_config')


def imported_config(out: str | Path, **overrides) -> ModelConfig:
  """The ModelConfig of an `import_hf` directory, read from its model.json (no weights)."""
  path = Path(out) / 'model.json'
  if not path.exists():
    raise FileNotFoundError(f'{path} does not exist: family.import_from must be a directory '
                            'written by `ttc import-hf`.')
  meta = json.loads(path.read_text())
  return dataclasses.replace(model_config_from_meta(meta), **overrides).validate('model')


def load_imported(out: str | Path, **overrides) -> tuple[ModelConfig, Any, dict]:
  """(ModelConfig, params, meta) of a directory written by `import_hf`.

  overrides: ModelConfig fields to change (e.g. dtype='bfloat16', max_len=2048,
  attention_impl='cudnn'); param_dtype converts the restored parameters.
  """
  from ttc_jax.train.loop import load_params

  params, meta = load_params(out)
  if meta.get('format') != FORMAT:
    raise HFImportError(f'{out}: not written by import_hf (meta format {meta.get("format")!r}).')
  cfg = dataclasses.replace(model_config_from_meta(meta), **overrides).validate('model')
  params = jax.tree.map(lambda x: np.asarray(x).astype(cfg.param_dtype if cfg.param_dtype
                                                       != 'bfloat16' else ml_dtypes.bfloat16),
                        params)
  return cfg, params, meta
