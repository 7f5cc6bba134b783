"""Verifiers: MC-rollout step labels, PRM/ORM scoring (whole solutions and incremental with the
verifier's own KV cache), training with early stopping, quality metrics, and step / answer
aggregation."""

from ttc_jax.verify.aggregate import (NO_ANSWER, AnswerAggregation, StepAggregation,
                                      aggregate_steps, answer_ids, best_of_n,
                                      best_of_n_weighted, majority_vote, select, take_picked,
                                      weighted_vote)
from ttc_jax.verify.labels import final_step_labels, mc_labels, read_labels, select_solutions
from ttc_jax.verify.prm import (VerifierMismatch, check_compatible, encode_solutions,
                                extend_and_score, gather_new_tokens, init_cache,
                                init_verifier_params, last_score, score_bank, score_final,
                                score_steps, token_logits, tokenizer_fingerprint)

# The module train_verifier (its function of the same name: verify.train_verifier.train_verifier)
# imports ttc_jax.analysis, which imports this package: load it on first use.
_LAZY = ('VerifierConfig', 'VerifierTrainResult', 'auroc', 'bank_curves',
         'build_examples', 'expected_calibration_error', 'load_verifier', 'run_prm_pipeline',
         'split_problems', 'step_quality', 'verifier_loss',
         'resolve_policy_checkpoint', 'verifier_config_from_meta')


def __getattr__(name):
  if name in _LAZY:
    import importlib
    return getattr(importlib.import_module('ttc_jax.verify.train_verifier'), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
