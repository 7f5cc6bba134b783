"""Analysis: FLOPs accounting, accuracy estimators, difficulty bins, compute-optimal
selection and the FLOPs-matched comparison. Pure numpy/pandas; no accelerator needed.

  flops            TokenCounts, pretrain_flops, train_flops, inference_flops, xla_flops
  estimators       accuracy_curve (pass@1, pass@k, best, majority, weighted from a bank),
                   best_of_n_exact, subset_accuracy_exact, subset_accuracy_mc
  difficulty       oracle_bins, predicted_bins, quantile_bins
  compute_optimal  cross_validated_selection, compute_optimal_curve, efficiency_factor
  matched          matched_multiplier, matched_comparison, interp_log_budget
"""

from ttc_jax.analysis.compute_optimal import (assign_folds, compute_optimal_curve,
                                              cross_validated_selection, efficiency_factor)
from ttc_jax.analysis.difficulty import oracle_bins, predicted_bins, quantile_bins
from ttc_jax.analysis.estimators import (MCEstimate, accuracy_curve, best_of_n_exact,
                                         pass_at_1, pass_at_k, random_subsets,
                                         subset_accuracy_exact, subset_accuracy_mc)
from ttc_jax.analysis.flops import (CONVENTIONS, TokenCounts, causal_context_sum,
                                    inference_flops, pretrain_flops, train_flops, xla_flops)
from ttc_jax.analysis.matched import (PAPER_RATIOS, interp_log_budget, matched_comparison,
                                      matched_multiplier)
