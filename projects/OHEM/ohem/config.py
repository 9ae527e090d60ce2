"""OHEM's config keys, added to detkit's with :func:`detkit.config.add_config`.

``MODEL.OHEM.NMS_THRESH`` (0.7): RoIs overlapping a harder RoI of the same image by more than
this IoU are left out of the mini-batch (the paper's de-duplication; 1.0 keeps them all).
``MODEL.OHEM.NMS_PER_CLASS`` (false): suppress only among RoIs of the same label, as the
released code does; the paper describes one NMS over all of an image's RoIs.

The number of RoIs kept per image, B/N, is ``MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE``, the same
key the standard sampler reads, so that switching samplers changes only
``MODEL.ROI_HEADS.SAMPLER``.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

from detkit.config import add_config


@dataclass
class OHEMConfig:
    NMS_THRESH: float = 0.7
    NMS_PER_CLASS: bool = False


def add_ohem_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` with the ``MODEL.OHEM`` keys and their defaults."""
    return add_config(cfg, {"MODEL": {"OHEM": OHEMConfig}})
