"""XLA's concurrent command buffers on the sampler (GPU): same samples, and what it costs in
memory.

  PYTHONPATH=. python3 experiments/gpu/conc_check.py

For issue 3's S/4096 and M/1024 shapes (random weights, bf16, prompt 32, 96 new tokens,
temperature 1): `generate` with the default options and with
xla_gpu_command_buffer_scheduling_mode=CONCURRENT from the same seed must write the same
tokens (the option only changes which kernels may overlap), and the decode function's
compiled temp / argument / output bytes are printed for both.
"""

import jax
import numpy as np

from ttc_jax.model import transformer
from ttc_jax.model.config import ModelConfig
from ttc_jax.sample.decode import Sampler

SHAPES = {'S': (256, 4, 4, 1024, 4096), 'M': (768, 12, 12, 3072, 1024)}
CONC = {'xla_gpu_command_buffer_scheduling_mode': 'CONCURRENT'}


def main():
  print(jax.devices()[0], flush=True)
  for name, (d, layers, heads, ff, batch) in SHAPES.items():
    cfg = ModelConfig(vocab_size=128, d_model=d, n_layers=layers, n_heads=heads,
                      n_kv_heads=heads, head_dim=64, d_ff=ff, max_len=128,
                      dtype='bfloat16', param_dtype='bfloat16').validate()
    params = transformer.init_params(cfg, jax.random.key(0))
    prompts = np.asarray(jax.random.randint(jax.random.key(1), (batch, 32), 3, 128), np.int32)
    outs = {}
    for label, opts in (('default', None), ('concurrent', CONC)):
      sampler = Sampler(cfg, eos_id=-1, compiler_options=opts)
      st = sampler.start(params, prompts, np.full((batch,), 32), jax.random.key(7),
                         cache_len=128, temperature=1.0, max_new_tokens=96)
      mem = None
      out = sampler.generate(params, st, donate=False)
      for k, f in sampler._jits.items():
        if k[0].startswith('decode'):
          mem = f.lower(params, st, None).compile().memory_analysis()
      outs[label] = np.asarray(out.tokens_BxS)
      print(f'{name} {label}: temp {mem.temp_size_in_bytes / 2**20:.0f} MiB, arguments '
            f'{mem.argument_size_in_bytes / 2**20:.0f} MiB, outputs '
            f'{mem.output_size_in_bytes / 2**20:.0f} MiB', flush=True)
    same = (outs['default'] == outs['concurrent'])
    print(f'{name}: concurrent writes the same tokens as default: {bool(same.all())} '
          f'({same.mean():.6f} of positions)', flush=True)


if __name__ == '__main__':
  main()
