"""Checkpoints: detkit's own and torchvision ImageNet weights."""

from .detection_checkpoint import (
    DetectionCheckpointer,
    IncompatibleCheckpointError,
    check_optimizer_state,
    last_checkpoint,
    read_training_state,
)

__all__ = [
    "DetectionCheckpointer",
    "IncompatibleCheckpointError",
    "check_optimizer_state",
    "last_checkpoint",
    "read_training_state",
]
