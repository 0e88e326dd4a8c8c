"""Trainer, metrics, example models and the `recis-train` command line.

`Trainer` composes every lower layer: a `recis.io` reader feeds batches, the model's
`FeatureEngine` and `EmbeddingEngine` turn them into tensors, `recis.optim` updates the tables.
"""

from .checkpoint import Checkpointer
from .hooks import CheckpointEvery, EarlyStopping, EvictEvery, Hook
from .metrics import AUC, GAUC, Accuracy, Calibration, LogLoss, MeanSquaredError, auc_score, gauc_score
from .objectives import Objective
from .pipeline import InputPipeline
from .run_state import RunState
from .stages import OnlineData, Stage, make_schedule
from .trainer import NonFiniteLossError, Trainer, TrainerConfig

__version__ = "0.1.0"
__all__ = [
    "AUC",
    "GAUC",
    "Accuracy",
    "Calibration",
    "CheckpointEvery",
    "Checkpointer",
    "EarlyStopping",
    "EvictEvery",
    "Hook",
    "InputPipeline",
    "LogLoss",
    "MeanSquaredError",
    "NonFiniteLossError",
    "Objective",
    "OnlineData",
    "RunState",
    "Stage",
    "Trainer",
    "TrainerConfig",
    "auc_score",
    "gauc_score",
    "make_schedule",
]
