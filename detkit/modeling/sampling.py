"""RoI samplers: which matched proposals make up an image's mini-batch (paper §2.3)."""

from __future__ import annotations

import torch
from fvcore.common.registry import Registry
from torch import Tensor

SAMPLER_REGISTRY = Registry("SAMPLER")
SAMPLER_REGISTRY.__doc__ = """Samplers of RoIs; each is built by ``build_sampler(cfg)``."""


@SAMPLER_REGISTRY.register()
class FastRCNNSampler:
    """Draws ``batch_size_per_image`` RoIs, ``positive_fraction`` of them foreground.

    Foreground RoIs are drawn at random from the labels == 1, background from the labels == 0
    (ignored ones, -1, never); when foreground is short the background fills the batch, as in
    the paper's hierarchical sampling (16 foreground of 64 per image).
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float) -> None:
        if batch_size_per_image <= 0 or not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(
                "FastRCNNSampler: batch_size_per_image must be positive and positive_fraction "
                f"in [0, 1], got {batch_size_per_image} and {positive_fraction}"
            )
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction

    @classmethod
    def from_config(cls, cfg) -> FastRCNNSampler:
        heads = cfg.MODEL.ROI_HEADS
        return cls(heads.BATCH_SIZE_PER_IMAGE, heads.POSITIVE_FRACTION)

    def __call__(
        self, labels: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Indices of the sampled foreground and background RoIs for one image's ``labels``."""
        foreground = torch.nonzero(labels == 1).flatten()
        background = torch.nonzero(labels == 0).flatten()
        num_fg = min(int(self.batch_size_per_image * self.positive_fraction), foreground.numel())
        num_bg = min(self.batch_size_per_image - num_fg, background.numel())
        return _pick(foreground, num_fg, generator), _pick(background, num_bg, generator)


def _pick(indices: Tensor, count: int, generator: torch.Generator | None) -> Tensor:
    order = torch.randperm(indices.numel(), generator=generator, device="cpu")[:count]
    return indices[order.to(indices.device)]


def build_sampler(cfg):
    """The sampler named by ``MODEL.ROI_HEADS.SAMPLER``, built from the config."""
    return SAMPLER_REGISTRY.get(cfg.MODEL.ROI_HEADS.SAMPLER).from_config(cfg)
