"""The arithmetic task as a TFDS dataset ("ttc_arith"), for pipelines that read tfds/seqio.

Imports TensorFlow: import this module only where a tfds path runs (ttc_jax.data does not).
The builder materialises exactly what `arith.generate` returns, so the tfds path and the
direct path give identical problems for the same `ArithTaskConfig`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from ttc_jax.data import arith
from ttc_jax.data.problems import ProblemSet
from ttc_jax.data.tokenizer import CharTokenizer, Tokenizer


def _config_name(cfg: arith.ArithTaskConfig) -> str:
  # The name is a hash of every knob, so two configs never share a directory in data_dir.
  blob = json.dumps(dataclasses.asdict(cfg), sort_keys=True, default=list)
  return 'c' + hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclasses.dataclass(kw_only=True)
class ArithBuilderConfig(tfds.core.BuilderConfig):
  """A BuilderConfig carrying the task knobs; build with `ArithBuilderConfig.of(cfg)`."""
  task: arith.ArithTaskConfig = dataclasses.field(default_factory=arith.ArithTaskConfig)

  @classmethod
  def of(cls, cfg: arith.ArithTaskConfig) -> 'ArithBuilderConfig':
    cfg.validate()
    return cls(name=_config_name(cfg), description=repr(cfg), task=cfg)


class TtcArith(tfds.core.GeneratorBasedBuilder):
  """Multi-step left-to-right arithmetic problems with step-by-step solutions."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [ArithBuilderConfig.of(arith.ArithTaskConfig())]

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # tfds 4.9.10 resolves this through `importlib_resources`, a package this environment
    # lacks; the answer is simply this file (it has no checksums file next to it).
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'id': tfds.features.Text(),
            'question': tfds.features.Text(),
            'prompt': tfds.features.Text(),
            'solution': tfds.features.Text(),
            'answer': tfds.features.Text(),
            'n_ops': np.int32,
            'n_mul': np.int32,
            'max_abs_value': np.int32,
        }),
        supervised_keys=('prompt', 'solution'),
        description=__doc__)

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: problems come from the seeded generator.
    return {s: self._generate_examples(s) for s in arith.SPLITS}

  def _generate_examples(self, split):
    for p in arith.generate(self.builder_config.task, split):
      yield p.id, {'id': p.id, 'question': p.question, 'prompt': p.prompt,
                   'solution': p.solution, 'answer': p.answer, 'n_ops': p.n_ops,
                   'n_mul': p.n_mul, 'max_abs_value': p.max_abs_value}


def builder(cfg: arith.ArithTaskConfig | None = None, data_dir: str | None = None,
            prepare: bool = True) -> TtcArith:
  """The builder for `cfg` under `data_dir` (tfds default if None), prepared unless told not."""
  b = TtcArith(config=ArithBuilderConfig.of(cfg or arith.ArithTaskConfig()), data_dir=data_dir)
  if prepare:
    b.download_and_prepare()
  return b


def load_examples(cfg: arith.ArithTaskConfig, split: str, data_dir: str | None = None,
                  n: int | None = None) -> list[dict]:
  """The split's examples as python dicts (str values decoded), in generator order."""
  ds = builder(cfg, data_dir).as_dataset(split=split, shuffle_files=False)
  rows = []
  for ex in tfds.as_numpy(ds):
    rows.append({k: v.decode() if isinstance(v, bytes) else int(v) for k, v in ex.items()})
  # tfds writes examples in key-hash order; ids end in the zero-padded generator index.
  rows.sort(key=lambda r: r['id'])
  return rows if n is None else rows[:n]


def problem_set_from_tfds(cfg: arith.ArithTaskConfig, split: str, data_dir: str | None = None,
                          tokenizer: Tokenizer | None = None, n: int | None = None) -> ProblemSet:
  """Like `arith.problem_set`, but read back from the prepared tfds dataset."""
  rows = load_examples(cfg, split, data_dir, n)
  tokenizer = tokenizer or CharTokenizer()
  return ProblemSet.from_texts(
      [r['id'] for r in rows], [r['prompt'] for r in rows], [r['answer'] for r in rows],
      tokenizer, add_bos=True, questions=[r['question'] for r in rows],
      meta={'n_ops': np.asarray([r['n_ops'] for r in rows], np.int32),
            'n_mul': np.asarray([r['n_mul'] for r in rows], np.int32),
            'max_abs_value': np.asarray([r['max_abs_value'] for r in rows], np.int32),
            'max_operand': np.asarray([max(arith.parse_question(r['question'])[0])
                                       for r in rows], np.int32)})
