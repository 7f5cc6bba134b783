"""Sampling throughput against a roofline measured in the same run (and HF generate beside it).

  PYTHONPATH=. python3 -m ttc_jax.sample.bench --d-model 256 --layers 4 --heads 4 \
      --kv-heads 4 --head-dim 64 --d-ff 1024 --vocab 128 --batch 4096,256 --prompt-len 32 \
      --new-tokens 96 --dtype bfloat16 --hf --out /tmp/bench.json

Every row decodes exactly --new-tokens tokens (no EOS, temperature 1) from a random prompt of
--prompt-len tokens, with random weights. Reported per batch size: compile seconds, prefill
seconds, decode seconds, generated tokens/s (decode only, and prefill + decode), seconds per
decode step, and the fraction of the roofline. The roofline of a decode step at live context
c is max(bytes / bandwidth, FLOPs / matmul rate), bytes = weights + KV read over c slots + KV
written, FLOPs = B * forward FLOPs per token at context c; bandwidth (a device-to-device copy,
read + write bytes) and matmul rate (a bf16 matmul on random data) are measured here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np


def _time(fn, reps: int) -> float:
  """Best-of-reps wall seconds of fn() (fn blocks until its result is ready)."""
  best = float('inf')
  for _ in range(reps):
    t = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t)
  return best


def measure_bandwidth(n_bytes: int = 2 << 30) -> float:
  """Bytes/s of a large elementwise copy on the default device, counting read + write."""
  x = jnp.ones((n_bytes // 4,), jnp.float32)
  f = jax.jit(lambda v: v + 1.0)
  f(x).block_until_ready()
  sec = _time(lambda: f(x).block_until_ready(), 10)
  return 2 * n_bytes / sec


def measure_matmul_rate(n: int = 8192) -> float:
  """FLOP/s of an n x n x n bf16 matmul on random data (float32 accumulation)."""
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.random.normal(ka, (n, n), jnp.bfloat16)
  b = jax.random.normal(kb, (n, n), jnp.bfloat16)
  f = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32).astype(x.dtype))
  f(a, b).block_until_ready()
  sec = _time(lambda: f(a, b).block_until_ready(), 10)
  return 2 * n ** 3 / sec


def roofline_seconds(cfg, batch: int, prompt_len: int, new_tokens: int, bandwidth: float,
                     flop_rate: float) -> dict:
  """Lower bound on the decode time: sum over steps of max(memory time, compute time)."""
  item = jnp.dtype(cfg.dtype).itemsize
  weight_bytes = cfg.param_counts()['total'] * jnp.dtype(cfg.param_dtype).itemsize
  kv_per_slot = 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * item  # k and v, per row
  total = mem = comp = 0.0
  for t in range(new_tokens):
    context = prompt_len + t      # keys a step attends to (the pending token included)
    nbytes = weight_bytes + batch * kv_per_slot * (context + 1)   # read context, write one
    flops = batch * cfg.forward_flops_per_token(context)
    mem += nbytes / bandwidth
    comp += flops / flop_rate
    total += max(nbytes / bandwidth, flops / flop_rate)
  return {'roofline_s': total, 'memory_s': mem, 'compute_s': comp}


# XLA option sets a variant can add to the sampler's compiled functions ('x<name>').
XLA_PRESETS = {
    # no CUDA graphs: every kernel is launched on its own
    'nocb': {'xla_gpu_enable_command_buffer': ''},
    # CUDA graphs for the whole decode loop (conditional nodes), so no host round trip
    'while': {'xla_gpu_enable_command_buffer':
              'FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,WHILE,CONDITIONAL'},
    # every matmul through cuBLAS instead of XLA's Triton GEMM fusions (part of the sampler's
    # GPU default, decode.GPU_COMPILER_OPTIONS)
    'cublas': {'xla_gpu_enable_triton_gemm': False},
    # XLA's own matmul choices: Triton GEMM fusions where faster, autotuned (XLA's default
    # level), as the sampler compiled before the untuned cuBLAS default
    'tuned': {'xla_gpu_enable_triton_gemm': True, 'xla_gpu_autotune_level': 4},
    # no autotuning: each GEMM takes the backend's heuristic choice (also in the default)
    'noat': {'xla_gpu_autotune_level': 0},
    # the autotuner tries every Triton GEMM tiling, not a short list
    'exh': {'xla_gpu_exhaustive_tiling_search': True},
    # Hopper: Triton GEMMs with warps specialised into producers and consumers
    'ws': {'xla_gpu_experimental_enable_triton_warp_specialization': True},
    # Triton GEMM fusions for every matmul XLA can fuse (none left to cuBLAS)
    'gany': {'xla_gpu_triton_gemm_any': True},
    # priority fusion may also form Triton fusions around ops that are not a fusion's hero
    # (elementwise work next to a GEMM)
    'hero': {'xla_gpu_experimental_enable_triton_heroless_priority_fusion': True},
    # the autotuner chooses between fusion variants as well as tilings
    'fauto': {'xla_gpu_experimental_enable_fusion_autotuner': True},
    # command buffers serialised by the latency-hiding schedule, XLA's own default (the
    # sampler asks for CONCURRENT on GPUs: decode.GPU_COMPILER_OPTIONS)
    'lhs': {'xla_gpu_command_buffer_scheduling_mode': 'LHS'},
}


def parse_variant(spec: str) -> dict:
  """'attn:unroll[:wN][:sN][:kBLOCKxWARPSxSTAGES][:eKIND][:xPRESET...]' -> decode settings.

  attn: decode_attention ('auto', 'reduce', 'einsum', 'pallas'); unroll: 1 or 0; wN: N
  attention windows (XLA attention only), sN: N decode steps per loop iteration (0 or
  absent: the sampler's); k...: the Pallas kernel's launch settings
  (ModelConfig.decode_kernel), e.g. k64x4x2; eKIND: the step's elementwise kernels
  (ModelConfig.decode_step_kernels: eauto, epallas, exla); xNAME: XLA options from XLA_PRESETS
  for the sampler's functions (several merge), e.g. xnocb.
  """
  from ttc_jax.model.config import DECODE_STEP_KERNELS
  attn, _, rest = spec.partition(':')
  parts = rest.split(':') if rest else []
  out = {'decode_attention': attn, 'decode_unroll': (parts[0] if parts else '1') != '0',
         'n_windows': 0, 'steps_per_loop': 0, 'decode_kernel': '',
         'decode_step_kernels': 'auto', 'xla_options': {}}
  for part in parts[1:]:
    tag, value = part[:1], part[1:]
    if tag == 'w' and value.isdigit():
      out['n_windows'] = int(value)
    elif tag == 's' and value.isdigit():
      out['steps_per_loop'] = int(value)
    elif tag == 'k' and len(value.split('x')) in (3, 4):
      out['decode_kernel'] = value.replace('x', ':')
    elif tag == 'e' and value in DECODE_STEP_KERNELS:
      out['decode_step_kernels'] = value
    elif tag == 'x' and value in XLA_PRESETS:
      out['xla_options'].update(XLA_PRESETS[value])
    else:
      raise ValueError(f'--variants: cannot read {part!r} in {spec!r} (expected wN, sN, '
                       f'kBLOCKxWARPSxSTAGES, eauto / epallas / exla, or x followed by one '
                       f'of {sorted(XLA_PRESETS)})')
  return out


def bench_inputs(cfg, batch: int, prompt_len: int):
  """(random params, [batch, prompt_len] random prompts, their lengths): the benchmark's
  fixed inputs (seeds 0 and 1)."""
  from ttc_jax.model import transformer
  params = transformer.init_params(cfg, jax.random.key(0))
  prompts = np.asarray(jax.random.randint(jax.random.key(1), (batch, prompt_len), 3,
                                          cfg.vocab_size), np.int32)
  return params, prompts, np.full((batch,), prompt_len, np.int32)


def bench_jax(cfg, batch: int, prompt_len: int, new_tokens: int, reps: int,
              n_windows: int, trace_dir: str | None = None, steps_per_loop: int = 0,
              xla_options: dict | None = None, mesh=None) -> dict:
  """One shape through the Sampler (rows sharded over mesh's 'data' axis when given)."""
  from ttc_jax.model import transformer
  from ttc_jax.sample.decode import Sampler
  params, prompts, lengths = bench_inputs(cfg, batch, prompt_len)
  sampler = Sampler(cfg, eos_id=-1, n_windows=n_windows, steps_per_loop=steps_per_loop,
                    compiler_options=xla_options or None, mesh=mesh)
  cache_len = prompt_len + new_tokens

  def start(seed):
    return sampler.start(params, prompts, lengths, jax.random.key(seed), n_samples=1,
                         cache_len=cache_len, temperature=1.0, max_new_tokens=new_tokens)

  t = time.perf_counter()
  state = sampler.generate(params, start(0))
  jax.block_until_ready(state.lengths_B)
  first_call = time.perf_counter() - t
  n_gen = np.asarray(state.n_generated_B)
  assert (n_gen == new_tokens).all(), (n_gen.min(), n_gen.max())
  prefill_s = _time(lambda: jax.block_until_ready(start(1).lengths_B), reps)
  decode = []
  for r in range(reps):
    st = start(2 + r)
    jax.block_until_ready(st)
    t = time.perf_counter()
    jax.block_until_ready(sampler.generate(params, st).lengths_B)
    decode.append(time.perf_counter() - t)
  decode_s = min(decode)
  if trace_dir:
    # One more decode under the profiler (a Perfetto trace: kernel names and durations).
    st = start(99)
    jax.block_until_ready(st)
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      jax.block_until_ready(sampler.generate(params, st).lengths_B)
  tokens = batch * new_tokens
  windows = sampler.windows(transformer.cache_slots(state.cache))
  return {'n_windows': len(windows), 'windows': windows,
          'steps_per_loop': sampler.steps_per_loop,
          'decode_attention_used': transformer.decode_attention_kind(sampler.config),
          'compile_and_first_call_s': first_call,
          'compile_s': first_call - decode_s - prefill_s,
          'prefill_s': prefill_s, 'decode_s': decode_s, 'decode_step_ms': 1e3 * decode_s /
          new_tokens, 'decode_tokens_per_s': tokens / decode_s,
          'end_to_end_tokens_per_s': tokens / (decode_s + prefill_s)}


def bench_hf(cfg, batch: int, prompt_len: int, new_tokens: int, family: str = 'llama') -> dict:
  """The same shape through Hugging Face generate (random weights, bf16, sampling)."""
  import torch
  import transformers
  common = dict(
      vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
      num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
      num_key_value_heads=cfg.n_kv_heads,
      max_position_embeddings=prompt_len + new_tokens, tie_word_embeddings=cfg.tie_embeddings,
      pad_token_id=0, bos_token_id=1, eos_token_id=2)
  if family == 'qwen2':
    hf_cfg = transformers.Qwen2Config(**common)
    model = transformers.Qwen2ForCausalLM(hf_cfg)
  else:
    hf_cfg = transformers.LlamaConfig(head_dim=cfg.head_dim, **common)
    model = transformers.LlamaForCausalLM(hf_cfg)
  model = model.to(device='cuda', dtype=torch.bfloat16).eval()
  ids = torch.randint(3, cfg.vocab_size, (batch, prompt_len), device='cuda')
  kw = dict(do_sample=True, min_new_tokens=new_tokens, max_new_tokens=new_tokens,
            temperature=1.0, top_k=0, top_p=1.0, pad_token_id=0)
  with torch.no_grad():
    model.generate(ids[:, :prompt_len], **{**kw, 'min_new_tokens': 4, 'max_new_tokens': 4})
    torch.cuda.synchronize()
    t = time.perf_counter()
    out = model.generate(ids, **kw)
    torch.cuda.synchronize()
    sec = time.perf_counter() - t
  assert out.shape[1] == prompt_len + new_tokens, out.shape
  del model
  torch.cuda.empty_cache()
  return {'hf_seconds': sec, 'hf_tokens_per_s': batch * new_tokens / sec,
          'transformers': transformers.__version__, 'torch': torch.__version__}


def main(argv=None) -> dict:
  from ttc_jax import io
  from ttc_jax.model.config import ModelConfig
  ap = argparse.ArgumentParser(prog='ttc bench sampling', description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument('--name', default='')
  ap.add_argument('--d-model', type=int, default=256)
  ap.add_argument('--layers', type=int, default=4)
  ap.add_argument('--heads', type=int, default=4)
  ap.add_argument('--kv-heads', type=int, default=None, help='default: --heads')
  ap.add_argument('--head-dim', type=int, default=64)
  ap.add_argument('--d-ff', type=int, default=1024)
  ap.add_argument('--vocab', type=int, default=128)
  ap.add_argument('--batch', default='4096', help='comma-separated batch sizes')
  ap.add_argument('--prompt-len', type=int, default=32)
  ap.add_argument('--new-tokens', type=int, default=96)
  ap.add_argument('--dtype', default='bfloat16')
  ap.add_argument('--reps', type=int, default=3)
  ap.add_argument('--n-windows', type=int, default=0, help='0: the sampler default')
  ap.add_argument('--family', default='llama', choices=('llama', 'qwen2'),
                  help='qwen2: q/k/v biases and tied embeddings (e.g. the Qwen2.5-0.5B shape)')
  ap.add_argument('--variants', default='auto:1',
                  help='comma-separated decode variants timed side by side, each '
                       "'attn:unroll[:wN][:sN][:kBLOCKxWARPSxSTAGES][:eKIND][:xPRESET]' "
                       '(see parse_variant), e.g. auto:1,reduce:0,pallas:1:s4:k64x4x2,'
                       'auto:1:exla,auto:1:xnocb')
  ap.add_argument('--trace', default=None,
                  help='directory for Perfetto traces of one decode per variant')
  ap.add_argument('--hf', action='store_true', help='also time HF generate (torch, CUDA)')
  ap.add_argument('--out', default='bench_sampling.json')
  args = ap.parse_args(argv)
  cfg = ModelConfig(vocab_size=args.vocab, d_model=args.d_model, n_layers=args.layers,
                    n_heads=args.heads, n_kv_heads=args.kv_heads or args.heads,
                    head_dim=args.head_dim, d_ff=args.d_ff,
                    max_len=args.prompt_len + args.new_tokens,
                    tie_embeddings=args.family == 'qwen2', qkv_bias=args.family == 'qwen2',
                    dtype=args.dtype, param_dtype=args.dtype, name=args.name).validate()
  bandwidth, flop_rate = measure_bandwidth(), measure_matmul_rate()
  result = {'name': args.name, 'config': vars(args), 'device': str(jax.devices()[0]),
            'jax': jax.__version__, 'bandwidth_bytes_per_s': bandwidth,
            'matmul_flops_per_s': flop_rate, 'runs': []}
  print(f'{args.name}: bandwidth {bandwidth / 1e12:.2f} TB/s, matmul '
        f'{flop_rate / 1e12:.0f} TFLOP/s', flush=True)
  variants = [(v, parse_variant(v)) for v in args.variants.split(',')]
  for batch in [int(b) for b in args.batch.split(',')]:
    roof = roofline_seconds(cfg, batch, args.prompt_len, args.new_tokens, bandwidth, flop_rate)
    for i, (spec, var) in enumerate(variants):
      vcfg = dataclasses.replace(cfg, decode_attention=var['decode_attention'],
                                 decode_unroll=var['decode_unroll'],
                                 decode_kernel=var['decode_kernel'],
                                 decode_step_kernels=var['decode_step_kernels']).validate()
      trace = (os.path.join(args.trace, f'{args.name}_{batch}' + (f'_v{i}' if i else ''))
               if args.trace else None)
      try:
        timed = bench_jax(vcfg, batch, args.prompt_len, args.new_tokens, args.reps,
                          var['n_windows'] or args.n_windows, trace, var['steps_per_loop'],
                          var['xla_options'])
      except Exception as e:  # e.g. XLA options this jaxlib rejects: record, time the rest
        run = {'batch': batch, 'variant': spec, 'error': f'{type(e).__name__}: {e}'[:500]}
        result['runs'].append(run)
        print(json.dumps(run), flush=True)
        continue
      run = {'batch': batch, 'variant': spec, **var, **timed}
      run.update(roof)
      run['roofline_tokens_per_s'] = batch * args.new_tokens / roof['roofline_s']
      run['fraction_of_roofline'] = roof['roofline_s'] / run['decode_s']
      result['runs'].append(run)
      print(json.dumps(run), flush=True)
    if args.hf:
      try:
        hf = bench_hf(cfg, batch, args.prompt_len, args.new_tokens, args.family)
      except Exception as e:  # the comparison is optional: record why it did not run
        hf = {'hf_error': f'{type(e).__name__}: {e}'[:500]}
      result['runs'].append({'batch': batch, **hf})
      print(json.dumps({'batch': batch, **hf}), flush=True)
  io.write_json(args.out, result)
  return result


if __name__ == '__main__':
  main()
