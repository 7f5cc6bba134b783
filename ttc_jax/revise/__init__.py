"""Sequential revisions (Snell et al. 2024, section "Revisions"): data, fine-tune, chains,
selection. The context format is documented in `context`; the stage entry is
`run_revisions`."""
from ttc_jax.revise.context import (MAX_ATTEMPTS, SEPARATOR, ContextTooLong, encode_contexts,
                                    fit_context, format_context)
from ttc_jax.revise.data import (build_trajectories, encode_revision_examples,
                                 nearest_incorrect, read_trajectories, write_trajectories)
from ttc_jax.revise.infer import budgets, chain_lengths, ratios, run_chains
from ttc_jax.revise.model import (RevisionConfig, choose_step, finetune_revision_model,
                                  orm_score, train_orm)
from ttc_jax.revise.select import (accuracy_table, chain_metrics, pick_correct,
                                   revision_metrics, used_mask)
from ttc_jax.revise.stage import run_revisions
