"""The study on MATH-500 with an imported Hugging Face policy, sharded over a mesh.

  ttc import-hf /ckpts/Qwen2.5-1.5B runs/imported/qwen25-1p5b --param-dtype bfloat16
  ttc run configs/math_study.py --config.family.import_from=runs/imported/qwen25-1p5b
  ttc run configs/math_study.py:gsm8k,runlocal --config.family.import_from=...
  ttc report runs/math_study

task.kind 'math' | 'gsm8k' reads the problems with the imported policy's tokenizer;
`family.import_from` (a directory written by `ttc import-hf`) is the policy, and nothing is
pretrained. Multi-host: `ttc run --distributed ...` on every host.

Data: task.math.data_dir (default $TTC_DATA_DIR, else ../shared/data) holds
math500_test.jsonl (and gsm8k_test.jsonl); stages that train verifiers or the revision model
read the 'train' split, so put PRM800K's math_splits/train.jsonl there as math_train.jsonl
(not shipped). Paper values as in arith_study.py; max_step_tokens and max_new_tokens are in
the policy's tokens. Mesh: data=-1 uses every device (all hosts of a TPU slice) for rows;
raise model for policies that do not fit one device. Expected time: not yet measured.
"""

import ml_collections


def get_config(arg=None):
  args = set((arg or '').split(',')) - {''}
  local = 'runlocal' in args
  kind = 'gsm8k' if 'gsm8k' in args else 'math'
  c = ml_collections.ConfigDict()
  c.name = f'{kind}_study' + ('-local' if local else '')
  c.seed = 0
  c.workdir = 'runs'

  c.task = ml_collections.ConfigDict()
  c.task.kind = kind
  c.task.math = ml_collections.ConfigDict(dict(
      kind=kind, data_dir='', n_shots=4, max_new_tokens=1024 if not local else 256))

  # The policy: an `ttc import-hf` output directory (required). dtype: compute dtype.
  c.family = ml_collections.ConfigDict(dict(
      import_from='', members=('imported',), dtype='bfloat16' if not local else 'float32',
      max_len=0, decode_attention='auto', decode_kernel='',
      decode_step_kernels='auto'))   # 'auto': Pallas on a GPU
  c.policy = 'imported'

  c.sample_bank = ml_collections.ConfigDict(dict(
      n_samples=2048 if not local else 8, problems=500 if not local else 10,
      temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=1024 if not local else 256,
      batch_size=4096 if not local else 16, members=()))
  c.train_bank = ml_collections.ConfigDict(dict(
      problems=4096 if not local else 16, n_samples=16 if not local else 2, temperature=1.0,
      batch_size=4096 if not local else 16))
  verifier = dict(
      policy='', checkpoint='', samples_per_problem=16 if not local else 2,
      rollouts=16 if not local else 2, n_problems=0, rollout_temperature=1.0,
      rollout_rows=4096 if not local else 16, shard_problems=64, label='soft',
      lr=3e-5, batch_size=32, steps=2000 if not local else 10,
      warmup_steps=100 if not local else 2,
      weight_decay=0.0, b1=0.9, b2=0.95, clip_norm=1.0, holdout_fraction=0.1,
      eval_every=200 if not local else 5, patience=3, ece_bins=10, seed=0)
  c.prm = ml_collections.ConfigDict(dict(verifier, kind='prm'))
  c.orm = ml_collections.ConfigDict(dict(verifier, kind='orm'))

  c.search = ml_collections.ConfigDict(dict(
      methods=('best_of_n', 'majority_vote', 'best_of_n_weighted', 'beam', 'lookahead',
               'dvts'),
      budgets=(1, 2, 4, 8, 16, 32, 64, 128, 256) if not local else (1, 2, 4),
      widths=('sqrt', '4'), lookahead_k=(1, 3), problems=0, max_rounds=40,
      max_step_tokens=256, temperature=1.0, batch_problems=50 if not local else 4,
      max_rows=256 if not local else 64,   # long solutions: whole-solution scoring is [rows, heads, T, S]
      prm_from=''))

  # Revisions: the paper's recipe (64 samples per training problem, up to 4 earlier attempts
  # in context, chains up to N = 256); the context holds the prompt and 4 attempts.
  c.revisions = ml_collections.ConfigDict(dict(
      train_problems=2048 if not local else 8, samples_per_problem=64 if not local else 4,
      sample_temperature=1.0, sample_batch=4096 if not local else 16, max_incorrect=4,
      val_fraction=0.1, max_attempts=4, context_len=6144 if not local else 2048,
      max_new_tokens=1024 if not local else 256, steps=1500 if not local else 4,
      batch_size=16 if not local else 2, lr=1e-5, warmup_steps=50 if not local else 1,
      min_lr_ratio=1.0, weight_decay=0.0, eval_every=100 if not local else 2,
      select='after_min', patience=1, orm_steps=600 if not local else 2, orm_lr=1e-5,
      orm_batch_size=16 if not local else 2, orm_sequences_per_problem=16 if not local else 2,
      score_batch=256 if not local else 8, eval_split='test',
      eval_problems=500 if not local else 4, max_budget=256 if not local else 4,
      temperature=0.8, batch_rows=4096 if not local else 16, decode_windows=8, seed=0))

  c.analysis = ml_collections.ConfigDict(dict(n_bins=5, big_member=''))
  c.mesh = ml_collections.ConfigDict(dict(data=-1, model=1, fsdp=True))
  return c
