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

from detkit.config import add_config, key, section


@dataclass
class OHEMConfig:
    """``MODEL.OHEM``."""

    NMS_THRESH: float = key(
        0.7,
        "IoU above which a RoI overlapping a harder one of the same image is left out; in "
        "[0, 1]; `1.0` keeps every RoI (ranking alone)",
    )
    NMS_PER_CLASS: bool = key(
        False, "suppress only among RoIs of the same label (the released code's way)"
    )


@dataclass
class OHEMModelKeys:
    OHEM: OHEMConfig = section(OHEMConfig)


@dataclass
class OHEMKeys:
    """Every key the project adds, as ``add_config`` takes them (and the README's table)."""

    MODEL: OHEMModelKeys = section(OHEMModelKeys)


def add_ohem_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` with the ``MODEL.OHEM`` keys and their defaults."""
    return add_config(cfg, OHEMKeys)
