"""Pooling RoI features from one or several feature maps, and the rules that go with it.

* :func:`assign_boxes_to_levels`: which map of a pyramid each box is pooled from (FPN's rule,
  as detectron2 computes it).
* :func:`dedup_boxes`: which boxes of an image are duplicates on the grid of the map they are
  pooled from (Fast R-CNN's ``DEDUP_BOXES``, generalised from VGG16's stride 16 to any map).
* :class:`ROIPooler`: pools every box from its map with one op per map; the op is a pooler
  type, a class registered in ``ROI_POOLER_REGISTRY`` (``ROIPool``, ``ROIAlign``,
  ``ROIAlignV2``) or given as it is; :func:`pooler_class` is the one check of a pooler type.
"""

from __future__ import annotations

import inspect
import math
import sys
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .. import layers
from ..layers._roi_utils import boxes_to_rois, fx_leaf, output_size_pair, pooled_memory_format
from ..structures import Boxes
from ..utils.registry import Registry

__all__ = [
    "ROI_POOLER_REGISTRY",
    "LevelROIAlign",
    "LevelROIAlignV2",
    "LevelROIPool",
    "ROIPooler",
    "assign_boxes_to_levels",
    "assign_boxes_to_scales",
    "dedup_boxes",
    "pooler_class",
]

_POOLER_TYPE_ARGUMENTS = "(output_size, spatial_scale, sampling_ratio)"


def _pooler_type_problem(entry: object) -> str:
    """Why ``entry`` is not a pooler type, or ``""`` when it is: a pooler type is an
    ``nn.Module`` class whose constructor takes ``(output_size, spatial_scale,
    sampling_ratio)`` (what :class:`ROIPooler` passes, once per map)."""
    if not (isinstance(entry, type) and issubclass(entry, nn.Module)):
        return f"{entry!r} is not a torch.nn.Module class"
    try:
        inspect.signature(entry).bind(None, None, None)
    except TypeError:
        return f"the constructor of {entry.__name__} does not take {_POOLER_TYPE_ARGUMENTS}"
    except ValueError:  # a constructor without a signature: trust it
        pass
    return ""


ROI_POOLER_REGISTRY = Registry(
    "ROI_POOLER",
    expects=f"an nn.Module class whose constructor takes {_POOLER_TYPE_ARGUMENTS}",
    reason=_pooler_type_problem,
)
ROI_POOLER_REGISTRY.__doc__ = f"""Pooler types, chosen by ``MODEL.ROI_BOX_HEAD.POOLER_TYPE``.

An entry is the class of the op that pools one feature map: an ``nn.Module`` built as
``cls{_POOLER_TYPE_ARGUMENTS}``, mapping ``(features [N, C, H, W], rois [K, 5])`` to
``[K, C, h, w]``. :class:`ROIPooler` builds one per map (from a config, with
``POOLER_RESOLUTION`` and ``POOLER_SAMPLING_RATIO`` of ``MODEL.ROI_BOX_HEAD``)."""


def pooler_class(pooler_type: str | type[nn.Module]) -> type[nn.Module]:
    """The class of ``pooler_type``: the one registered under that name in
    ``ROI_POOLER_REGISTRY``, or the class itself. ``ValueError`` for an unknown name (naming
    the registered ones and the closest) or anything but a pooler class. The one check of a
    pooler type: :class:`ROIPooler` and the up-front config check call it."""
    if isinstance(pooler_type, str):
        if pooler_type not in ROI_POOLER_REGISTRY:
            raise ValueError(ROI_POOLER_REGISTRY.unknown_name_message(pooler_type))
        return ROI_POOLER_REGISTRY.get(pooler_type)
    problem = _pooler_type_problem(pooler_type)
    if problem:
        raise ValueError(
            f"a pooler type is a name registered in ROI_POOLER_REGISTRY or a class built as "
            f"cls{_POOLER_TYPE_ARGUMENTS}: {problem}"
        )
    return pooler_type


@ROI_POOLER_REGISTRY.register(name="ROIPool")
class LevelROIPool(layers.ROIPool):
    """The paper's RoI max pooling, :class:`detkit.layers.ROIPool`; ``sampling_ratio`` is
    ignored (max pooling reads every cell of a bin)."""

    def __init__(self, output_size, spatial_scale: float, sampling_ratio: int = 0) -> None:
        super().__init__(output_size, spatial_scale)


@ROI_POOLER_REGISTRY.register(name="ROIAlign")
class LevelROIAlign(layers.ROIAlign):
    """Mask R-CNN's RoIAlign without the half-pixel offset, :class:`detkit.layers.ROIAlign`
    with ``aligned=False`` (``sampling_ratio <= 0``: an adaptive grid of samples per bin)."""

    def __init__(self, output_size, spatial_scale: float, sampling_ratio: int = 0) -> None:
        super().__init__(output_size, spatial_scale, sampling_ratio, aligned=False)


@ROI_POOLER_REGISTRY.register(name="ROIAlignV2")
class LevelROIAlignV2(layers.ROIAlign):
    """RoIAlign with the half-pixel offset, :class:`detkit.layers.ROIAlign` with
    ``aligned=True`` (detectron2's default for its FPN models)."""

    def __init__(self, output_size, spatial_scale: float, sampling_ratio: int = 0) -> None:
        super().__init__(output_size, spatial_scale, sampling_ratio, aligned=True)


def _box_tensors(box_lists: Sequence[Boxes | Tensor]) -> list[Tensor]:
    tensors = []
    for index, boxes in enumerate(box_lists):
        tensor = boxes.tensor if isinstance(boxes, Boxes) else boxes
        if not isinstance(tensor, Tensor) or tensor.dim() != 2 or tensor.shape[1] != 4:
            shape = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
            raise ValueError(f"box_lists[{index}] must be Boxes or a Tensor[Ki, 4], got {shape}")
        tensors.append(tensor)
    return tensors


def assign_boxes_to_levels(
    box_lists: Sequence[Boxes | Tensor],
    min_level: int,
    max_level: int,
    canonical_box_size: float,
    canonical_level: int,
) -> Tensor:
    """The pyramid level of every box of the concatenated ``box_lists``, as an index from 0.

    FPN's equation (1) as detectron2 computes it: a box of area ``A`` goes to level
    ``floor(canonical_level + log2(sqrt(A) / canonical_box_size + eps))`` with
    ``eps = sys.float_info.epsilon`` (2.2e-16), clamped to ``[min_level, max_level]``; the
    result is that level minus ``min_level`` (``int64``). With the defaults (224, 4) a
    224 x 224 box goes to level 4, a 112 x 112 one to level 3 and a 448 x 448 one to level 5;
    the area of an inverted box counts as 0. Level ``k`` is the map of stride ``2**k``.

    ``box_lists`` holds one ``Boxes`` or ``Tensor[Ki, 4]`` (absolute XYXY) per image.
    """
    tensors = _box_tensors(box_lists)
    if not tensors:
        return torch.zeros((0,), dtype=torch.int64)
    boxes = torch.cat(tensors)
    widths = (boxes[:, 2] - boxes[:, 0]).clamp(min=0)
    heights = (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    sizes = torch.sqrt(widths * heights)
    eps = sys.float_info.epsilon
    levels = torch.floor(canonical_level + torch.log2(sizes / canonical_box_size + eps))
    levels = torch.clamp(levels, min=min_level, max=max_level)
    return levels.to(torch.int64) - min_level


def _pyramid_levels(scales: Sequence[float], owner: str) -> tuple[int, int]:
    """``(min_level, max_level)`` of ``scales`` (1/stride per map, finest first).

    Several scales must be ``2**-k`` for consecutive ``k``; one scale may be any positive
    number (its level, used by nothing, is the nearest integer of ``-log2(scale)``).
    """
    scales = list(scales)
    if not scales or not all(
        isinstance(s, (int, float)) and math.isfinite(s) and s > 0 for s in scales
    ):
        raise ValueError(f"{owner}: scales must be positive numbers (1 / stride), got {scales}")
    levels = [-math.log2(s) for s in scales]
    if len(scales) == 1:
        level = round(levels[0])
        return level, level
    rounded = [round(level) for level in levels]
    powers = all(
        math.isclose(level, r, abs_tol=1e-6) for level, r in zip(levels, rounded, strict=True)
    )
    consecutive = rounded == list(range(rounded[0], rounded[0] + len(rounded)))
    if not (powers and consecutive):
        strides = [1 / s for s in scales]
        raise ValueError(
            f"{owner}: several scales must be 1 / 2**k for consecutive k, finest first "
            f"(strides such as 4, 8, 16, 32), got scales {scales} (strides {strides})"
        )
    return rounded[0], rounded[-1]


def _round_half_away(values: Tensor) -> Tensor:
    """Rounds as the RoIPool kernel does (C's ``round``: halves away from zero), in float64."""
    values = values.double()
    return torch.where(values >= 0, torch.floor(values + 0.5), torch.ceil(values - 0.5))


def dedup_boxes(
    boxes: Boxes | Tensor,
    scales: Sequence[float],
    canonical_box_size: float = 224,
    canonical_level: int = 4,
) -> Tensor:
    """Indices (ascending) of the boxes of one image that are not duplicates on the feature grid.

    Fast R-CNN removes RoIs that coincide after mapping to the feature grid (``DEDUP_BOXES =
    1/16``, VGG16's stride) before pooling, since RoI max pooling would give them the same
    features. Here each box is mapped to the grid of the map it is pooled from: with one
    scale, ``box * scale``; with several, the scale of the level :func:`assign_boxes_to_levels`
    gives it (boxes of different levels never coincide). Coordinates are rounded as the
    RoIPool kernel rounds them (halves away from zero; the original code's NumPy ``round``
    sends halves to even, which differs only for corners exactly between two cells). Of the
    boxes that coincide, the first in the given order (objectness order, for proposals) is kept.

    ``scales`` and the canonical size and level are those of the :class:`ROIPooler`.
    """
    (tensor,) = _box_tensors([boxes])
    min_level, max_level = _pyramid_levels(scales, "dedup_boxes")
    count = tensor.shape[0]
    if count == 0:
        return torch.zeros((0,), dtype=torch.int64, device=tensor.device)
    if len(scales) == 1:
        keys = _round_half_away(tensor * scales[0])
    else:
        levels = assign_boxes_to_levels(
            [tensor], min_level, max_level, canonical_box_size, canonical_level
        )
        level_scales = torch.tensor(scales, dtype=tensor.dtype, device=tensor.device)[levels]
        keys = torch.cat(
            [levels[:, None].double(), _round_half_away(tensor * level_scales[:, None])], dim=1
        )
    _, group = torch.unique(keys, dim=0, return_inverse=True)
    positions = torch.arange(count, device=tensor.device)
    first = torch.full((count,), count, dtype=torch.int64, device=tensor.device)
    first = first.scatter_reduce(0, group, positions, reduce="amin", include_self=True)
    return first[first < count].sort().values


def assign_boxes_to_scales(
    boxes: torch.Tensor, factors: Sequence[tuple[float, float]]
) -> torch.Tensor:
    """For ``[N, 4]`` boxes in original pixels, the index of the scale whose scaled box area is
    closest to 224² (the original ``_project_im_rois`` rule, with detkit's continuous widths:
    ``x2 - x1``, no +1); ties go to the first scale."""
    widths = (boxes[:, 2] - boxes[:, 0]).double()
    heights = (boxes[:, 3] - boxes[:, 1]).double()
    scaled = torch.stack([widths * fx * heights * fy for fx, fy in factors], dim=1)
    return (scaled - 224.0**2).abs().argmin(dim=1)


class ROIPooler(nn.Module):
    """Pools a fixed-size feature for every box from one or several feature maps.

    Args:
        output_size: ``h`` for an ``h x h`` grid, or ``(h, w)``.
        scales: ``1 / stride`` of every map, finest first; several must be ``1 / 2**k`` for
            consecutive ``k`` (a feature pyramid such as FPN's P2-P5: 1/4, 1/8, 1/16, 1/32).
        sampling_ratio: samples per bin side for RoIAlign (``<= 0``: adaptive); unused by
            ``ROIPool``.
        pooler_type: the op of one map, by its name in ``ROI_POOLER_REGISTRY`` (``ROIPool``,
            ``ROIAlign``, ``ROIAlignV2``) or as a class built as ``cls(output_size,
            spatial_scale, sampling_ratio)`` (:func:`pooler_class`).
        canonical_box_size, canonical_level: of the level assignment
            (:func:`assign_boxes_to_levels`), used with several maps only.

    ``forward(x, box_lists)`` takes one map per scale (``[N, C, H_l, W_l]``, the same ``N``
    and ``C``) and one ``Boxes`` or ``Tensor[Ki, 4]`` per image, and returns ``[K, C, h, w]``,
    ``K`` the total box count, in the order of the concatenated lists. With one map it is one
    op call; with several, each box is pooled from its assigned level, one op call per level.
    The output keeps the maps' memory format where the op does (channels-last in,
    channels-last out).
    """

    def __init__(
        self,
        output_size: int | Sequence[int],
        scales: Sequence[float],
        sampling_ratio: int,
        pooler_type: str | type[nn.Module],
        canonical_box_size: float = 224,
        canonical_level: int = 4,
    ) -> None:
        super().__init__()
        output_size = output_size_pair("ROIPooler", output_size)
        try:
            level_type = pooler_class(pooler_type)
        except ValueError as error:
            raise ValueError(f"ROIPooler: pooler_type: {error}") from None
        if not canonical_box_size > 0:
            raise ValueError(
                f"ROIPooler: canonical_box_size must be positive, got {canonical_box_size!r}"
            )
        self.min_level, self.max_level = _pyramid_levels(scales, "ROIPooler")
        self.output_size = output_size
        self.scales = tuple(float(s) for s in scales)
        self.sampling_ratio = sampling_ratio
        self.canonical_box_size = canonical_box_size
        self.canonical_level = canonical_level
        self.level_poolers = nn.ModuleList(
            level_type(output_size, scale, sampling_ratio) for scale in self.scales
        )

    @classmethod
    def from_config(cls, cfg, scales: Sequence[float]) -> ROIPooler:
        """The pooler of ``MODEL.ROI_BOX_HEAD`` for maps of ``scales`` (``1 / stride``)."""
        box = cfg.MODEL.ROI_BOX_HEAD
        try:
            pooler_type = pooler_class(box.POOLER_TYPE)
        except ValueError as error:
            raise ValueError(f"MODEL.ROI_BOX_HEAD.POOLER_TYPE: {error}") from None
        return cls(
            box.POOLER_RESOLUTION,
            scales,
            box.POOLER_SAMPLING_RATIO,
            pooler_type,
            canonical_box_size=box.POOLER_CANONICAL_BOX_SIZE,
            canonical_level=box.POOLER_CANONICAL_LEVEL,
        )

    def forward(self, x: Sequence[Tensor], box_lists: Sequence[Boxes | Tensor]) -> Tensor:
        return _pool_boxes(
            self.level_poolers,
            x,
            box_lists,
            self.min_level,
            self.max_level,
            self.canonical_box_size,
            self.canonical_level,
        )

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, scales={self.scales}, "
            f"sampling_ratio={self.sampling_ratio}"
        )


@fx_leaf
def _pool_boxes(
    level_poolers: nn.ModuleList,
    x: Sequence[Tensor],
    box_lists: Sequence[Boxes | Tensor],
    min_level: int,
    max_level: int,
    canonical_box_size: float,
    canonical_level: int,
) -> Tensor:
    """:meth:`ROIPooler.forward`, one call under ``torch.fx`` tracing (as torchvision's
    ``MultiScaleRoIAlign``): each box's level decides which op pools it, which a graph of ops
    cannot record."""
    if len(x) != len(level_poolers):
        raise ValueError(f"ROIPooler: got {len(x)} feature maps for {len(level_poolers)} scales")
    num_images, channels = x[0].shape[:2]
    for level, feature in enumerate(x):
        if feature.dim() != 4 or feature.shape[:2] != (num_images, channels):
            raise ValueError(
                f"ROIPooler: every map must be [N, C, H, W] with the same N and C; map 0 "
                f"is {tuple(x[0].shape)}, map {level} is {tuple(feature.shape)}"
            )
    if len(box_lists) != num_images:
        raise ValueError(
            f"ROIPooler: got {len(box_lists)} box lists for {num_images} images; pass one per image"
        )
    rois = (
        boxes_to_rois("ROIPooler", _box_tensors(box_lists)) if box_lists else x[0].new_zeros((0, 5))
    )
    if len(level_poolers) == 1:
        return level_poolers[0](x[0], rois)

    levels = assign_boxes_to_levels(
        [rois[:, 1:]],
        min_level,
        max_level,
        canonical_box_size,
        canonical_level,
    )
    pooled = []
    for level, (feature, op) in enumerate(zip(x, level_poolers, strict=True)):
        index = torch.nonzero(levels == level).flatten()
        if index.numel() > 0:
            pooled.append((index, op(feature, rois[index])))
    if not pooled:  # no box at all: one empty op call gives the right shape and type
        return level_poolers[0](x[0], rois)
    first = pooled[0][1]
    # Every box has a level, so every row is written: no zero fill.
    output = torch.empty(
        (rois.shape[0], *first.shape[1:]),
        dtype=first.dtype,
        device=first.device,
        memory_format=pooled_memory_format(x[0]),
    )
    for index, result in pooled:
        output.index_put_((index,), result)
    return output
