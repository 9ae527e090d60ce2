"""build_model: the whole detector from a config; build_inference_model: the detector as
inference runs it."""

from __future__ import annotations

import torch
from torch import nn

from ..utils.device import resolve_device
from .meta_arch import META_ARCH_REGISTRY, PyramidInference


def build_model(cfg) -> nn.Module:
    """The meta-architecture named by ``MODEL.META_ARCHITECTURE``, on ``MODEL.DEVICE``
    (``auto``: CUDA when available)."""
    model = META_ARCH_REGISTRY.build(cfg.MODEL.META_ARCHITECTURE, cfg)
    return model.to(torch.device(resolve_device(cfg.MODEL.DEVICE)))


def build_inference_model(cfg, model: nn.Module) -> nn.Module:
    """``model`` (from :func:`build_model`, its weights loaded) as inference runs it for
    ``cfg``: wrapped in :class:`PyramidInference` when ``TEST.MIN_SIZES`` lists a test
    pyramid, else ``model`` itself (and a model already wrapped as it is).

    The one place the inference path is chosen: ``DefaultTrainer.test`` (``--eval-only`` and
    the evaluations during training), ``DefaultPredictor`` (``tools/demo.py``) and
    ``tools/export_model.py`` call it, so they run the same code. The wrapper holds no weights
    of its own: training and checkpoints know ``model`` only."""
    if isinstance(model, PyramidInference) or not list(cfg.TEST.MIN_SIZES):
        return model
    return PyramidInference.from_config(cfg, model)
