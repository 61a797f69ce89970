"""Training RGNet with Accelerate: recipes ([`TrainingConfig`]), the loop ([`train`]) and its checkpoints."""

from .checkpoints import STATE_FILE
from .config import RESUME_FIXED_FIELDS, TrainingConfig, check_best_metric, load_data_from_spec, selection_score
from .loop import (
    EpochShuffleSampler,
    NonFiniteTrainingError,
    build_model,
    enable_gradient_checkpointing,
    parameters_in_sync,
    train,
)

__all__ = [
    "RESUME_FIXED_FIELDS",
    "STATE_FILE",
    "EpochShuffleSampler",
    "NonFiniteTrainingError",
    "TrainingConfig",
    "build_model",
    "check_best_metric",
    "enable_gradient_checkpointing",
    "load_data_from_spec",
    "parameters_in_sync",
    "selection_score",
    "train",
]
