"""MATH-500 and GSM8K as TFDS datasets ("ttc_math", "ttc_gsm8k") read from a manual directory.

Imports TensorFlow: import this module only where a tfds path runs (ttc_jax.data does not).
Nothing is downloaded: the JSON-lines files (see `math_tasks` for names and fields) are read
from the manual directory, e.g.

  b = builder('math', manual_dir='/work/shared/data', data_dir='/tmp/tfds')
  ds = b.as_dataset(split='test')

Examples hold what `math_tasks.parse_record` returns, the solution already formatted one step
a line (`math_tasks.format_solution`), so the tfds path and the direct path agree.
"""

from __future__ import annotations

from pathlib import Path

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from ttc_jax.data import math_tasks
from ttc_jax.data.problems import ProblemSet
from ttc_jax.data.tokenizer import Tokenizer


class _MathBuilderBase(tfds.core.GeneratorBasedBuilder):
  """Shared by both builders; subclasses set KIND."""

  KIND = ''
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # As in tfds_arith: tfds would look this up through importlib_resources.
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=f'{self.KIND} problems with step-per-line solutions (ttc_jax).',
        features=tfds.features.FeaturesDict({
            'id': tfds.features.Text(),
            'index': np.int32,
            'question': tfds.features.Text(),
            'solution': tfds.features.Text(),
            'answer': tfds.features.Text(),
            'level': np.int32,
            'subject': tfds.features.Text(),
        }),
        supervised_keys=('question', 'solution'))

  def _split_generators(self, dl_manager):
    manual = Path(dl_manager.manual_dir)
    files = {s: manual / f for s, f in math_tasks.SPLIT_FILES[self.KIND].items()
             if (manual / f).exists()}
    if 'test' not in files:
      raise FileNotFoundError(
          f'{manual / math_tasks.SPLIT_FILES[self.KIND]["test"]} does not exist: '
          f'{self.MANUAL_DOWNLOAD_INSTRUCTIONS}')
    return {s: self._generate_examples(s, manual) for s in files}

  def _generate_examples(self, split, manual):
    for i, r in enumerate(math_tasks.load_records(self.KIND, split, manual)):
      yield f'{i:06d}', {'id': r['id'], 'index': i, 'question': r['question'],
                         'solution': math_tasks.format_solution(r['steps'], r['answer']),
                         'answer': r['answer'], 'level': r['level'], 'subject': r['subject']}


class TtcMath(_MathBuilderBase):
  """MATH, PRM800K split format (MATH-500 test; an optional math_train.jsonl)."""
  KIND = 'math'
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Put math500_test.jsonl (prm800k/math_splits/test.jsonl of openai/prm800k) and '
      'optionally math_train.jsonl in the manual directory.')


class TtcGsm8k(_MathBuilderBase):
  """GSM8K (test; an optional gsm8k_train.jsonl)."""
  KIND = 'gsm8k'
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Put gsm8k_test.jsonl (grade_school_math/data/test.jsonl of openai/grade-school-math) '
      'and optionally gsm8k_train.jsonl in the manual directory.')


BUILDERS = {'math': TtcMath, 'gsm8k': TtcGsm8k}


def builder(kind: str, manual_dir: str | Path | None = None, data_dir: str | None = None,
            prepare: bool = True) -> _MathBuilderBase:
  """The builder of `kind` ('math' or 'gsm8k'), prepared from `manual_dir` (default:
  math_tasks.default_data_dir()) under `data_dir` (tfds default if None)."""
  b = BUILDERS[kind](data_dir=data_dir)
  if prepare:
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(manual_dir or math_tasks.default_data_dir())))
  return b


def load_examples(kind: str, split: str, manual_dir=None, data_dir=None,
                  n: int | None = None) -> list[dict]:
  """The split's examples as python dicts, in file order."""
  ds = builder(kind, manual_dir, data_dir).as_dataset(split=split, shuffle_files=False)
  rows = [{k: v.decode() if isinstance(v, bytes) else int(v) for k, v in ex.items()}
          for ex in tfds.as_numpy(ds)]
  rows.sort(key=lambda r: r['index'])   # tfds stores examples in key-hash order
  return rows if n is None else rows[:n]


def problem_set_from_tfds(task: math_tasks.MathTask, split: str, manual_dir=None,
                          data_dir=None, n: int | None = None) -> ProblemSet:
  """Like `task.problem_set(split, n)`, but read back from the prepared tfds dataset."""
  rows = load_examples(task.kind, split, manual_dir or task.cfg.data_dir, data_dir, n)
  prefix = math_tasks.few_shot_prefix(task.kind, task.cfg.n_shots)
  tok: Tokenizer = task.tokenizer
  return ProblemSet.from_texts(
      [r['id'] for r in rows], [prefix + math_tasks.format_problem(r['question']) for r in rows],
      [r['answer'] for r in rows], tok, add_bos=getattr(tok, 'add_bos', True),
      questions=[r['question'] for r in rows],
      meta={'level': np.asarray([r['level'] for r in rows], np.int32),
            'subject': np.asarray([r['subject'] for r in rows], dtype=object).astype(str)})
