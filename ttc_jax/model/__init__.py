"""The model layer: config, size ladder, the transformer and its explicit KV cache."""
from ttc_jax.model.config import ConfigError, ModelConfig, ladder, LADDER_NAMES
from ttc_jax.model.transformer import (Transformer, apply, apply_features, init_cache,
                                       init_params)
