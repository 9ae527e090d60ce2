"""detkit: a modular Fast R-CNN object-detection framework built on PyTorch."""

__version__ = "0.1.0"
