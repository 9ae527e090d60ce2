"""build_model: the whole detector from a config."""

from __future__ import annotations

import torch
from torch import nn

from ..utils.device import resolve_device
from .meta_arch import META_ARCH_REGISTRY


def build_model(cfg) -> nn.Module:
    """The meta-architecture named by ``MODEL.META_ARCHITECTURE``, on ``MODEL.DEVICE``
    (``auto``: CUDA when available)."""
    model = META_ARCH_REGISTRY.build(cfg.MODEL.META_ARCHITECTURE, cfg)
    return model.to(torch.device(resolve_device(cfg.MODEL.DEVICE)))
