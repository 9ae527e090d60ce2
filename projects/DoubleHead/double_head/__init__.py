"""Double-Head R-CNN as a detkit project; importing it registers the ``DoubleHead`` box head."""

from .box_head import BottleneckBlock, ConvHead, DoubleHead, WideningBlock
from .config import DoubleHeadConfig, DoubleHeadKeys, add_double_head_config

__all__ = [
    "BottleneckBlock",
    "ConvHead",
    "DoubleHead",
    "DoubleHeadConfig",
    "DoubleHeadKeys",
    "WideningBlock",
    "add_double_head_config",
]
