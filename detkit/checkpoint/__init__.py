"""Checkpoints: detkit's own and torchvision ImageNet weights; finding and checking a run's
checkpoint files."""

from .detection_checkpoint import (
    DetectionCheckpointer,
    IncompatibleCheckpointError,
    PartialWeightsError,
    check_optimizer_state,
)
from .files import (
    CheckpointFileError,
    CheckpointNotFoundError,
    ResumePoint,
    UnsafeCheckpointError,
    checkpoint_problem,
    last_checkpoint,
    load_checkpoint_file,
    read_intact_checkpoint,
    read_resume_point,
    read_training_state,
    remove_interrupted_saves,
    resumable_checkpoint,
    saved_checkpoints,
)
from .weights_report import WeightsReport, non_finite_weights

__all__ = [
    "CheckpointFileError",
    "CheckpointNotFoundError",
    "DetectionCheckpointer",
    "IncompatibleCheckpointError",
    "PartialWeightsError",
    "ResumePoint",
    "UnsafeCheckpointError",
    "WeightsReport",
    "check_optimizer_state",
    "checkpoint_problem",
    "last_checkpoint",
    "load_checkpoint_file",
    "non_finite_weights",
    "read_intact_checkpoint",
    "read_resume_point",
    "read_training_state",
    "remove_interrupted_saves",
    "resumable_checkpoint",
    "saved_checkpoints",
]
