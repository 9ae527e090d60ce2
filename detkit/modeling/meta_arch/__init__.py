"""Meta-architectures, registered in META_ARCH_REGISTRY, and the test pyramid that wraps one."""

from .fast_rcnn import META_ARCH_REGISTRY, FastRCNN, rescale_detections
from .pyramid import PyramidInference

__all__ = ["META_ARCH_REGISTRY", "FastRCNN", "PyramidInference", "rescale_detections"]
