"""Double-Head's config keys, ``MODEL.DOUBLE_HEAD``: the shape of the conv-head.

The fc-head is Fast R-CNN's and reads ``MODEL.ROI_BOX_HEAD.{NUM_FC, FC_DIM, DROPOUT}``, so a
Double-Head config differs from its Fast R-CNN base in the regression branch only.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

from detkit.config import add_config, key, section


@dataclass
class DoubleHeadConfig:
    """``MODEL.DOUBLE_HEAD``, defaulting to the paper's 1024-wide conv-head."""

    NUM_CONV_BLOCKS: int = key(
        5,
        "residual blocks in the conv-head, the widening one included (at least 1: 1 widening "
        "block, then `NUM_CONV_BLOCKS - 1` bottlenecks)",
    )
    CONV_DIM: int = key(
        1024,
        "the conv-head's width D (the paper's 1024), a multiple of 4; the bottlenecks are D/4 "
        "wide. It is also `bbox_pred`'s input width",
    )
    NORM: str = key(
        "BN",
        '`BN`: BatchNorm after every conv of the conv-head; `""`: none (the convs get biases)',
    )


@dataclass
class DoubleHeadModelKeys:
    DOUBLE_HEAD: DoubleHeadConfig = section(DoubleHeadConfig)


@dataclass
class DoubleHeadKeys:
    """Every key the project adds, as ``add_config`` takes them (and the README's table)."""

    MODEL: DoubleHeadModelKeys = section(DoubleHeadModelKeys)


def add_double_head_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` plus ``MODEL.DOUBLE_HEAD`` with its defaults."""
    return add_config(cfg, DoubleHeadKeys)
