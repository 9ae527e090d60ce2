"""Double-Head's config keys, ``MODEL.DOUBLE_HEAD``: the shape of the conv-head.

The fc-head is Fast R-CNN's and reads ``MODEL.ROI_BOX_HEAD.{NUM_FC, FC_DIM, DROPOUT}``, so a
Double-Head config differs from its Fast R-CNN base in the regression branch only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import DictConfig

from detkit.config import add_config


@dataclass
class DoubleHeadConfig:
    """``MODEL.DOUBLE_HEAD``, defaulting to the paper's 1024-wide conv-head."""

    NUM_CONV_BLOCKS: int = 5  # residual blocks in the conv-head, the widening one included
    CONV_DIM: int = 1024  # the conv-head's width; its bottlenecks are CONV_DIM // 4 wide
    NORM: str = "BN"  # "BN": BatchNorm after every conv; "": none (the convs get biases)


@dataclass
class DoubleHeadModelKeys:
    DOUBLE_HEAD: DoubleHeadConfig = field(default_factory=DoubleHeadConfig)


@dataclass
class DoubleHeadKeys:
    """Every key the project adds, as ``add_config`` takes them."""

    MODEL: DoubleHeadModelKeys = field(default_factory=DoubleHeadModelKeys)


def add_double_head_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` plus ``MODEL.DOUBLE_HEAD`` with its defaults."""
    return add_config(cfg, DoubleHeadKeys)
