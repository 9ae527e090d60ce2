"""Old config keys that are still read: each is translated into the keys that replaced it, with a
warning that says what to write instead."""

from __future__ import annotations

import logging

from omegaconf import DictConfig

logger = logging.getLogger(__name__)


def upgrade_deprecated_keys(cfg: DictConfig, source: str) -> None:
    """Rewrites deprecated keys set in ``cfg`` (loaded from ``source``) into their successors.

    ``MODEL.ROI_HEADS.BG_IOU_LO: lo`` (with the foreground threshold in ``IOU_THRESHOLDS``)
    becomes ``IOU_THRESHOLDS: [lo, fg]``, ``IOU_LABELS: [-1, 0, 1]``: ignored below ``lo``,
    background up to ``fg``, foreground from ``fg`` on, as the old keys meant.
    """
    heads = cfg.MODEL.ROI_HEADS
    if heads.BG_IOU_LO is None:
        return
    low, foreground = float(heads.BG_IOU_LO), float(heads.IOU_THRESHOLDS[-1])
    heads.IOU_THRESHOLDS = [low, foreground]
    heads.IOU_LABELS = [-1, 0, 1]
    heads.BG_IOU_LO = None
    logger.warning(
        f"{source}: MODEL.ROI_HEADS.BG_IOU_LO is deprecated; read as "
        f"MODEL.ROI_HEADS.IOU_THRESHOLDS: [{low}, {foreground}] and IOU_LABELS: [-1, 0, 1]. "
        "Write those two keys instead."
    )
