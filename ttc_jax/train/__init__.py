"""The one train loop and the losses that use it."""
from ttc_jax.train.loop import (TrainConfig, TrainResult, TrainState, TrainingDiverged,
                                load_params, make_optimizer, train)
