"""Containers of a detector's inputs and outputs."""

from .boxes import Boxes, pairwise_iou
from .instances import Instances

__all__ = ["Boxes", "Instances", "pairwise_iou"]
