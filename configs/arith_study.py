"""The study at paper scale on the embedded arithmetic task, on one GPU.

  ttc run configs/arith_study.py                         # one H200, bf16
  ttc run configs/arith_study.py:runlocal                # the same graph, CPU-sized
  ttc run configs/arith_study.py --config.search.budgets=1,2,4,8,16,32,64,128,256
  ttc report runs/arith_study

Paper values: 500 test problems, 2048 samples per problem for difficulty, PRM labels from 16
solutions x 16 rollouts per step, budgets 1..256, beam widths sqrt(N) and 4, lookahead k = 1
and 3, revision ratios seq:par for every budget. Five members ~4x apart in non-embedding
parameters (xs is ~16x smaller than m, the FLOPs-matched comparison's pair). Stages resume,
so the run can be split into calls that each end within a time limit. The task is harder than
the quickstart's (2-10 operations, operands up to 20): in a GPU smoke run
(experiments/gpu_smoke_2026-11-29.md) the quickstart-sized task left even the 131K-parameter
member at 97% pass@1, with no room for test-time compute to show.

Measured on one H200 (experiments/gpu_study_2026-11-29d.md): these defaults run end to end in
1182 s of stage time (19.7 min): pretraining 385 s for the five members, sample bank 72 s
(1,024,000 samples), PRM 130 s, ORM 84 s, search 284 s (37 method x budget runs on 500
problems), revisions 203 s. To fit that budget the search grid steps by 4x (1, 4, 16, 64,
256), revisions run to N = 64, and the larger members train for fewer steps than xs; the
paper's grid is an override away (first line above; not timed).
"""

import ml_collections


def get_config(arg=None):
  local = arg == 'runlocal'
  c = ml_collections.ConfigDict()
  c.name = 'arith_study' if not local else 'arith_study-local'
  c.seed = 0
  c.workdir = 'runs'

  c.task = ml_collections.ConfigDict()
  c.task.kind = 'arith'
  c.task.arith = ml_collections.ConfigDict(dict(
      min_ops=2 if not local else 1, max_ops=10 if not local else 6, min_operand=1,
      max_operand=20 if not local else 9, ops='+-*', op_weights=(0.4, 0.4, 0.2),
      max_value=999, allow_negative=False,
      train_size=200_000 if not local else 5000, validation_size=500, test_size=500,
      seed=0))

  c.family = ml_collections.ConfigDict(dict(
      members=('xs', 's', 'm', 'l', 'xl') if not local else ('xs', 's', 'm'),
      base_width=64 if not local else 16, base_layers=2, growth='balanced', head_dim=16 if not local else 8,
      vocab_size=32, max_len=256, dtype='bfloat16' if not local else 'float32',
      param_dtype='float32', from_run='',
      decode_attention='auto', decode_kernel='',
      decode_step_kernels='auto'))   # 'auto': Pallas on a GPU, XLA on CPU

  c.pretrain = ml_collections.ConfigDict(dict(
      steps=(1500, 1000, 800, 600, 400) if not local else (100, 150, 200),
      batch_size=256, seq_len=255, lr=2e-3, warmup_steps=200, min_lr_ratio=0.1,
      weight_decay=0.1, b1=0.9, b2=0.95, eps=1e-8, clip_norm=1.0, log_every=100,
      ckpt_every=1000, max_to_keep=2, seed_offset=0, loss_on_prompt=False, pack=True,
      unroll_layers=not local,   # the GPU step is faster unrolled; CPU compiles it slower
      eval_problems=500, eval_batch=500,
      peak_flops=7.9e14))   # bf16 matmul peak measured on one H200 (experiments/)

  c.sample_bank = ml_collections.ConfigDict(dict(
      n_samples=2048 if not local else 32, problems=500 if not local else 50,
      temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=0, batch_size=65536,
      members=('xs',) if not local else ()))   # the policy's bank (difficulty, PRM curves)

  c.policy = 'xs'
  c.train_bank = ml_collections.ConfigDict(dict(
      problems=4096 if not local else 100, n_samples=16 if not local else 4, temperature=1.0,
      batch_size=65536))
  verifier = dict(
      policy='', checkpoint='', samples_per_problem=16 if not local else 4,
      rollouts=16 if not local else 4, n_problems=0, rollout_temperature=1.0,
      rollout_rows=65536, shard_problems=512, label='soft', lr=3e-4 if not local else 1e-3,
      batch_size=128, steps=600 if not local else 50, warmup_steps=100 if not local else 5,
      weight_decay=0.0, b1=0.9, b2=0.95, clip_norm=1.0, holdout_fraction=0.1,
      eval_every=200 if not local else 25, patience=3, ece_bins=10, seed=0)
  # PRM labels: 16 solutions x 16 rollouts per step on 512 training problems (~0.9M rollouts).
  c.prm = ml_collections.ConfigDict(dict(verifier, kind='prm', n_problems=512 if not local else 0))
  c.orm = ml_collections.ConfigDict(dict(verifier, kind='orm'))

  c.search = ml_collections.ConfigDict(dict(
      methods=('best_of_n', 'majority_vote', 'best_of_n_weighted', 'beam', 'lookahead',
               'dvts'),
      budgets=(1, 4, 16, 64, 256) if not local else (1, 2, 4, 8),
      widths=('sqrt', '4'), lookahead_k=(1, 3), problems=0, max_rounds=12,
      max_step_tokens=12, temperature=1.0, batch_problems=500 if not local else 50,
      max_rows=16384 if not local else 2048,
      prm_from=''))

  c.revisions = ml_collections.ConfigDict(dict(
      train_problems=512 if not local else 64, samples_per_problem=64 if not local else 8,
      sample_temperature=1.0, sample_batch=65536, max_incorrect=4, val_fraction=0.1,
      max_attempts=4, context_len=384, max_new_tokens=0, steps=300 if not local else 20,
      batch_size=64, lr=1e-3, warmup_steps=50 if not local else 2, min_lr_ratio=1.0,
      weight_decay=0.0, eval_every=100 if not local else 5, select='after_min', patience=1,
      orm_steps=200 if not local else 10, orm_lr=1e-3, orm_batch_size=64,
      orm_sequences_per_problem=16 if not local else 2, score_batch=4096, eval_split='test',
      eval_problems=500 if not local else 50, max_budget=64 if not local else 4,
      temperature=0.8, batch_rows=65536, decode_windows=8, seed=0))

  c.analysis = ml_collections.ConfigDict(dict(n_bins=5, big_member='m'))
  c.mesh = ml_collections.ConfigDict(dict(data=-1, model=1, fsdp=False))
  return c
