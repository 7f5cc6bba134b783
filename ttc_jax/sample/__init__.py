"""Sampling: prefill + one compiled decode loop, prefix sharing, step-wise extension for search,
and the sample bank."""

from ttc_jax.sample.decode import (DEFAULT_BUCKETS, NO_LIMIT, DecodeState, Sampler,
                                   bucket_length, reorder, sample_tokens, state_shardings)
