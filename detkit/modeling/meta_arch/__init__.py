"""Meta-architectures, registered in META_ARCH_REGISTRY, and the test pyramid that wraps one."""

from .backbone_model import BackboneModel, batch_images
from .fast_rcnn import META_ARCH_REGISTRY, FastRCNN, rescale_detections
from .pyramid import PyramidInference

__all__ = [
    "META_ARCH_REGISTRY",
    "BackboneModel",
    "FastRCNN",
    "PyramidInference",
    "batch_images",
    "rescale_detections",
]
