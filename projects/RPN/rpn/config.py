"""The RPN project's config keys, ``MODEL.RPN`` and ``MODEL.ANCHOR_GENERATOR``, named and
defaulting as detectron2's (its ``config/defaults.py``), less what a proposal network that trains
on its losses alone does not read."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

from detkit.config import add_config, key, section


@dataclass
class AnchorGeneratorConfig:
    """``MODEL.ANCHOR_GENERATOR``: the anchors of every feature map ``MODEL.RPN.IN_FEATURES``
    names."""

    SIZES: list[list[float]] = key(
        [[32, 64, 128, 256, 512]],
        "anchor sizes (square root of the area, input pixels): one list per feature map, or one "
        "list for all of them",
    )
    ASPECT_RATIOS: list[list[float]] = key(
        [[0.5, 1.0, 2.0]],
        "anchor aspect ratios (height / width): one list per feature map, or one list for all; "
        "every map needs the same number of sizes x ratios",
    )


@dataclass
class RPNConfig:
    """``MODEL.RPN``: the region proposal network (Ren et al., NeurIPS 2015)."""

    IN_FEATURES: list[str] = key(
        ["features"],
        "the backbone maps the RPN runs on (one for a plain backbone; `p2`-`p6` for an FPN)",
    )
    IOU_THRESHOLDS: list[float] = key(
        [0.3, 0.7], "IoU bands of anchor matching: below 0.3 background, from 0.7 an object"
    )
    IOU_LABELS: list[int] = key(
        [0, -1, 1],
        "label of each band (-1: ignored); besides, each ground-truth box's best anchors are "
        "objects (detectron2's low-quality matches)",
    )
    BATCH_SIZE_PER_IMAGE: int = key(256, "anchors sampled per image for the losses")
    POSITIVE_FRACTION: float = key(0.5, "at most this fraction of them objects")
    BBOX_REG_WEIGHTS: list[float] = key(
        [1.0, 1.0, 1.0, 1.0], "weights of the (dx, dy, dw, dh) box deltas"
    )
    SMOOTH_L1_BETA: float = key(0.0, "smooth-L1 beta of the box loss; 0: plain L1")
    LOSS_WEIGHT: float = key(1.0, "weight of both RPN losses in the total")
    BBOX_REG_LOSS_WEIGHT: float = key(
        1.0, "weight of the box loss relative to the objectness loss (times `LOSS_WEIGHT`)"
    )
    PRE_NMS_TOPK_TEST: int = key(
        6000, "best-scored anchors kept per feature map before NMS, at test time"
    )
    POST_NMS_TOPK_TEST: int = key(
        1000, "proposals kept per image after NMS (over all maps together), at test time"
    )
    NMS_THRESH: float = key(0.7, "IoU of the NMS among proposals (per feature map)")
    MIN_SIZE: float = key(0.0, "proposals with a side of at most this many pixels are dropped")


@dataclass
class RPNModelKeys:
    ANCHOR_GENERATOR: AnchorGeneratorConfig = section(AnchorGeneratorConfig)
    RPN: RPNConfig = section(RPNConfig)


@dataclass
class RPNKeys:
    """Every key the project adds, as ``add_config`` takes them (and the README's table)."""

    MODEL: RPNModelKeys = section(RPNModelKeys)


def add_rpn_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` plus ``MODEL.RPN`` and ``MODEL.ANCHOR_GENERATOR`` with their defaults."""
    return add_config(cfg, RPNKeys)
