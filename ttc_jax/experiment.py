"""The experiment's frozen config: every section a user can set, and the cross-checks between
sections. Built from a ConfigDict only by `ttc_jax.configlib.to_dataclass`."""

from __future__ import annotations

import dataclasses

from ttc_jax.data.arith import ArithTaskConfig
from ttc_jax.data.math_tasks import MathTaskConfig
from ttc_jax.model.config import LADDER_NAMES, ConfigError, ModelConfig, ladder
from ttc_jax.sharding import MeshConfig
from ttc_jax.train.loop import TrainConfig
from ttc_jax.revise.model import RevisionConfig
from ttc_jax.verify.train_verifier import VerifierConfig


@dataclasses.dataclass(frozen=True)
class TaskConfig:
  """kind: 'arith' (the embedded task, its own character tokenizer) or 'math' / 'gsm8k'
  (MATH-500 / GSM8K with the imported policy's tokenizer; settings in `math`)."""
  kind: str = 'arith'
  arith: ArithTaskConfig = ArithTaskConfig()
  math: MathTaskConfig = MathTaskConfig()

  def validate(self, key: str = 'task') -> 'TaskConfig':
    if self.kind not in ('arith', 'math', 'gsm8k'):
      raise ConfigError(f"{key}.kind must be 'arith', 'math' or 'gsm8k', got {self.kind!r}.")
    if self.kind != 'arith' and self.math.kind != self.kind:
      raise ConfigError(f'{key}.math.kind={self.math.kind!r} must equal {key}.kind='
                        f'{self.kind!r}.')
    return self

  def build(self, tokenizer=None):
    """The task object; MATH/GSM8K need the policy's tokenizer."""
    if self.kind == 'arith':
      from ttc_jax.data.arith import ArithTask
      return ArithTask(self.arith)
    from ttc_jax.data.math_tasks import MathTask
    return MathTask(self.math, tokenizer)


@dataclasses.dataclass(frozen=True)
class FamilyConfig:
  """The pretrained family: rungs of `model.config.ladder`, ~4x non-embedding params apart.

  members: which rungs to train, by name (xs, s, m, l, xl, xxl).
  from_run: a run directory whose pretrained members are used instead of training them (the
    checkpoint ablation path); empty to pretrain here.
  import_from: a directory written by `ttc import-hf`: the family is then that one model,
    named 'imported' (members must be ('imported',)); its config comes from the import,
    with dtype and, when positive, max_len overriding it. Nothing is pretrained.
  """
  members: tuple[str, ...] = ('xs', 's', 'm')
  base_width: int = 32
  base_layers: int = 2
  growth: str = 'balanced'     # 'balanced' (width and depth) or 'width' (fixed depth)
  head_dim: int = 16
  vocab_size: int = 32
  max_len: int = 64
  dtype: str = 'float32'
  param_dtype: str = 'float32'
  from_run: str = ''
  import_from: str = ''
  attention_impl: str = 'xla'    # full-pass attention kernel (ModelConfig.attention_impl)
  # Cached decoding (ModelConfig.decode_attention / decode_kernel / decode_step_kernels):
  # 'auto' is the Pallas kernels on a GPU and XLA elsewhere; none changes any stage's outputs
  # beyond float rounding.
  decode_attention: str = 'auto'
  decode_kernel: str = ''
  decode_step_kernels: str = 'auto'

  def validate(self, key: str = 'family') -> 'FamilyConfig':
    if self.import_from:
      if tuple(self.members) != ('imported',):
        raise ConfigError(f"{key}.members must be ('imported',) with {key}.import_from set, "
                          f'got {self.members!r}.')
      self.models()
      return self
    if not self.members:
      raise ConfigError(f'{key}.members must name at least one rung of {LADDER_NAMES}.')
    for m in self.members:
      if m not in LADDER_NAMES:
        raise ConfigError(f'{key}.members has {m!r}; valid names are {LADDER_NAMES}.')
    if len(set(self.members)) != len(self.members):
      raise ConfigError(f'{key}.members repeats a name: {self.members!r}.')
    for f in ('base_width', 'base_layers', 'head_dim', 'vocab_size', 'max_len'):
      if getattr(self, f) <= 0:
        raise ConfigError(f'{key}.{f} must be positive, got {getattr(self, f)!r}.')
    if self.base_width % self.head_dim:
      raise ConfigError(f'{key}.base_width={self.base_width} must be a multiple of '
                        f'{key}.head_dim={self.head_dim}.')
    self.models()  # validates each ModelConfig
    return self

  def models(self) -> tuple[ModelConfig, ...]:
    """The selected members, smallest first."""
    decode = {'decode_attention': self.decode_attention, 'decode_kernel': self.decode_kernel,
              'decode_step_kernels': self.decode_step_kernels}
    if self.import_from:
      from ttc_jax.model.hf_import import imported_config
      over = {'dtype': self.dtype, **({'max_len': self.max_len} if self.max_len > 0 else {})}
      return (dataclasses.replace(imported_config(self.import_from, **over), name='imported',
                                  **decode).validate('family'),)
    n = max(LADDER_NAMES.index(m) for m in self.members) + 1
    rungs = ladder(self.base_width, self.base_layers, n=n, vocab_size=self.vocab_size,
                   max_len=self.max_len, head_dim=self.head_dim, growth=self.growth,
                   dtype=self.dtype, param_dtype=self.param_dtype,
                   attention_impl=self.attention_impl)
    return tuple(dataclasses.replace(r, **decode).validate('family') for r in rungs
                 if r.name in self.members)


@dataclasses.dataclass(frozen=True)
class PretrainConfig(TrainConfig):
  loss_on_prompt: bool = False
  # True: several examples per row with a segment mask; False: one example per row and the
  # unmasked causal pass (the fused attention path with family.attention_impl='cudnn').
  pack: bool = True
  # True: the train step unrolls the layer loop (no while loop in the backward). On an H200
  # this took a step of the 17-layer member from 147 to 111 ms and of a 12-layer 113M model
  # from 85 to 64 ms, for a longer compile (experiments/bench_train.md).
  unroll_layers: bool = True
  eval_problems: int = 200       # held-out test problems for greedy accuracy after training
  eval_batch: int = 256
  peak_flops: float = 0.0        # the device's peak FLOP/s, for MFU in metrics (0: unknown;
                                 # `ttc bench train` measures it)


@dataclasses.dataclass(frozen=True)
class SampleBankConfig:
  """N samples per test problem from each family member (the input of curves and bins).

  n_samples: samples per problem (paper: 2048 for difficulty); problems: test problems used
  (0 = the whole test split); max_new_tokens: 0 = the task's longest solution.
  """
  n_samples: int = 64
  problems: int = 0
  temperature: float = 1.0
  top_p: float = 1.0
  top_k: int = 0
  max_new_tokens: int = 0
  batch_size: int = 2048
  members: tuple[str, ...] = ()   # () = every family member

  def validate(self, key: str = 'sample_bank') -> 'SampleBankConfig':
    if self.n_samples <= 0:
      raise ConfigError(f'{key}.n_samples must be positive, got {self.n_samples}.')
    if self.problems < 0 or self.max_new_tokens < 0 or self.top_k < 0:
      raise ConfigError(f'{key}.problems, {key}.max_new_tokens and {key}.top_k must be >= 0.')
    if self.temperature < 0:
      raise ConfigError(f'{key}.temperature must be >= 0 (0 = greedy), got {self.temperature}.')
    if not 0 < self.top_p <= 1:
      raise ConfigError(f'{key}.top_p must lie in (0, 1], got {self.top_p}.')
    if self.batch_size <= 0:
      raise ConfigError(f'{key}.batch_size must be positive, got {self.batch_size}.')
    return self


@dataclasses.dataclass(frozen=True)
class TrainBankConfig:
  """Samples of the policy on TRAINING problems: the solutions the PRM labels and the ORM
  learns from (paper: 16 per problem)."""
  problems: int = 0           # 0 = the whole train split
  n_samples: int = 16
  temperature: float = 1.0
  batch_size: int = 2048

  def validate(self, key: str = 'train_bank') -> 'TrainBankConfig':
    if self.problems < 0 or self.n_samples <= 0 or self.batch_size <= 0:
      raise ConfigError(f'{key}.problems must be >= 0 and {key}.n_samples, {key}.batch_size '
                        'positive.')
    if self.temperature < 0:
      raise ConfigError(f'{key}.temperature must be >= 0, got {self.temperature}.')
    return self


@dataclasses.dataclass(frozen=True)
class SearchConfig:
  """The search sweep: methods x budgets (x widths, x lookahead k) on the test problems.

  methods: from best_of_n, majority_vote, best_of_n_weighted, beam, lookahead, dvts.
  widths: beam/DVTS widths M, each an integer or 'sqrt' (the paper sweeps sqrt(N) and 4);
    combinations with M > N or N not divisible by M are skipped.
  lookahead_k: k values for lookahead (budgets not divisible by k + 1 are skipped).
  problems: test problems searched (0 = the bank's). max_rounds (paper: 40) and
  max_step_tokens bound the cache: prompt + rounds x step tokens must fit family.max_len.
  prm_from: search with the PRM checkpoint of another run (an ablation from checkpoints);
  it must match this run's policy vocabulary and tokenizer.
  """
  methods: tuple[str, ...] = ('best_of_n', 'majority_vote', 'best_of_n_weighted', 'beam',
                              'lookahead', 'dvts')
  budgets: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
  widths: tuple[str, ...] = ('sqrt', '4')
  lookahead_k: tuple[int, ...] = (1, 3)
  problems: int = 0
  max_rounds: int = 40
  max_step_tokens: int = 16
  temperature: float = 1.0
  batch_problems: int = 64
  # At most this many rows (problems x N samples or beams) searched at once: fewer problems
  # per batch at large N. Scoring whole solutions at once holds [rows, heads, T, S] float32
  # logits: 25,600 rows took 36 GB (arith_study:runlocal at N = 256). 0: no cap.
  max_rows: int = 16384
  prm_from: str = ''      # a PRM workdir (e.g. runs/other/prm) instead of this run's PRM

  def validate(self, key: str = 'search') -> 'SearchConfig':
    known = ('best_of_n', 'majority_vote', 'best_of_n_weighted', 'beam', 'lookahead', 'dvts')
    for m in self.methods:
      if m not in known:
        raise ConfigError(f'{key}.methods has {m!r}; known methods: {known}.')
    if not self.budgets or any(b < 1 for b in self.budgets):
      raise ConfigError(f'{key}.budgets must be positive generation counts, got '
                        f'{self.budgets}.')
    for w in self.widths:
      if w != 'sqrt' and not (w.isdigit() and int(w) >= 1):
        raise ConfigError(f"{key}.widths entries must be 'sqrt' or a positive integer, got "
                          f'{w!r}.')
    if any(k < 0 for k in self.lookahead_k):
      raise ConfigError(f'{key}.lookahead_k must be >= 0, got {self.lookahead_k}.')
    for f in ('max_rounds', 'max_step_tokens', 'batch_problems'):
      if getattr(self, f) < 1:
        raise ConfigError(f'{key}.{f} must be positive, got {getattr(self, f)}.')
    if self.problems < 0 or self.temperature < 0 or self.max_rows < 0:
      raise ConfigError(f'{key}.problems, {key}.temperature and {key}.max_rows must be >= 0.')
    return self

  def grid(self) -> list[tuple[str, int, str | None, int]]:
    """Valid (method, budget, width, k) combinations in run order. Lookahead runs at the
    first listed width; a width equal to another at some budget ('sqrt' of 16 is 4) runs
    once; M > N, N not divisible by M and single-subtree DVTS (M = N) are skipped."""
    from ttc_jax.search.run import sqrt_width
    out, seen = [], set()
    for method in self.methods:
      for b in self.budgets:
        if method in ('beam', 'dvts'):
          cands = [(w, 0, b) for w in self.widths]
        elif method == 'lookahead':
          cands = [(self.widths[0], k, b // (k + 1)) for k in self.lookahead_k
                   if b % (k + 1) == 0]
        else:
          out.append((method, b, None, 0))
          continue
        for w, k, n in cands:
          m = sqrt_width(n) if w == 'sqrt' else int(w)
          if m > n or n % m or (method == 'dvts' and m == n) or (method, b, m, k) in seen:
            continue
          seen.add((method, b, m, k))
          out.append((method, b, w, k))
    return out


@dataclasses.dataclass(frozen=True)
class AnalysisConfig:
  """Difficulty bins, compute-optimal selection and the FLOPs-matched comparison.

  big_member: the larger model of the FLOPs-matched comparison ('' = the largest member).
  """
  n_bins: int = 5
  big_member: str = ''

  def validate(self, key: str = 'analysis') -> 'AnalysisConfig':
    if self.n_bins < 1:
      raise ConfigError(f'{key}.n_bins must be >= 1, got {self.n_bins}.')
    return self


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  name: str = 'run'
  seed: int = 0
  workdir: str = 'runs'
  task: TaskConfig = TaskConfig()
  family: FamilyConfig = FamilyConfig()
  pretrain: PretrainConfig = PretrainConfig()
  sample_bank: SampleBankConfig = SampleBankConfig()
  policy: str = ''                # the member that spends test-time compute ('' = smallest)
  train_bank: TrainBankConfig = TrainBankConfig()
  prm: VerifierConfig = VerifierConfig(kind='prm')
  orm: VerifierConfig = VerifierConfig(kind='orm')
  search: SearchConfig = SearchConfig()
  revisions: RevisionConfig = RevisionConfig()
  analysis: AnalysisConfig = AnalysisConfig()
  mesh: MeshConfig = MeshConfig()

  def validate(self) -> 'ExperimentConfig':
    if not self.name or '/' in self.name:
      raise ConfigError(f'name must be a non-empty folder name, got {self.name!r}.')
    task = build_task(self)
    vocab = task.tokenizer.vocab_size
    if self.family.import_from:
      model_vocab = self.family.models()[0].vocab_size
      if model_vocab < vocab:
        raise ConfigError(f'the imported policy ({self.family.import_from}) has vocab_size='
                          f'{model_vocab} but its tokenizer has {vocab} ids.')
    elif self.family.vocab_size != vocab:
      raise ConfigError(f'family.vocab_size={self.family.vocab_size} does not match the '
                        f'task tokenizer vocabulary ({vocab}); set family.vocab_size={vocab}.')
    need = task.max_text_len
    max_len = self.family.models()[0].max_len
    if need > max_len:
      raise ConfigError(f'the longest task text needs {need} tokens but family.max_len='
                        f'{max_len}; raise family.max_len to >= {need} or shorten '
                        'the task (task.arith.max_ops / max_value, task.math.max_new_tokens).')
    if self.family.import_from:
      pass   # nothing is pretrained: the pretrain section is unused
    elif self.pretrain.seq_len + 1 < need:
      raise ConfigError(f'pretrain.seq_len={self.pretrain.seq_len} cannot hold the longest '
                        f'task text ({need} tokens); set pretrain.seq_len >= {need - 1}.')
    elif self.pretrain.seq_len > self.family.max_len:
      raise ConfigError(f'pretrain.seq_len={self.pretrain.seq_len} exceeds family.max_len='
                        f'{self.family.max_len}.')
    for key, m in (('policy', self.policy), ('analysis.big_member', self.analysis.big_member),
                   ('prm.policy', self.prm.policy), ('orm.policy', self.orm.policy)):
      if m and m not in self.family.members:
        raise ConfigError(f'{key}={m!r} is not in family.members {self.family.members}.')
    if self.prm.kind != 'prm' or self.orm.kind != 'orm':
      raise ConfigError("prm.kind must be 'prm' and orm.kind 'orm'.")
    for m in self.sample_bank.members:
      if m not in self.family.members:
        raise ConfigError(f'sample_bank.members has {m!r}, which is not in family.members '
                          f'{self.family.members}.')
    if self.mesh.model <= 0 or (self.mesh.data != -1 and self.mesh.data <= 0):
      raise ConfigError(f'mesh.data={self.mesh.data} / mesh.model={self.mesh.model} must be '
                        'positive (mesh.data may be -1: all remaining devices).')
    return self


def policy_member(cfg: ExperimentConfig) -> str:
  """The member that spends test-time compute: config.policy, else the smallest member."""
  return cfg.policy or cfg.family.models()[0].name


def build_task(cfg: ExperimentConfig):
  """The task with the right tokenizer: the imported policy's for MATH/GSM8K."""
  if cfg.task.kind == 'arith':
    return cfg.task.build()
  if not cfg.family.import_from:
    raise ConfigError(f"task.kind={cfg.task.kind!r} needs family.import_from (a `ttc "
                      "import-hf` directory): its tokenizer reads the problems.")
  from ttc_jax.data.hf_tokenizer import load_tokenizer
  return cfg.task.build(load_tokenizer(cfg.family.import_from))
