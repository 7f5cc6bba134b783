"""Search against a verifier: best-of-N, beam search, lookahead search, DVTS.

  df = run_search('beam', params, cfg, scorer, problems, budget=16, width=4, key=key,
                  max_step_tokens=16, cache_len=..., **task_kwargs(task))

Vectorised over problems x beams (rows p * N + j); one compiled extend / score / select per
round; each problem's randomness is keyed by its id. Every result row carries exact token
counts and FLOPs (see accounting.py); `RESULT_COLUMNS` is the layout the study writes.
"""

from ttc_jax.search.accounting import COST_COLUMNS, cost_columns, generations
from ttc_jax.search.beam import (MAX_ROUNDS, TreeResult, check_tree_settings, pick_answers,
                                 select_beam, select_dvts, tree_search)
from ttc_jax.search.best_of_n import BON_METHODS, best_of_n_from_bank, sample_and_score
from ttc_jax.search.dvts import dvts
from ttc_jax.search.run import (METHODS, RESULT_COLUMNS, TREE_METHODS, resolve, run_search,
                                sqrt_width, task_kwargs)
from ttc_jax.search.scorers import OracleScorer, PRMScorer, StepScorer
from ttc_jax.search.steps import Policy, problem_keys, row_keys
