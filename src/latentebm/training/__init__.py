"""Training: the one mini-batch loop (seeded order, resumable position, progress, Ctrl-C,
divergence detection, checkpoint cadence), per-epoch history records, learning-rate schedules,
and the one checkpoint format (safetensors + JSON, atomic, nothing non-finite written)."""

from .checkpoint import (
    FORMAT,
    Checkpoint,
    CheckpointError,
    TrainingState,
    read_checkpoint,
    write_checkpoint,
)
from .flatten import flatten, unflatten
from .history import EpochRecord, MeanRecord
from .interrupt import GracefulInterrupt
from .loop import Batch, Epoch, MinibatchLoop, epoch_order, resuming
from .schedules import constant_schedule, cosine_factor, cosine_schedule

__all__ = [
    "FORMAT",
    "Batch",
    "Checkpoint",
    "CheckpointError",
    "Epoch",
    "EpochRecord",
    "GracefulInterrupt",
    "MeanRecord",
    "MinibatchLoop",
    "TrainingState",
    "constant_schedule",
    "cosine_factor",
    "cosine_schedule",
    "epoch_order",
    "flatten",
    "read_checkpoint",
    "resuming",
    "unflatten",
    "write_checkpoint",
]
