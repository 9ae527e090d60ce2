"""Layers with compiled kernels (``detkit._C``) and their thin Python wrappers."""

from .roi_pool import ROIPool, roi_pool

__all__ = ["ROIPool", "roi_pool"]
