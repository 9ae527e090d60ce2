"""Layers with compiled kernels (``detkit._C``) and their thin Python wrappers."""

from .batch_norm import FrozenBatchNorm2d
from .roi_align import ROIAlign, roi_align
from .roi_pool import ROIPool, roi_pool

__all__ = ["FrozenBatchNorm2d", "ROIAlign", "ROIPool", "roi_align", "roi_pool"]
