"""RoI heads, box heads and the Fast R-CNN predictor."""

from .box_head import ROI_BOX_HEAD_REGISTRY, FastRCNNFCHead, build_box_head
from .fast_rcnn import FastRCNNOutputLayers
from .roi_heads import ROI_HEADS_REGISTRY, StandardROIHeads, build_roi_heads

__all__ = [
    "ROI_BOX_HEAD_REGISTRY",
    "ROI_HEADS_REGISTRY",
    "FastRCNNFCHead",
    "FastRCNNOutputLayers",
    "StandardROIHeads",
    "build_box_head",
    "build_roi_heads",
]
