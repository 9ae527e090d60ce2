"""The Fast R-CNN model's parts and the registries they are built from."""

from . import config_checks  # noqa: F401  (registers the package's config checks)
from .backbone import BACKBONE_REGISTRY, Backbone, ShapeSpec, build_backbone
from .box_regression import Box2BoxTransform
from .build import build_inference_model, build_model
from .matcher import Matcher
from .meta_arch import (
    META_ARCH_REGISTRY,
    BackboneModel,
    FastRCNN,
    PyramidInference,
    batch_images,
    rescale_detections,
)
from .poolers import (
    ROI_POOLER_REGISTRY,
    ROIPooler,
    assign_boxes_to_levels,
    dedup_boxes,
    pooler_class,
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
    "BackboneModel",
    "Box2BoxTransform",
    "FastRCNN",
    "FastRCNNFCHead",
    "FastRCNNOutputLayers",
    "FastRCNNSampler",
    "Matcher",
    "PyramidInference",
    "ROIPooler",
    "SamplingContext",
    "ShapeSpec",
    "StandardROIHeads",
    "assign_boxes_to_levels",
    "batch_images",
    "build_backbone",
    "build_inference_model",
    "build_model",
    "build_sampler",
    "dedup_boxes",
    "pooler_class",
    "rescale_detections",
]
