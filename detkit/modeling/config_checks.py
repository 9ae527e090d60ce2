"""The model's up-front checks, run by :func:`detkit.config.check_config` (registered when
:mod:`detkit.modeling` is imported): every key that names a component names a registered one,
and the pooler type, the matcher's bands, the sampler's and the box head's sizes, the SVD ranks
and the test pyramid's sizes are ones their parts take. Each rule is the part's own function
(beside its constructor, which raises on it), given the config's values and keys here, so a
config is refused up front with the message building the part would give."""

from __future__ import annotations

from omegaconf import DictConfig

from ..config import register_config_check
from ..config.checks import unknown_name_problems
from ..utils.registry import Registry
from .backbone import BACKBONE_REGISTRY
from .matcher import band_problems
from .meta_arch import META_ARCH_REGISTRY
from .poolers import pooler_class
from .roi_heads import ROI_BOX_HEAD_REGISTRY, ROI_HEADS_REGISTRY
from .roi_heads.box_head import FastRCNNFCHead, fc_head_problems, svd_rank_problems
from .sampling import SAMPLER_REGISTRY, FastRCNNSampler, sampler_problems


@register_config_check
def _component_name_problems(cfg: DictConfig) -> list[str]:
    model = cfg.MODEL
    named = [
        ("MODEL.META_ARCHITECTURE", model.META_ARCHITECTURE, META_ARCH_REGISTRY),
        ("MODEL.BACKBONE.NAME", model.BACKBONE.NAME, BACKBONE_REGISTRY),
        ("MODEL.ROI_HEADS.NAME", model.ROI_HEADS.NAME, ROI_HEADS_REGISTRY),
        ("MODEL.ROI_HEADS.SAMPLER", model.ROI_HEADS.SAMPLER, SAMPLER_REGISTRY),
        ("MODEL.ROI_BOX_HEAD.NAME", model.ROI_BOX_HEAD.NAME, ROI_BOX_HEAD_REGISTRY),
    ]
    return [
        problem
        for key, name, registry in named
        for problem in unknown_name_problems(key, [name], registry)
    ]


@register_config_check
def _pooler_type_problems(cfg: DictConfig) -> list[str]:
    """The pooler type, by :func:`pooler_class`: the check :class:`ROIPooler` makes."""
    try:
        pooler_class(cfg.MODEL.ROI_BOX_HEAD.POOLER_TYPE)
    except ValueError as error:
        return [f"MODEL.ROI_BOX_HEAD.POOLER_TYPE: {error}"]
    return []


@register_config_check
def _matcher_problems(cfg: DictConfig) -> list[str]:
    heads = cfg.MODEL.ROI_HEADS
    return band_problems(
        heads.IOU_THRESHOLDS,
        heads.IOU_LABELS,
        names=("MODEL.ROI_HEADS.IOU_THRESHOLDS", "MODEL.ROI_HEADS.IOU_LABELS"),
    )


@register_config_check
def _sampler_problems(cfg: DictConfig) -> list[str]:
    """The sizes of :class:`FastRCNNSampler` when the config picks it; another sampler's
    settings are checked by the check its package registers (as projects/OHEM's)."""
    heads = cfg.MODEL.ROI_HEADS
    if not _picks(SAMPLER_REGISTRY, heads.SAMPLER, FastRCNNSampler):
        return []
    return sampler_problems(
        heads.BATCH_SIZE_PER_IMAGE,
        heads.POSITIVE_FRACTION,
        names=("MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "MODEL.ROI_HEADS.POSITIVE_FRACTION"),
    )


@register_config_check
def _box_head_problems(cfg: DictConfig) -> list[str]:
    """The SVD ranks, and the sizes of :class:`FastRCNNFCHead` (and its subclasses) when the
    config picks it; another head's sizes are checked by the check its package registers."""
    box = cfg.MODEL.ROI_BOX_HEAD
    problems = svd_rank_problems(box.SVD_RANKS, box.NUM_FC)
    if _picks(ROI_BOX_HEAD_REGISTRY, box.NAME, FastRCNNFCHead):
        keys = (
            "MODEL.ROI_BOX_HEAD.NUM_FC",
            "MODEL.ROI_BOX_HEAD.FC_DIM",
            "MODEL.ROI_BOX_HEAD.DROPOUT",
        )
        problems += fc_head_problems(box.NUM_FC, box.FC_DIM, box.DROPOUT, names=keys)
    return problems


@register_config_check
def _test_pyramid_problems(cfg: DictConfig) -> list[str]:
    """The sizes of the test pyramid (:class:`~.meta_arch.pyramid.PyramidInference`)."""
    sizes = list(cfg.TEST.MIN_SIZES)
    if any(size <= 0 for size in sizes):
        return [f"TEST.MIN_SIZES must hold positive shortest-edge sizes, got {sizes}"]
    return []


def _picks(registry: Registry, name: str, part: type) -> bool:
    """Whether ``name`` is registered in ``registry`` as ``part`` or a subclass of it."""
    entry = registry.get(name) if name in registry else None
    return isinstance(entry, type) and issubclass(entry, part)
