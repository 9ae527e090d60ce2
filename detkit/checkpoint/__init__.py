"""Checkpoints: detkit's own and torchvision ImageNet weights."""

from .detection_checkpoint import DetectionCheckpointer

__all__ = ["DetectionCheckpointer"]
