"""Containers of a detector's inputs and outputs."""

from .boxes import Boxes, BoxMode, pairwise_iou
from .instances import Instances

__all__ = ["BoxMode", "Boxes", "Instances", "pairwise_iou"]
