"""The revision model's context: the question, up to 4 earlier attempts, then the new attempt.

Format (every character is in `CharTokenizer`'s alphabet; the tokenizer adds BOS/EOS):

  'Q:7+5*3-4\\n'                              the task prompt, unchanged
  '7+5=12\\n12*3=35\\n35-4=31\\nA:31\\n;\\n'       earlier attempt 1, then the separator line ';'
  '7+5=12\\n12*3=36\\nA:36\\n;\\n'                earlier attempt 2, then ';'
  '7+5=12\\n12*3=36\\n36-4=32\\nA:32\\n'          the new attempt (the model writes it, then EOS)

An attempt is the decoded generated text of one solution. It normally ends with '\\n'; one that
does not (cut by a token cap) gets a '\\n' appended, so the separator is always a line of its
own: the task's solutions never contain ';', so the line ';' unambiguously ends an attempt. Only
the `max_attempts` (paper: 4) most recent earlier attempts are kept, oldest first.

Length rule (`fit_context`): BOS + context + `reserve` tokens must fit in `max_len` tokens,
where `reserve` is the room the new attempt needs (its EOS included). When it does not fit, the
OLDEST kept attempts are dropped one at a time until it does; the most recent attempt, which the
model revises, goes last. If even the bare prompt does not fit, `ContextTooLong` is raised,
naming the lengths, since no attempt can be dropped to make room.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ttc_jax.data.tokenizer import Tokenizer

SEPARATOR = ';\n'
MAX_ATTEMPTS = 4


class ContextTooLong(ValueError):
  """The prompt alone (with the reserved room for the new attempt) exceeds max_len."""


def attempt_block(attempt: str) -> str:
  """One earlier attempt as it appears in a context: its lines, then the separator line."""
  if not attempt.endswith('\n'):
    attempt = attempt + '\n'
  return attempt + SEPARATOR


def format_context(prompt: str, attempts: Sequence[str], max_attempts: int = MAX_ATTEMPTS) -> str:
  """The context text for a new attempt: prompt + the last `max_attempts` attempts, in order.

  No length rule is applied here (see `fit_context`).
  """
  kept = list(attempts)[-max_attempts:] if max_attempts > 0 else []
  return prompt + ''.join(attempt_block(a) for a in kept)


def fit_context(prompt: str, attempts: Sequence[str], tokenizer: Tokenizer, max_len: int,
                reserve: int, max_attempts: int = MAX_ATTEMPTS) -> tuple[str, int]:
  """The context text under the length rule, and how many earlier attempts it keeps.

  Args:
    prompt: the task prompt ('Q:...\\n').
    attempts: earlier attempts of the chain, oldest first (any number).
    max_len: the model's context in tokens (its cache length).
    reserve: tokens that must stay free after BOS + context (the new attempt and its EOS).
    max_attempts: keep at most this many of the most recent attempts.
  Returns:
    (context text, attempts kept), with 1 (BOS) + len(encode(text)) + reserve <= max_len.
  Raises:
    ContextTooLong: when BOS + prompt + reserve alone exceeds max_len.
  """
  n_prompt = 1 + len(tokenizer.encode(prompt))
  if n_prompt + reserve > max_len:
    raise ContextTooLong(
        f'BOS + prompt ({n_prompt} tokens) + {reserve} reserved tokens for the new attempt '
        f'exceed max_len={max_len}; raise revisions.context_len or lower '
        f'revisions.max_new_tokens.')
  kept = list(attempts)[-max_attempts:] if max_attempts > 0 else []
  sizes = [len(tokenizer.encode(attempt_block(a))) for a in kept]
  room = max_len - reserve - n_prompt
  # Drop from the oldest end: the newest attempt is the one being revised.
  drop = 0
  while drop < len(kept) and sum(sizes[drop:]) > room:
    drop += 1
  return format_context(prompt, kept[drop:], max_attempts), len(kept) - drop


def encode_contexts(prompts: Sequence[str], attempts: Sequence[Sequence[str]],
                    tokenizer: Tokenizer, max_len: int, reserve: int,
                    max_attempts: int = MAX_ATTEMPTS):
  """Batch form of `fit_context`, right-padded for the sampler.

  Returns:
    tokens_BxL: int32 [B, L] BOS + context, pad past the length (L = the longest row).
    lengths_B: int32 [B] tokens per row.
    kept_B: int32 [B] earlier attempts kept per row.
  """
  rows, kept = [], []
  for p, a in zip(prompts, attempts, strict=True):
    text, k = fit_context(p, a, tokenizer, max_len, reserve, max_attempts)
    rows.append([tokenizer.bos_id] + tokenizer.encode(text))
    kept.append(k)
  width = max((len(r) for r in rows), default=1)
  tokens_BxL = np.full((len(rows), width), tokenizer.pad_id, np.int32)
  for i, r in enumerate(rows):
    tokens_BxL[i, :len(r)] = r
  return (tokens_BxL, np.asarray([len(r) for r in rows], np.int32),
          np.asarray(kept, np.int32))
