"""ROIPooler, level assignment, grid deduplication, pooler choice by config, multi-map RoI heads."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from detkit import layers
from detkit.config import ConfigError, check_config, load_config
from detkit.layers import roi_pool
from detkit.modeling import (
    BACKBONE_REGISTRY,
    ROI_POOLER_REGISTRY,
    Backbone,
    ROIPooler,
    ShapeSpec,
    StandardROIHeads,
    assign_boxes_to_levels,
    build_model,
    dedup_boxes,
    pooler_class,
)
from detkit.structures import Boxes, Instances

REPO = Path(__file__).resolve().parents[2]
HAS_ROI_ALIGN = hasattr(layers, "ROIAlign")
needs_roi_align = pytest.mark.skipif(not HAS_ROI_ALIGN, reason="detkit.layers.ROIAlign missing")
PYRAMID = [1 / 4, 1 / 8, 1 / 16, 1 / 32]  # P2-P5


def square(x: float, y: float, side: float) -> list[float]:
    return [float(x), float(y), float(x + side), float(y + side)]


def reference_level(box, size=224.0, canonical=4, lowest=2, highest=5) -> int:
    """FPN's level as intervals: level k takes sqrt(area) in [size, 2 * size) * 2**(k - c)."""
    side = math.sqrt(max(box[2] - box[0], 0) * max(box[3] - box[1], 0))
    level = canonical
    while side >= size * 2.0 ** (level - canonical + 1):
        level += 1
    while side < size * 2.0 ** (level - canonical) and level > lowest - 1:
        level -= 1
    return min(max(level, lowest), highest) - lowest


# ---------------------------------------------------------------- level assignment


def test_boxes_of_112_224_448_px_go_to_levels_3_4_5_and_just_smaller_ones_one_lower() -> None:
    boxes = torch.tensor(
        [
            square(0, 0, 112),
            square(5, 5, 224),
            square(0, 0, 448),
            [0, 0, 56, 224],  # sqrt(area) = 112
            square(0, 0, 111.9),
            square(0, 0, 223.9),
            square(0, 0, 447.9),
        ]
    )
    levels = assign_boxes_to_levels([boxes], 2, 5, 224, 4)
    assert levels.dtype == torch.int64
    assert levels.tolist() == [1, 2, 3, 1, 0, 1, 2]  # levels 3, 4, 5, 3, 2, 3, 4 minus 2


def test_tiny_empty_and_huge_boxes_are_clamped_to_the_available_levels() -> None:
    boxes = torch.tensor(
        [square(3, 3, 1), [10, 10, 10, 30], [20, 20, 5, 5], square(0, 0, 5000), square(0, 0, 0.01)]
    )
    assert assign_boxes_to_levels([boxes], 2, 5, 224, 4).tolist() == [0, 0, 0, 3, 0]
    assert assign_boxes_to_levels([boxes], 3, 4, 224, 4).tolist() == [0, 0, 0, 1, 0]


def test_canonical_size_and_level_move_the_boundaries() -> None:
    boxes = torch.tensor([square(0, 0, 56), square(0, 0, 112), square(0, 0, 224), square(0, 0, 80)])
    # canonical 112 px at level 3: 56 -> 2, 112 -> 3, 224 -> 4, 80 -> 2
    assert assign_boxes_to_levels([boxes], 2, 6, 112, 3).tolist() == [0, 1, 2, 0]
    # canonical 224 px at level 5: 56 -> 3, 112 -> 4, 224 -> 5, 80 -> 3
    assert assign_boxes_to_levels([boxes], 2, 6, 224, 5).tolist() == [1, 2, 3, 1]


def test_level_assignment_matches_the_interval_rule_over_lists_of_boxes_or_tensors() -> None:
    generator = torch.Generator().manual_seed(0)
    lists = []
    for count in (30, 0, 25):
        corners = torch.randint(0, 400, (count, 2), generator=generator).float()
        sizes = (2 ** (2 + 8.5 * torch.rand(count, 2, generator=generator))).round()  # 4-1448
        lists.append(torch.cat([corners, corners + sizes], dim=1))
    expected = [reference_level(box) for boxes in lists for box in boxes.tolist()]
    assert set(expected) == {0, 1, 2, 3}
    assert assign_boxes_to_levels(lists, 2, 5, 224, 4).tolist() == expected
    assert assign_boxes_to_levels([Boxes(b) for b in lists], 2, 5, 224, 4).tolist() == expected
    mixed = [Boxes(lists[0]), lists[1], Boxes(lists[2])]
    assert assign_boxes_to_levels(mixed, 2, 5, 224, 4).tolist() == expected


# ---------------------------------------------------------------- pooling


def pyramid(num_images=2, channels=3, size=256, generator=None, channels_last=False):
    maps = [
        torch.randn(num_images, channels, size // s, size // s, generator=generator)
        for s in (4, 8, 16, 32)
    ]
    if channels_last:
        maps = [m.contiguous(memory_format=torch.channels_last) for m in maps]
    return maps


def boxes_on_every_level(generator, count=12, size=256) -> torch.Tensor:
    sides = torch.tensor([20.0, 60, 130, 180, 250, 300, 420, 500]).repeat(count // 8 + 1)[:count]
    corners = torch.rand(count, 2, generator=generator) * (size - 10)
    return torch.cat([corners, corners + sides[:, None]], dim=1)


def pooled_box_by_box(maps, box_lists, output_size=7, canonical_size=224.0, canonical_level=4):
    """Each box pooled alone from the map its interval level names, in box order."""
    rows = []
    for image, boxes in enumerate(box_lists):
        for box in boxes.tolist():
            level = reference_level(box, canonical_size, canonical_level)
            roi = torch.tensor([[0.0, *box]])
            rows.append(roi_pool(maps[level][image : image + 1], roi, output_size, PYRAMID[level]))
    return torch.cat(rows)


def test_one_map_pools_like_one_direct_op_call_bitwise() -> None:
    generator = torch.Generator().manual_seed(1)
    feature = torch.randn(2, 4, 20, 24, generator=generator)
    a = torch.tensor([[0.0, 0, 100, 90], [30, 40, 200, 150], [8, 8, 9, 9]])
    b = torch.tensor([[50.0, 10, 300, 310]])
    pooler = ROIPooler(7, [1 / 16], 0, "ROIPool")
    calls = []
    pooler.level_poolers[0].register_forward_hook(lambda *args: calls.append(1))
    rois = torch.tensor(
        [[0.0, 0, 0, 100, 90], [0, 30, 40, 200, 150], [0, 8, 8, 9, 9], [1, 50, 10, 300, 310]]
    )
    expected = roi_pool(feature, rois, 7, 1 / 16)
    assert torch.equal(pooler([feature], [a, b]), expected)
    assert torch.equal(pooler([feature], [Boxes(a), Boxes(b)]), expected)
    assert len(calls) == 2  # one op call per forward


def test_several_maps_pool_each_box_from_its_level_in_box_order() -> None:
    generator = torch.Generator().manual_seed(2)
    maps = pyramid(generator=generator)
    box_lists = [boxes_on_every_level(generator, 13), boxes_on_every_level(generator, 9)]
    levels = {reference_level(box) for boxes in box_lists for box in boxes.tolist()}
    assert levels == {0, 1, 2, 3}
    pooler = ROIPooler((7, 5), PYRAMID, 0, "ROIPool")
    output = pooler(maps, [Boxes(b) for b in box_lists])
    assert output.shape == (22, 3, 7, 5)
    assert torch.equal(output, pooled_box_by_box(maps, box_lists, (7, 5)))


@needs_roi_align
@pytest.mark.parametrize("pooler_type, aligned", [("ROIAlign", False), ("ROIAlignV2", True)])
def test_several_maps_with_roi_align_match_torchvision_box_by_box(pooler_type, aligned) -> None:
    generator = torch.Generator().manual_seed(7)
    maps = pyramid(generator=generator)
    box_lists = [boxes_on_every_level(generator, 11), boxes_on_every_level(generator, 7)]
    expected = []
    for image, boxes in enumerate(box_lists):
        for box in boxes.tolist():
            level = reference_level(box)
            roi = torch.tensor([[0.0, *box]])
            feature = maps[level][image : image + 1]
            expected.append(
                torchvision.ops.roi_align(feature, roi, 7, PYRAMID[level], 2, aligned=aligned)
            )
    output = ROIPooler(7, PYRAMID, 2, pooler_type)(maps, box_lists)
    torch.testing.assert_close(output, torch.cat(expected), rtol=1e-5, atol=1e-6)


def test_gradients_reach_every_level_as_box_by_box_pooling_gives_them() -> None:
    generator = torch.Generator().manual_seed(3)
    maps = [m.requires_grad_() for m in pyramid(generator=generator)]
    reference_maps = [m.detach().clone().requires_grad_() for m in maps]
    box_lists = [boxes_on_every_level(generator, 16), boxes_on_every_level(generator, 8)]
    weights = torch.randn(24, 3, 7, 7, generator=generator)
    (ROIPooler(7, PYRAMID, 0, "ROIPool")(maps, box_lists) * weights).sum().backward()
    (pooled_box_by_box(reference_maps, box_lists) * weights).sum().backward()
    for level, (m, reference) in enumerate(zip(maps, reference_maps, strict=True)):
        assert m.grad.abs().sum() > 0, f"no gradient at level {level}"
        torch.testing.assert_close(m.grad, reference.grad)


def test_no_boxes_give_an_empty_result_and_levels_without_boxes_are_skipped() -> None:
    generator = torch.Generator().manual_seed(4)
    maps = [m.requires_grad_() for m in pyramid(generator=generator)]
    pooler = ROIPooler(7, PYRAMID, 0, "ROIPool")
    empty = pooler(maps, [torch.zeros(0, 4), Boxes(torch.zeros(0, 4))])
    assert empty.shape == (0, 3, 7, 7)
    empty.sum().backward()  # a graph without RoIs still runs backward
    # boxes on levels 0 and 2 only (P3 and P5 get none)
    boxes = [
        torch.tensor([square(10, 10, 40), square(0, 0, 300)]),
        torch.tensor([square(5, 9, 50)]),
    ]
    assert {reference_level(b) for bs in boxes for b in bs.tolist()} == {0, 2}
    assert torch.equal(pooler(maps, boxes), pooled_box_by_box(maps, boxes))


def test_channels_last_maps_give_the_same_values_in_channels_last() -> None:
    generator = torch.Generator().manual_seed(5)
    maps = pyramid(channels=6, generator=generator)
    box_lists = [boxes_on_every_level(generator, 10), boxes_on_every_level(generator, 10)]
    pooler = ROIPooler(7, PYRAMID, 0, "ROIPool")
    last = [m.contiguous(memory_format=torch.channels_last) for m in maps]
    output = pooler(last, box_lists)
    assert output.is_contiguous(memory_format=torch.channels_last) and not output.is_contiguous()
    assert torch.equal(output, pooler(maps, box_lists))
    one = ROIPooler(7, [1 / 4], 0, "ROIPool")([last[0]], box_lists)
    assert one.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(
    "scales",
    [[1 / 4, 1 / 16], [1 / 3, 1 / 6], [1 / 8, 1 / 4], [1 / 4, 1 / 4], [0.0], [], [-0.25]],
    ids=["gap", "not-powers-of-two", "coarsest-first", "repeated", "zero", "none", "negative"],
)
def test_scales_other_than_consecutive_powers_of_two_are_refused(scales) -> None:
    with pytest.raises(ValueError, match=r"ROIPooler: .*scales"):
        ROIPooler(7, scales, 0, "ROIPool")


def test_one_map_may_have_any_stride() -> None:
    feature = torch.randn(1, 2, 10, 10)
    box = torch.tensor([[3.0, 3, 20, 25]])
    output = ROIPooler(3, [1 / 3], 0, "ROIPool")([feature], [box])
    assert torch.equal(output, roi_pool(feature, torch.tensor([[0.0, 3, 3, 20, 25]]), 3, 1 / 3))


def test_forward_refuses_mismatched_maps_and_box_lists() -> None:
    maps = pyramid()
    pooler = ROIPooler(7, PYRAMID, 0, "ROIPool")
    boxes = [torch.zeros(0, 4)] * 2
    with pytest.raises(ValueError, match="3 feature maps for 4 scales"):
        pooler(maps[:3], boxes)
    with pytest.raises(ValueError, match=r"same N and C; map 0 is .*map 2 is"):
        pooler([maps[0], maps[1], torch.zeros(2, 5, 16, 16), maps[3]], boxes)
    with pytest.raises(ValueError, match="1 box lists for 2 images"):
        pooler(maps, boxes[:1])
    with pytest.raises(ValueError, match=r"box_lists\[1\] must be Boxes or a Tensor\[Ki, 4\]"):
        pooler(maps, [torch.zeros(0, 4), torch.zeros(3, 5)])


# ---------------------------------------------------------------- torch.fx


class PoolsAsHeadsDo(nn.Module):
    """A module using the pooler as a detector's heads do: named maps in, boxes per image."""

    def __init__(self, scales: list[float], pooler_type: str) -> None:
        super().__init__()
        self.names = [f"p{index}" for index in range(len(scales))]
        self.pooler = ROIPooler(5, scales, 2, pooler_type)

    def forward(self, features: dict[str, torch.Tensor], boxes: torch.Tensor) -> torch.Tensor:
        maps = [torch.relu(features[name]) for name in self.names]
        return self.pooler(maps, [boxes[:3], boxes[3:]]) * 2


@pytest.mark.parametrize(
    "scales, pooler_type",
    [([1 / 16], "ROIPool"), pytest.param(PYRAMID, "ROIAlignV2", marks=needs_roi_align)],
    ids=["one map", "FPN"],
)
def test_fx_symbolic_trace_keeps_the_pooler_as_one_leaf_call_that_pools_as_eager(
    scales: list[float], pooler_type: str
) -> None:
    """As torchvision's MultiScaleRoIAlign: the pooler is one call in the graph (each box's
    level decides which op pools it, which a graph of ops cannot record), and the traced
    module pools as the eager one, for other boxes than any seen while tracing; the pooler
    itself traces too."""
    model = PoolsAsHeadsDo(scales, pooler_type)
    traced = torch.fx.symbolic_trace(model)
    calls = [n.target for n in traced.graph.nodes if n.op == "call_function"]
    pools = [target for target in calls if "pool" in target.__name__]
    # per map a lookup and a relu; two slices of the boxes; the pooler; the product
    assert len(pools) == 1 and len(calls) == 2 * len(scales) + 4, traced.graph
    generator = torch.Generator().manual_seed(8)
    maps = pyramid(generator=generator) if len(scales) > 1 else [torch.randn(2, 3, 16, 16)]
    features = dict(zip(model.names, maps, strict=True))
    for count in (7, 12):
        boxes = boxes_on_every_level(generator, count)
        assert torch.equal(traced(features, boxes), model(features, boxes))
    pooler = torch.fx.symbolic_trace(model.pooler)
    box_lists = [boxes[:5], boxes[5:]]
    assert torch.equal(pooler(maps, box_lists), model.pooler(maps, box_lists))


# ---------------------------------------------------------------- pooler types by config

SMALL = [
    "MODEL.ROI_HEADS.NUM_CLASSES=3",
    "MODEL.ROI_BOX_HEAD.FC_DIM=32",
    "MODEL.PIXEL_STD=[58.0, 57.0, 57.0]",
]


def small_config(*overrides: str):
    return load_config(REPO / "configs" / "Base-FastRCNN.yaml", [*SMALL, *overrides])


def heads_from_config(shapes: dict[str, ShapeSpec], *overrides: str) -> StandardROIHeads:
    return StandardROIHeads.from_config(small_config(*overrides), shapes)


TWO_MAPS = {"c3": ShapeSpec(channels=4, stride=8), "c4": ShapeSpec(channels=4, stride=16)}


@pytest.mark.parametrize(
    "pooler_type",
    [
        "ROIPool",
        pytest.param("ROIAlign", marks=needs_roi_align),
        pytest.param("ROIAlignV2", marks=needs_roi_align),
    ],
)
def test_pooler_type_from_config_builds_the_named_op(pooler_type: str) -> None:
    heads = heads_from_config(
        TWO_MAPS,
        f"MODEL.ROI_BOX_HEAD.POOLER_TYPE={pooler_type}",
        "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO=2",
        "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION=5",
    )
    pooler = heads.pooler
    assert pooler.scales == (1 / 8, 1 / 16) and pooler.output_size == (5, 5)
    generator = torch.Generator().manual_seed(6)
    feature = torch.randn(1, 4, 12, 14, generator=generator, dtype=torch.float64)
    rois = torch.tensor([[0.0, 3.3, 4.1, 60.7, 80.2], [0, 10, 0, 30, 44.5]], dtype=torch.float64)
    for op, scale in zip(pooler.level_poolers, (1 / 8, 1 / 16), strict=True):
        if pooler_type == "ROIPool":
            expected = torchvision.ops.roi_pool(feature, rois, 5, scale)
        else:
            aligned = pooler_type == "ROIAlignV2"
            expected = torchvision.ops.roi_align(feature, rois, 5, scale, 2, aligned=aligned)
        torch.testing.assert_close(op(feature, rois), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("pooler_type, aligned", [("ROIAlign", False), ("ROIAlignV2", True)])
def test_roi_align_types_pass_scale_sampling_ratio_and_aligned_to_the_layer(
    pooler_type: str, aligned: bool
) -> None:
    heads = heads_from_config(
        TWO_MAPS,
        f"MODEL.ROI_BOX_HEAD.POOLER_TYPE={pooler_type}",
        "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO=3",
    )
    built = [
        (op.output_size, op.spatial_scale, op.sampling_ratio, op.aligned)
        for op in heads.pooler.level_poolers
    ]
    assert all(isinstance(op, layers.ROIAlign) for op in heads.pooler.level_poolers)
    assert built == [((7, 7), 1 / 8, 3, aligned), ((7, 7), 1 / 16, 3, aligned)]


@pytest.mark.parametrize("size, level", [(112, 4), (224, 5), (448, 3)])
def test_from_config_assigns_levels_by_the_configs_canonical_size_and_level(
    size: int, level: int
) -> None:
    """POOLER_CANONICAL_BOX_SIZE and _LEVEL reach the pooler: with 112 (level 4) a 112 px box
    is pooled from P4, not P3 as with the defaults."""
    cfg = small_config(
        "MODEL.ROI_BOX_HEAD.POOLER_TYPE=ROIPool",
        f"MODEL.ROI_BOX_HEAD.POOLER_CANONICAL_BOX_SIZE={size}",
        f"MODEL.ROI_BOX_HEAD.POOLER_CANONICAL_LEVEL={level}",
    )
    pooler = ROIPooler.from_config(cfg, PYRAMID)
    generator = torch.Generator().manual_seed(9)
    maps = pyramid(generator=generator)
    box_lists = [boxes_on_every_level(generator, 16), boxes_on_every_level(generator, 9)]
    expected = pooled_box_by_box(maps, box_lists, 7, size, level)
    assert torch.equal(pooler(maps, box_lists), expected)
    assert not torch.equal(expected, pooled_box_by_box(maps, box_lists))  # the keys matter


def test_unknown_pooler_type_names_the_registered_ones() -> None:
    known = "no 'ROIMagic' in the ROI_POOLER registry; registered: ROIAlign, ROIAlignV2, ROIPool"
    with pytest.raises(ValueError, match=re.escape(f"ROIPooler: pooler_type: {known}")):
        ROIPooler(7, [1 / 16], 0, "ROIMagic")
    with pytest.raises(ValueError, match=r"MODEL.ROI_BOX_HEAD.POOLER_TYPE: .*'ROIMagic'.*ROIPool"):
        heads_from_config(TWO_MAPS, "MODEL.ROI_BOX_HEAD.POOLER_TYPE=ROIMagic")


def test_the_config_check_the_heads_and_the_pooler_say_the_same_of_an_unknown_type() -> None:
    """One check, pooler_class: the up-front config check, the heads built from the config and
    ROIPooler built by hand give the same message, with the closest registered name."""
    unknown = (
        "no 'ROIAlignV3' in the ROI_POOLER registry; registered: ROIAlign, ROIAlignV2, ROIPool; "
        "did you mean 'ROIAlignV2'?"
    )
    with pytest.raises(ValueError) as by_name:
        pooler_class("ROIAlignV3")
    assert str(by_name.value) == unknown
    with pytest.raises(ValueError, match=re.escape(f"ROIPooler: pooler_type: {unknown}")):
        ROIPooler(7, [1 / 16], 0, "ROIAlignV3")
    cfg = small_config("MODEL.ROI_BOX_HEAD.POOLER_TYPE=ROIAlignV3")
    with pytest.raises(ConfigError) as checked:
        check_config(cfg)
    assert f"MODEL.ROI_BOX_HEAD.POOLER_TYPE: {unknown}" in str(checked.value).split("\n  ")
    with pytest.raises(ValueError) as built:
        heads_from_config(TWO_MAPS, "MODEL.ROI_BOX_HEAD.POOLER_TYPE=ROIAlignV3")
    assert str(built.value).endswith(f"MODEL.ROI_BOX_HEAD.POOLER_TYPE: {unknown}")


class TorchvisionAlignedPooler(torchvision.ops.RoIAlign):
    """A pooler type that no registry holds: torchvision's RoIAlign with the offset."""

    def __init__(self, output_size, spatial_scale, sampling_ratio):
        super().__init__(output_size, spatial_scale, sampling_ratio, aligned=True)


def test_a_pooler_type_given_as_a_class_is_built_once_per_map() -> None:
    pooler = ROIPooler(5, [1 / 8, 1 / 16], 2, TorchvisionAlignedPooler)
    assert [type(op) for op in pooler.level_poolers] == [TorchvisionAlignedPooler] * 2
    assert [op.spatial_scale for op in pooler.level_poolers] == [1 / 8, 1 / 16]
    feature = torch.randn(1, 4, 12, 14, generator=torch.Generator().manual_seed(2))
    rois = torch.tensor([[0.0, 3.3, 4.1, 60.7, 80.2]])
    expected = torchvision.ops.roi_align(feature, rois, 5, 1 / 16, 2, aligned=True)
    torch.testing.assert_close(pooler.level_poolers[1](feature, rois), expected)
    assert pooler_class(TorchvisionAlignedPooler) is TorchvisionAlignedPooler
    assert pooler_class("ROIAlignV2") is ROI_POOLER_REGISTRY.get("ROIAlignV2")


def test_anything_but_a_name_or_a_pooler_class_is_refused_saying_what_a_pooler_type_is() -> None:
    class TwoArguments(nn.Module):
        def __init__(self, output_size, spatial_scale):
            super().__init__()

    with pytest.raises(ValueError, match=r"ROIPooler: pooler_type: .*is not a torch.nn.Module"):
        ROIPooler(7, [1 / 16], 0, lambda scale: layers.ROIPool(7, scale))
    with pytest.raises(ValueError, match=r"constructor of TwoArguments does not take \(output_"):
        ROIPooler(7, [1 / 16], 0, TwoArguments)
    for entry in (TwoArguments, lambda cfg, scale: layers.ROIPool(7, scale)):
        with pytest.raises(TypeError, match=r"ROI_POOLER registry: cannot register .*An entry "
                           r"must be an nn.Module class whose constructor takes \(output_size, "
                           r"spatial_scale, sampling_ratio\)"):
            ROI_POOLER_REGISTRY.register(name="NotAPoolerType")(entry)
    assert "NotAPoolerType" not in ROI_POOLER_REGISTRY


def test_in_features_default_to_every_map_finest_first_and_are_checked() -> None:
    shapes = {"c4": ShapeSpec(4, 16), "c2": ShapeSpec(4, 4), "c3": ShapeSpec(4, 8)}
    heads = heads_from_config(shapes)
    assert heads.in_features == ["c2", "c3", "c4"]
    assert heads.pooler.scales == (1 / 4, 1 / 8, 1 / 16)
    assert heads.box_head.fc6.in_features == 4 * 7 * 7  # (channels, resolution, resolution)
    one = heads_from_config(shapes, "MODEL.ROI_HEADS.IN_FEATURES=[c3]")
    assert one.in_features == ["c3"] and one.pooler.scales == (1 / 8,)
    with pytest.raises(ValueError, match=r"names \['p9'\].*produces \['c4', 'c2', 'c3'\]"):
        heads_from_config(shapes, "MODEL.ROI_HEADS.IN_FEATURES=[c2, p9]")
    with pytest.raises(ValueError, match="finest first"):
        heads_from_config(shapes, "MODEL.ROI_HEADS.IN_FEATURES=[c3, c2]")
    with pytest.raises(ValueError, match=r"cannot pool from \{'c2': 4, 'c4': 16\}.*consecutive"):
        heads_from_config(shapes, "MODEL.ROI_HEADS.IN_FEATURES=[c2, c4]")
    mixed = {"c3": ShapeSpec(4, 8), "c4": ShapeSpec(6, 16)}
    with pytest.raises(ValueError, match=r"same number of channels, got \{'c3': 4, 'c4': 6\}"):
        heads_from_config(mixed)


@BACKBONE_REGISTRY.register()
class TwoMapsTestBackbone(Backbone):
    """Two maps of 4 channels at strides 8 and 16."""

    def __init__(self) -> None:
        super().__init__()
        self.c3 = nn.Conv2d(3, 4, kernel_size=8, stride=8)
        self.c4 = nn.Conv2d(4, 4, kernel_size=2, stride=2)

    @classmethod
    def from_config(cls, cfg, input_shape) -> TwoMapsTestBackbone:
        return cls()

    def forward(self, images):
        c3 = self.c3(images)
        return {"c3": c3, "c4": self.c4(c3)}

    def output_shape(self):
        return TWO_MAPS


def model_input(size: int, with_targets: bool = True) -> dict:
    sides = [30.0, 60, 100, 200, 240, 300]  # levels 3, 3, 3, 3, 4, 4 (clamped to c3 / c4)
    proposals = Boxes(torch.tensor([square(4 * i, 3 * i, side) for i, side in enumerate(sides)]))
    item = {
        "image": torch.randint(0, 256, (3, size, size), dtype=torch.uint8),
        "proposals": Instances((size, size), proposal_boxes=proposals),
    }
    if with_targets:
        gt = Boxes(torch.tensor([square(2, 2, 58), square(10, 10, 280)]))
        item["instances"] = Instances((size, size), gt_boxes=gt, gt_classes=torch.tensor([0, 2]))
    return item


def test_heads_on_two_maps_of_different_strides_train_and_infer() -> None:
    torch.manual_seed(0)
    model = build_model(small_config("MODEL.BACKBONE.NAME=TwoMapsTestBackbone"))
    assert model.roi_heads.in_features == ["c3", "c4"]
    losses = model.train()([model_input(320), model_input(336)])
    assert set(losses) == {"loss_cls", "loss_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.backbone.c3.weight.grad.abs().sum() > 0
    assert model.backbone.c4.weight.grad.abs().sum() > 0  # boxes pooled from c4 too
    with torch.no_grad():
        (output,) = model.eval()([model_input(320, with_targets=False)])
    assert set(output["instances"].get_fields()) == {"pred_boxes", "scores", "pred_classes"}


# ---------------------------------------------------------------- deduplication on the grid

# Boxes in the given (objectness) order, with their corners at 1/16 and at 1/4, rounded half
# away from zero as RoI pooling rounds them:
GRID_BOXES = torch.tensor(
    [
        [0.0, 0, 40, 40],  # 1/16: 0, 0, 3 (2.5), 3      1/4: 0, 0, 10, 10
        [7, 7, 44, 44],  # 1/16: 0, 0, 3, 3 = box 0      1/4: 2 (1.75), 2, 11, 11
        [8, 0, 40, 40],  # 1/16: 1 (0.5), 0, 3, 3        1/4: 2, 0, 10, 10
        [0, 0, 24, 24],  # 1/16: 0, 0, 2 (1.5), 2        1/4: 0, 0, 6, 6
        [0, 0, 23, 23],  # 1/16: 0, 0, 1 (1.4375), 1     1/4: 0, 0, 6 (5.75), 6 = box 3
        [0, 0, 40, 40],  # = box 0 on every grid
    ]
)


def test_dedup_keeps_the_first_of_boxes_that_coincide_on_the_maps_grid() -> None:
    assert dedup_boxes(GRID_BOXES, [1 / 16]).tolist() == [0, 2, 3, 4]
    assert dedup_boxes(Boxes(GRID_BOXES), [1 / 4]).tolist() == [0, 1, 2, 3]
    assert dedup_boxes(GRID_BOXES.flip(0), [1 / 16]).tolist() == [0, 1, 2, 3]  # the first wins
    assert dedup_boxes(torch.zeros(0, 4), [1 / 16]).tolist() == []


def test_dedup_on_several_maps_uses_each_boxs_level_and_its_grid() -> None:
    boxes = torch.tensor(
        [
            square(0, 0, 100),  # level 2 (1/4): 0, 0, 25, 25
            square(4, 4, 98),  # level 2: 1, 1, 26 (25.5), 26, kept, though box 0's twin at 1/16
            square(0, 0, 200),  # level 3 (1/8): 0, 0, 25, 25, kept (same numbers, other level)
            square(0, 0, 300),  # level 4 (1/16): 0, 0, 19 (18.75), 19
            square(3, 3, 300),  # level 4: 0, 0, 19 (18.9375), 19, a duplicate of box 3
            square(2, 2, 90),  # level 2: 1 (0.5), 1, 23, 23, kept
            square(0.5, 0.5, 100),  # level 2: 0 (0.125), 0, 25 (25.125), 25, a duplicate of box 0
        ]
    )
    assert [reference_level(b) for b in boxes.tolist()] == [0, 0, 1, 2, 2, 0, 0]
    assert dedup_boxes(boxes, PYRAMID).tolist() == [0, 1, 2, 3, 5]
    # canonical size and level change the levels: everything on level 2 (1/4) with 2000 px
    assert dedup_boxes(boxes, PYRAMID, canonical_box_size=2000).tolist() == [0, 1, 2, 3, 4, 5]


def one_map_heads(stride: int, *overrides: str) -> StandardROIHeads:
    return heads_from_config(
        {"features": ShapeSpec(channels=4, stride=stride)},
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE=512",  # every labelled RoI is sampled
        "MODEL.ROI_HEADS.IOU_THRESHOLDS=[0.5]",  # and none is ignored
        "MODEL.ROI_HEADS.IOU_LABELS=[0, 1]",
        *overrides,
    )


def pooled_boxes(heads: StandardROIHeads) -> list[torch.Tensor]:
    seen = []
    heads.pooler.register_forward_hook(
        lambda module, args, output: seen.append([b.tensor for b in args[1]])
    )
    return seen


def test_heads_remove_grid_duplicates_before_sampling_but_never_ground_truth() -> None:
    features = {"features": torch.randn(1, 4, 30, 30)}
    proposals = [Instances((120, 120), proposal_boxes=Boxes(GRID_BOXES.clone()))]
    # ground truth equal to box 0 and box 4: appended after deduplication, so kept
    gt = Instances((120, 120), gt_boxes=Boxes(GRID_BOXES[[0, 4]]), gt_classes=torch.tensor([0, 1]))
    for stride, kept in ((16, [0, 2, 3, 4]), (4, [0, 1, 2, 3])):
        heads = one_map_heads(stride).train()
        seen = pooled_boxes(heads)
        heads(features, proposals, [gt])
        expected = torch.cat([GRID_BOXES[kept], GRID_BOXES[[0, 4]]])
        assert sorted(seen[0][0].tolist()) == sorted(expected.tolist())
        assert len(proposals[0]) == 6  # the caller's proposals are left as they were


def test_heads_remove_grid_duplicates_before_scoring_unless_told_not_to() -> None:
    features = {"features": torch.randn(1, 4, 30, 30)}
    proposals = [Instances((120, 120), proposal_boxes=Boxes(GRID_BOXES.clone()))]
    for overrides, kept in (((), [0, 2, 3, 4]), (("MODEL.ROI_HEADS.DEDUP_PROPOSALS=false",), None)):
        heads = one_map_heads(16, *overrides).eval()
        seen = pooled_boxes(heads)
        with torch.no_grad():
            heads(features, proposals)
        expected = GRID_BOXES if kept is None else GRID_BOXES[kept]
        assert torch.equal(seen[0][0], expected)  # in the given order


# ---------------------------------------------------------------- docs/extending.md


@pytest.fixture
def pooler_type_example():
    text = (REPO / "docs" / "extending.md").read_text()
    section = text.split("## A pooler type", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    before = {name for name, _ in ROI_POOLER_REGISTRY}
    namespace: dict = {}
    exec(compile(code, "docs/extending.md", "exec"), namespace)
    (added,) = {name for name, _ in ROI_POOLER_REGISTRY} - before
    yield added, section
    ROI_POOLER_REGISTRY._obj_map.pop(added)  # fvcore offers no public way to unregister


def test_the_documented_pooler_type_example_registers_and_is_picked_by_config(
    pooler_type_example,
) -> None:
    name, section = pooler_type_example
    assert f"POOLER_TYPE: {name}" in section
    heads = heads_from_config(
        TWO_MAPS,
        f"MODEL.ROI_BOX_HEAD.POOLER_TYPE={name}",
        "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO=2",
    )
    feature = torch.randn(2, 4, 20, 20)
    rois = torch.tensor([[1.0, 3.3, 4.1, 60.7, 80.2]])
    expected = torchvision.ops.roi_align(feature, rois, 7, 1 / 16, 2, aligned=True)
    torch.testing.assert_close(heads.pooler.level_poolers[1](feature, rois), expected)
