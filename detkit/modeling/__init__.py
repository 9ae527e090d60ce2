"""The Fast R-CNN model's parts and the registries they are built from."""

from .backbone import BACKBONE_REGISTRY, Backbone, ShapeSpec, build_backbone
from .box_regression import Box2BoxTransform
from .build import build_model
from .matcher import Matcher
from .meta_arch import META_ARCH_REGISTRY, FastRCNN
from .poolers import (
    ROI_POOLER_REGISTRY,
    PoolerTypeFromConfig,
    ROIPooler,
    assign_boxes_to_levels,
    dedup_boxes,
)
from .roi_heads import (
    ROI_BOX_HEAD_REGISTRY,
    ROI_HEADS_REGISTRY,
    FastRCNNFCHead,
    FastRCNNOutputLayers,
    StandardROIHeads,
)
from .sampling import SAMPLER_REGISTRY, FastRCNNSampler, SamplingContext, build_sampler

__all__ = [
    "BACKBONE_REGISTRY",
    "META_ARCH_REGISTRY",
    "ROI_BOX_HEAD_REGISTRY",
    "ROI_HEADS_REGISTRY",
    "ROI_POOLER_REGISTRY",
    "SAMPLER_REGISTRY",
    "Backbone",
    "Box2BoxTransform",
    "FastRCNN",
    "FastRCNNFCHead",
    "FastRCNNOutputLayers",
    "FastRCNNSampler",
    "Matcher",
    "PoolerTypeFromConfig",
    "ROIPooler",
    "SamplingContext",
    "ShapeSpec",
    "StandardROIHeads",
    "assign_boxes_to_levels",
    "build_backbone",
    "build_model",
    "build_sampler",
    "dedup_boxes",
]
