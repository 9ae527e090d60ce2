"""Meta-architectures, registered in META_ARCH_REGISTRY."""

from .fast_rcnn import META_ARCH_REGISTRY, FastRCNN, rescale_detections

__all__ = ["META_ARCH_REGISTRY", "FastRCNN", "rescale_detections"]
