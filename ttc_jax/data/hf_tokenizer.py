"""A Hugging Face `tokenizer.json` behind our `Tokenizer` protocol (offline, `tokenizers` only).

  tok = load_tokenizer('/ckpts/Qwen2.5-0.5B')   # a model dir, or an import_hf output dir

Special ids come from tokenizer_config.json (bos_token / eos_token / pad_token, as strings
or {'content': ...}), else special_tokens_map.json, else config.json's *_token_id. A model
without a pad token pads with EOS; one without BOS (Qwen2) gets `add_bos` False and bos_id =
EOS, so prompts are built exactly as the model was trained (see `add_bos`).

`encode` adds no special tokens (the stages add BOS themselves, as with CharTokenizer);
`decode` stops at the first EOS and drops special tokens. `step_ids` are the ids whose text
contains a newline: emitting one ends a reasoning step (a token such as '.\\n\\n' both ends a
line and carries the next step's start, so the step boundary falls inside it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np


def _token_str(v) -> str | None:
  if isinstance(v, dict):
    return v.get('content')
  return v if isinstance(v, str) else None


def _first_id(v) -> int | None:
  if isinstance(v, (list, tuple)):
    return int(v[0]) if v else None
  return None if v is None else int(v)


class HFTokenizer:
  """`Tokenizer` protocol over `tokenizers.Tokenizer`; build with `load_tokenizer`."""

  def __init__(self, tok, *, bos_id: int | None, eos_id: int, pad_id: int | None,
               vocab_size: int | None = None, add_bos: bool | None = None, name: str = ''):
    self._tok = tok
    self.name = name
    self.eos_id = int(eos_id)
    # No BOS (Qwen2): the model never saw one, so prompts start with their first text token.
    self.add_bos = bos_id is not None if add_bos is None else bool(add_bos)
    self.bos_id = int(bos_id) if bos_id is not None else self.eos_id
    self.pad_id = int(pad_id) if pad_id is not None else self.eos_id
    # The model's embedding may have more rows than the tokenizer has tokens (padding).
    self.vocab_size = int(vocab_size or tok.get_vocab_size(with_added_tokens=True))
    n = tok.get_vocab_size(with_added_tokens=True)
    special = {int(t) for t in self._special_ids()}
    pieces = tok.decode_batch([[i] for i in range(n)], skip_special_tokens=False)
    self.step_ids = tuple(i for i, s in enumerate(pieces) if '\n' in s and i not in special)
    self._special = frozenset(special)

  def _special_ids(self) -> list[int]:
    added = self._tok.get_added_tokens_decoder()
    return [i for i, t in added.items() if t.special]

  def encode(self, text: str) -> list[int]:
    return list(self._tok.encode(text, add_special_tokens=False).ids)

  def decode(self, ids: Sequence[int]) -> str:
    ids = np.asarray(ids).astype(np.int64).tolist()
    if self.eos_id in ids:
      ids = ids[:ids.index(self.eos_id)]
    return self._tok.decode([i for i in ids if i != self.pad_id and i not in self._special],
                            skip_special_tokens=True)

  def __repr__(self) -> str:
    return (f'HFTokenizer({self.name!r}, vocab_size={self.vocab_size}, bos_id={self.bos_id}, '
            f'eos_id={self.eos_id}, pad_id={self.pad_id}, add_bos={self.add_bos}, '
            f'{len(self.step_ids)} step ids)')


def load_tokenizer(path: str | Path, vocab_size: int | None = None) -> HFTokenizer:
  """The tokenizer of a Hugging Face model directory or of an `import_hf` output directory
  (which keeps the files under tokenizer/). vocab_size: the model's (default: config.json's
  vocab_size when present, else the tokenizer's)."""
  import tokenizers   # only needed for real models

  path = Path(path)
  if (path / 'tokenizer' / 'tokenizer.json').exists():
    path = path / 'tokenizer'
  if not (path / 'tokenizer.json').exists():
    raise FileNotFoundError(f'{path} has no tokenizer.json (only fast tokenizers are '
                            f'supported: convert a sentencepiece model with transformers once).')
  tok = tokenizers.Tokenizer.from_file(str(path / 'tokenizer.json'))

  def read(name):
    return json.loads((path / name).read_text()) if (path / name).exists() else {}

  tcfg, smap, mcfg, gcfg = (read('tokenizer_config.json'), read('special_tokens_map.json'),
                            read('config.json'), read('generation_config.json'))

  def special(kind: str) -> int | None:
    for source in (tcfg, smap):
      s = _token_str(source.get(f'{kind}_token'))
      if s is not None:
        i = tok.token_to_id(s)
        if i is None:
          raise ValueError(f'{path}: {kind}_token {s!r} is not in tokenizer.json.')
        return i
    for source in (gcfg, mcfg):
      i = _first_id(source.get(f'{kind}_token_id'))
      if i is not None:
        return i
    return None

  eos = special('eos')
  if eos is None:
    raise ValueError(f'{path}: no eos_token in tokenizer_config.json / special_tokens_map.json '
                     f'and no eos_token_id in config.json: cannot tell where a solution ends.')
  bos = special('bos')
  # The tokenizer's own post-processor says whether the model expects BOS (Llama, Gemma) or
  # not (Qwen2, whose config.json still names a bos_token_id).
  probe = tok.encode('a', add_special_tokens=True).ids
  add_bos = bos is not None and bool(probe) and probe[0] == bos
  if bos is not None and not add_bos and _token_str(tcfg.get('bos_token')) is not None:
    add_bos = bool(tcfg.get('add_bos_token', True))
  return HFTokenizer(tok, bos_id=bos, eos_id=eos, pad_id=special('pad'),
                     vocab_size=vocab_size or mcfg.get('vocab_size'), add_bos=add_bos,
                     name=path.name)
