"""Diverse verifier tree search (DVTS, as in huggingface/search-and-learn).

N/M independent subtrees per problem, each of M rows: every round, each live subtree expands
its one prefix with M sampled next steps and keeps the single best by PRM score (greedy); a
subtree whose best candidate finished (EOS or a cap) ends with that answer. The final pick is
best-of-N weighted over the N/M subtrees' answers (finished ones; unfinished only if none
finished by the round limit). Budget: N generations, as beam search.

It is the beam-search loop of `beam.tree_search` with groups of M slots instead of N: same
compiled extend / score / select per round, `beam.select_dvts` as the selection.
"""

from __future__ import annotations

from ttc_jax.data.problems import ProblemSet
from ttc_jax.data.tokenizer import Tokenizer
from ttc_jax.search import steps as steps_lib
from ttc_jax.search.beam import MAX_ROUNDS, TreeResult, tree_search
from ttc_jax.search.scorers import StepScorer


def dvts(policy: steps_lib.Policy, params, scorer: StepScorer, problems: ProblemSet,
         tokenizer: Tokenizer, *, n: int, m: int, key, max_rounds: int = MAX_ROUNDS,
         max_step_tokens: int, cache_len: int, temperature: float = 1.0) -> TreeResult:
  """DVTS with N rows per problem in N/M subtrees of width M (see `beam.tree_search`)."""
  return tree_search(policy, params, scorer, problems, tokenizer, n=n, m=m, key=key,
                     mode='dvts', max_rounds=max_rounds, max_step_tokens=max_step_tokens,
                     cache_len=cache_len, temperature=temperature)
