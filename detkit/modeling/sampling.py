"""RoI samplers: which labelled proposals make up an image's mini-batch (paper §2.3).

A sampler is called once per training step with every image's labelled proposals and a
:class:`SamplingContext`, and returns per image the indices of the RoIs to train on. The
context scores RoIs with the current heads (per-RoI losses, no gradient), which is what
loss-based mining such as OHEM needs, and carries the step's random generator, the only one a
sampler draws from: the trainer seeds one for every step (:func:`set_sampling_generator`), so
that sampling depends on the run's seed, the process and the iteration, and on nothing else
the step draws (dropout).
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

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
    predictor, as OHEM's), ``num_classes`` is K, and ``generator`` the step's CPU random
    generator, which a sampler draws all its randomness from (None outside training steps:
    torch's default generator)."""

    def __init__(
        self,
        roi_losses: Callable[[list[Instances]], dict[str, Tensor]],
        num_classes: int,
        generator: torch.Generator | None = None,
    ):
        self._roi_losses = roi_losses
        self.num_classes = num_classes
        self.generator = generator

    @torch.no_grad()
    def roi_losses(self, proposals: list[Instances]) -> dict[str, Tensor]:
        return self._roi_losses(proposals)


def sampler_problems(
    batch_size_per_image: int,
    positive_fraction: float,
    names: tuple[str, str] = ("batch_size_per_image", "positive_fraction"),
) -> list[str]:
    """Why :class:`FastRCNNSampler` cannot draw with these sizes, one message per problem
    naming each as ``names`` gives (the arguments; ``check_config`` gives the config keys);
    empty when it can."""
    problems = []
    if batch_size_per_image <= 0:
        problems.append(f"{names[0]} must be positive, got {batch_size_per_image}")
    if not 0.0 <= positive_fraction <= 1.0:
        problems.append(f"{names[1]} must be in [0, 1], got {positive_fraction}")
    return problems


@SAMPLER_REGISTRY.register()
class FastRCNNSampler:
    """Draws ``batch_size_per_image`` RoIs, ``positive_fraction`` of them foreground.

    Foreground RoIs are drawn at random from the ``match_labels == 1``, background from the
    ``match_labels == 0`` (ignored ones, -1, never); when foreground is short the background
    fills the batch, as in the paper's hierarchical sampling (16 foreground of 64 per image).
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float) -> None:
        problems = sampler_problems(batch_size_per_image, positive_fraction)
        if problems:
            raise ValueError("FastRCNNSampler: " + "; ".join(problems))
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction

    @classmethod
    def from_config(cls, cfg) -> FastRCNNSampler:
        heads = cfg.MODEL.ROI_HEADS
        return cls(heads.BATCH_SIZE_PER_IMAGE, heads.POSITIVE_FRACTION)

    def __call__(
        self, proposals: list[Instances], context: SamplingContext | None = None
    ) -> list[Tensor]:
        """Per image, the sampled foreground indices followed by the background ones, drawn
        from the context's generator (the images in turn)."""
        generator = context.generator if context is not None else None
        return [torch.cat(self.sample_labels(p.match_labels, generator)) for p in proposals]

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


_SAMPLING_GENERATOR: ContextVar[torch.Generator | None] = ContextVar(
    "detkit_sampling_generator", default=None
)


def set_sampling_generator(generator: torch.Generator | None) -> None:
    """Makes ``generator`` the one the RoI heads hand their sampler in its
    :class:`SamplingContext`, until the next call: the trainer sets one seeded for each step
    (:class:`~detkit.engine.hooks.ReseedEachIteration`) and None after training."""
    _SAMPLING_GENERATOR.set(generator)


def sampling_generator() -> torch.Generator | None:
    """The generator :func:`set_sampling_generator` set last (None when none is set)."""
    return _SAMPLING_GENERATOR.get()


def build_sampler(cfg):
    """The sampler named by ``MODEL.ROI_HEADS.SAMPLER``, built from the config."""
    return SAMPLER_REGISTRY.build(cfg.MODEL.ROI_HEADS.SAMPLER, cfg)
