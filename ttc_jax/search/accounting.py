"""Per-problem cost of a search: generations (the paper's budget unit), tokens and FLOPs.

Counts come from the search loops (`TreeResult`): policy prefill (each prompt once: prefix
sharing), policy decode (every sampled token, lookahead rollouts included) and verifier
tokens (each prompt once, then every scored span once: incremental scoring). FLOPs come from
the one accountant, ttc_jax.analysis.flops, side by side under its three conventions:

  policy_flops, verifier_flops   'exact' (attention included; verifier on its own config)
  total_flops                    policy_flops + verifier_flops
  flops_v1                       2 N_policy (prefill + generated tokens): verifier ignored
  flops_iclr                     4 N_policy (prefill + generated tokens): a same-size verifier

Generations: N for best-of-N, beam search and DVTS; N (k + 1) for lookahead (each beam's
rollout counts as a generation, as in the paper). They never exceed the budget.
"""

from __future__ import annotations

import numpy as np

from ttc_jax.analysis.flops import TokenCounts, inference_flops
from ttc_jax.model.config import ModelConfig

COST_COLUMNS = ('generations', 'prefill_tokens', 'generated_tokens', 'verifier_tokens',
                'policy_flops', 'verifier_flops', 'total_flops', 'flops_v1', 'flops_iclr')


def generations(method: str, n: int, k: int = 0) -> int:
  """Generations a search spends: N (k + 1) for lookahead, N otherwise."""
  return int(n) * (int(k) + 1 if method == 'lookahead' else 1)


def problem_counts(result, p: int) -> tuple[TokenCounts, TokenCounts]:
  """(policy counts, verifier counts) of problem p of a TreeResult."""
  policy = TokenCounts(prefill_tokens=float(result.prefill_tokens_P[p]),
                       prefill_context=float(result.prefill_context_P[p]),
                       decode_tokens=float(result.generated_tokens_P[p]),
                       decode_context=float(result.generated_context_P[p]))
  verifier = TokenCounts(verifier_tokens=float(result.verifier_tokens_P[p]),
                         verifier_context=float(result.verifier_context_P[p]))
  return policy, verifier


def cost_columns(result, *, method: str, n: int, k: int, policy_cfg: ModelConfig,
                 verifier_cfg: ModelConfig | None = None) -> dict[str, np.ndarray]:
  """COST_COLUMNS, one value per problem of `result` (tokens and FLOPs; multiply-add = 2).

  verifier_cfg: the verifier model (None: counted on the policy's config, as for the oracle).
  """
  vcfg = verifier_cfg or policy_cfg
  p = len(result.prefill_tokens_P)
  out = {c: np.zeros(p) for c in COST_COLUMNS}
  out['generations'] = np.full(p, generations(method, n, k), np.int64)
  for i in range(p):
    policy, verifier = problem_counts(result, i)
    out['prefill_tokens'][i] = policy.prefill_tokens
    out['generated_tokens'][i] = policy.decode_tokens
    out['verifier_tokens'][i] = verifier.verifier_tokens
    out['policy_flops'][i] = inference_flops(policy_cfg, policy, 'exact')
    out['verifier_flops'][i] = inference_flops(vcfg, verifier, 'exact', verifier_cfg=vcfg)
    out['flops_v1'][i] = inference_flops(policy_cfg, policy + verifier, 'v1')
    out['flops_iclr'][i] = inference_flops(policy_cfg, policy + verifier, 'iclr')
  out['total_flops'] = out['policy_flops'] + out['verifier_flops']
  for c in ('prefill_tokens', 'generated_tokens', 'verifier_tokens'):
    out[c] = out[c].astype(np.int64)
  return out
