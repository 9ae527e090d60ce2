"""RoI samplers: which labelled proposals make up an image's mini-batch (paper §2.3).

A sampler is called once per training step with every image's labelled proposals and a
:class:`SamplingContext`, and returns per image the indices of the RoIs to train on. The
context scores RoIs with the current heads (per-RoI losses, no gradient), which is what
loss-based mining such as OHEM needs; the paper's :class:`FastRCNNSampler` does not use it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..structures import Instances
from ..utils.registry import Registry

SAMPLER_REGISTRY = Registry("SAMPLER")
SAMPLER_REGISTRY.__doc__ = """RoI samplers, picked by ``MODEL.ROI_HEADS.SAMPLER``.

An entry builds a callable ``sampler(proposals, context) -> list[Tensor]``: ``proposals`` holds
one ``Instances`` per image with ``proposal_boxes``, ``match_labels`` (the Matcher's band:
1 foreground, 0 background, -1 ignored), ``gt_classes`` (K for background, -1 for ignored)
and ``gt_boxes`` (the matched ground truth; the box itself when not foreground); the result
gives per image the indices of the RoIs to train on. ``context`` is a :class:`SamplingContext`.
"""


class SamplingContext:
    """What a sampler may use besides the labels: ``roi_losses(proposals)`` gives the current
    heads' per-RoI losses (``{"loss_cls": [R], "loss_box_reg": [R]}`` over the concatenated
    ``proposals``, computed without gradient: a read-only forward of pooler, box head and
    predictor, as OHEM's), and ``num_classes`` is K."""

    def __init__(
        self, roi_losses: Callable[[list[Instances]], dict[str, Tensor]], num_classes: int
    ):
        self._roi_losses = roi_losses
        self.num_classes = num_classes

    @torch.no_grad()
    def roi_losses(self, proposals: list[Instances]) -> dict[str, Tensor]:
        return self._roi_losses(proposals)


@SAMPLER_REGISTRY.register()
class FastRCNNSampler:
    """Draws ``batch_size_per_image`` RoIs, ``positive_fraction`` of them foreground.

    Foreground RoIs are drawn at random from the ``match_labels == 1``, background from the
    ``match_labels == 0`` (ignored ones, -1, never); when foreground is short the background
    fills the batch, as in the paper's hierarchical sampling (16 foreground of 64 per image).
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
        self, proposals: list[Instances], context: SamplingContext | None = None
    ) -> list[Tensor]:
        """Per image, the sampled foreground indices followed by the background ones."""
        return [torch.cat(self.sample_labels(p.match_labels)) for p in proposals]

    def sample_labels(
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
    return SAMPLER_REGISTRY.build(cfg.MODEL.ROI_HEADS.SAMPLER, cfg)
