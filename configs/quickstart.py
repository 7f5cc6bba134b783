"""The whole study on the embedded arithmetic task, on a laptop CPU.

  ttc run configs/quickstart.py            # 2 CPU cores, every stage, report included
  ttc stages runs/quickstart
  ttc report runs/quickstart

Three members 4x apart in non-embedding parameters (8K, 33K, 131K), greedy test accuracy
rising with size; the policy is s. Variant `:tiny` shrinks everything for smoke tests
(untrained models: plumbing only). Measured 2026-11-29 on 2 cores: 11 min 20 s for every
stage, revisions swept to N = 16, family pretraining 315 s; greedy accuracy xs 0.06,
s 0.125, m 0.88 (experiments/quickstart.md).
"""

import ml_collections


def get_config(arg=None):
  tiny = arg == 'tiny'
  c = ml_collections.ConfigDict()
  c.name = 'quickstart' if not tiny else 'quickstart-tiny'
  c.seed = 0
  c.workdir = 'runs'

  c.task = ml_collections.ConfigDict()
  c.task.kind = 'arith'
  c.task.arith = ml_collections.ConfigDict(dict(
      min_ops=1, max_ops=6, min_operand=1, max_operand=9, ops='+-*',
      op_weights=(0.45, 0.45, 0.1), max_value=99, allow_negative=False,
      train_size=20_000 if not tiny else 500, validation_size=200, test_size=500, seed=0))

  c.family = ml_collections.ConfigDict(dict(
      members=('xs', 's', 'm'), base_width=16, base_layers=2, growth='width', head_dim=8, vocab_size=32,
      max_len=256, dtype='float32', param_dtype='float32', from_run='',
      decode_attention='auto', decode_kernel='',
      decode_step_kernels='auto'))   # 'auto': Pallas on a GPU, XLA on CPU

  c.pretrain = ml_collections.ConfigDict(dict(
      steps=(400, 500, 500) if not tiny else (20,), batch_size=32, seq_len=255, lr=1e-2,
      warmup_steps=50, min_lr_ratio=0.1, weight_decay=0.1, b1=0.9, b2=0.95, eps=1e-8,
      clip_norm=1.0, log_every=50, ckpt_every=300, max_to_keep=2, seed_offset=0,
      loss_on_prompt=False, pack=True, unroll_layers=False,   # unrolled compiles slower on CPU
      eval_problems=200 if not tiny else 32, eval_batch=256, peak_flops=0.0))

  c.sample_bank = ml_collections.ConfigDict(dict(
      n_samples=64 if not tiny else 8, problems=200 if not tiny else 16, temperature=1.0,
      top_p=1.0, top_k=0, max_new_tokens=0, batch_size=4096, members=()))

  # The member that spends test-time compute. The paper pairs it with a ~14x larger model
  # (xs vs m here), but xs (8K parameters) learns almost nothing in a CPU minute; s is 4x
  # smaller than m, so the CPU quickstart's FLOPs-matched comparison uses M = 4.
  c.policy = 's'
  c.train_bank = ml_collections.ConfigDict(dict(
      problems=400 if not tiny else 16, n_samples=8 if not tiny else 4, temperature=1.0,
      batch_size=4096))
  verifier = dict(
      policy='', checkpoint='', samples_per_problem=8 if not tiny else 2,
      rollouts=8 if not tiny else 2, n_problems=0, rollout_temperature=1.0,
      rollout_rows=2048, shard_problems=100, label='soft', lr=1e-3,
      batch_size=64 if not tiny else 16, steps=200 if not tiny else 6, warmup_steps=20 if not tiny else 1,
      weight_decay=0.0, b1=0.9, b2=0.95, clip_norm=1.0, holdout_fraction=0.1,
      eval_every=100 if not tiny else 3, patience=0, ece_bins=10, seed=0)
  c.prm = ml_collections.ConfigDict(dict(verifier, kind='prm'))
  c.orm = ml_collections.ConfigDict(dict(verifier, kind='orm'))

  # Search (paper: budgets 1..256, 40 rounds): budgets to 16 on CPU.
  c.search = ml_collections.ConfigDict(dict(
      methods=('best_of_n', 'majority_vote', 'best_of_n_weighted', 'beam', 'lookahead',
               'dvts'),
      budgets=(1, 2, 4, 8, 16) if not tiny else (2, 4), widths=('sqrt', '4'),
      lookahead_k=(1, 3), problems=0, max_rounds=8, max_step_tokens=9, temperature=1.0,
      batch_problems=100 if not tiny else 8, max_rows=4096, prm_from=''))

  # Revisions (paper: 64 samples per problem, N up to 256): CPU-sized here.
  c.revisions = ml_collections.ConfigDict(dict(
      train_problems=256 if not tiny else 16, samples_per_problem=16 if not tiny else 4,
      sample_temperature=1.0, sample_batch=4096, max_incorrect=4, val_fraction=0.1,
      max_attempts=4, context_len=384, max_new_tokens=0, steps=200 if not tiny else 4,
      batch_size=32 if not tiny else 8, lr=1e-3, warmup_steps=20 if not tiny else 1,
      min_lr_ratio=1.0, weight_decay=0.0, eval_every=100 if not tiny else 2,
      select='after_min', patience=1, orm_steps=100 if not tiny else 2, orm_lr=1e-3,
      orm_batch_size=32 if not tiny else 8, orm_sequences_per_problem=8 if not tiny else 2,
      score_batch=256, eval_split='test', eval_problems=100 if not tiny else 8,
      max_budget=16 if not tiny else 4, temperature=0.8, batch_rows=2048, decode_windows=4,
      seed=0))

  c.analysis = ml_collections.ConfigDict(dict(n_bins=5, big_member='m'))

  c.mesh = ml_collections.ConfigDict(dict(data=-1, model=1, fsdp=False))
  return c
