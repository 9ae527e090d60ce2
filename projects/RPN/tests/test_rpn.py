"""The RPN's parts against hand-worked cases and torchvision: anchors at the declared strides,
the head's outputs read in the anchors' order, anchor labels (IoU bands and each box's best
anchors), the losses' sampling and normalisation, proposals (per-map top-k and NMS, logits
kept), the meta-architecture in both modes, the P6 backbone, and the configs' settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rpn import (
    RPN,
    ProposalNetwork,
    ResNetFPNP6,
    RPNKeys,
    add_rpn_config,
    build_anchor_generator,
)
from torch import nn
from torch.nn import functional
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RPNHead

from detkit.config import ConfigError, check_config, get_default_config, load_config
from detkit.config.reference import generated_part, markdown_reference
from detkit.modeling import Box2BoxTransform, FastRCNNSampler, Matcher, ShapeSpec, build_model
from detkit.modeling.sampling import set_sampling_generator
from detkit.structures import Boxes, Instances

PROJECT = Path(__file__).resolve().parents[1]
SHAPES_CONFIG = PROJECT / "configs" / "shapes_rpn.yaml"
COCO_CONFIG = PROJECT / "configs" / "rpn_R_50_FPN_1x.yaml"


def project_config(path: Path = SHAPES_CONFIG, *overrides: str):
    return load_config(path, overrides, defaults=add_rpn_config(get_default_config()))


class FixedHead(nn.Module):
    """A head that returns given logits and deltas, whatever the maps."""

    def __init__(self, logits: list[torch.Tensor], deltas: list[torch.Tensor]) -> None:
        super().__init__()
        self.logits, self.deltas = logits, deltas

    def forward(self, maps):
        return self.logits, self.deltas


def make_rpn(
    sizes=((16,),),
    ratios=((1.0,),),
    strides=(4,),
    head: nn.Module | None = None,
    pre_nms_topk: int = 100,
    post_nms_topk: int = 100,
    nms_thresh: float = 0.7,
    min_size: float = 0.0,
    batch_size_per_image: int = 4,
) -> RPN:
    anchors = build_anchor_generator(sizes, ratios, len(strides))
    return RPN(
        [f"m{i}" for i in range(len(strides))],
        strides,
        anchors,
        head or RPNHead(4, anchors.num_anchors_per_location()[0]),
        Matcher([0.3, 0.7], [0, -1, 1]),
        FastRCNNSampler(batch_size_per_image, 0.5),
        Box2BoxTransform((1.0, 1.0, 1.0, 1.0)),
        pre_nms_topk,
        post_nms_topk,
        nms_thresh,
        min_size,
    )


def test_anchors_sit_on_the_map_at_its_declared_stride() -> None:
    rpn = make_rpn(sizes=((16,),), strides=(4,))
    (anchors,) = rpn.anchors([torch.zeros(1, 4, 2, 3)])
    centres = [(x * 4, y * 4) for y in range(2) for x in range(3)]
    expected = torch.tensor([[x - 8, y - 8, x + 8, y + 8] for x, y in centres], dtype=torch.float)
    torch.testing.assert_close(anchors, expected, rtol=0, atol=0)


def test_anchors_equal_torchvisions_where_it_infers_the_stride_right() -> None:
    sizes, ratios = ((16, 32),), ((0.5, 1.0, 2.0),)
    rpn = make_rpn(sizes=sizes, ratios=ratios, strides=(8,))
    feature = torch.zeros(1, 4, 5, 7)
    images = ImageList(torch.zeros(1, 3, 40, 56), [(40, 56)])
    (theirs,) = AnchorGenerator(sizes, ratios)(images, [feature])
    torch.testing.assert_close(torch.cat(rpn.anchors([feature])), theirs, rtol=0, atol=0)


def test_an_odd_sized_p6_gets_anchors_every_64_pixels() -> None:
    """A 96-pixel image: p5 is 3x3 and p6 2x2; 96 // 2 would put p6's anchors 48 pixels apart."""
    rpn = make_rpn(sizes=((32,), (64,)), strides=(32, 64))
    _, p6 = rpn.anchors([torch.zeros(1, 4, 3, 3), torch.zeros(1, 4, 2, 2)])
    centres = (p6[:, :2] + p6[:, 2:]) / 2
    assert centres.tolist() == [[0, 0], [64, 0], [0, 64], [64, 64]]


def test_the_heads_outputs_are_read_in_the_anchors_order() -> None:
    """Two anchors per cell on a 2x3 map: the logit at (anchor 1, row 1, column 2) and its
    deltas pick anchor 1 of that cell, moved by those deltas."""
    logits = torch.full((1, 2, 2, 3), -5.0)
    logits[0, 1, 1, 2] = 5.0
    deltas = torch.zeros(1, 8, 2, 3)
    deltas[0, 4:8, 1, 2] = torch.tensor([0.25, -0.5, 0.0, 0.0])  # anchor 1's (dx, dy, dw, dh)
    rpn = make_rpn(sizes=((8, 16),), strides=(4,), head=FixedHead([logits], [deltas])).eval()
    (result,) = rpn([(100, 100)], {"m0": torch.zeros(1, 4, 2, 3)})
    cx, cy = 2 * 4 + 0.25 * 16, 1 * 4 - 0.5 * 16  # anchor 1 is 16 px wide
    best = result.proposal_boxes.tensor[0]
    torch.testing.assert_close(best, torch.tensor([cx - 8, max(cy - 8, 0), cx + 8, cy + 8]))
    assert result.objectness_logits[0] == 5.0


def test_anchors_are_labelled_by_the_bands_and_each_boxs_best_anchors_are_objects() -> None:
    rpn = make_rpn()
    anchors = torch.tensor(
        [
            [0, 0, 10, 10],  # IoU 1 with box 0: object
            [0, 0, 10, 20],  # IoU 0.5: between the bands, ignored
            [0, 0, 10, 40],  # IoU 0.25: background
            [100, 100, 110, 110],  # IoU 0.16 with box 1, its best anchor: object
            [200, 200, 210, 210],  # touches nothing: background
        ],
        dtype=torch.float,
    )
    gt = torch.tensor([[0, 0, 10, 10], [100, 100, 104, 104]], dtype=torch.float)
    matches, labels = rpn.label_anchors(anchors, gt)
    assert labels.tolist() == [1, -1, 0, 1, 0]
    assert matches[[0, 3]].tolist() == [0, 1]
    _, labels = rpn.label_anchors(anchors, torch.zeros(0, 4))
    assert labels.tolist() == [0, 0, 0, 0, 0]


def test_tied_best_anchors_of_a_box_are_all_objects() -> None:
    rpn = make_rpn()
    anchors = torch.tensor([[0, 0, 10, 10], [10, 0, 20, 10], [40, 40, 50, 50]], dtype=torch.float)
    _, labels = rpn.label_anchors(anchors, torch.tensor([[5.0, 0.0, 15.0, 10.0]]))
    assert labels.tolist() == [1, 1, 0]  # both at IoU 1/3, below the 0.7 band


def test_the_losses_are_summed_over_the_sampled_anchors_and_divided_by_the_batch() -> None:
    """One 1x2 map, two anchors per cell (4 anchors): with 4 sampled per image (at most 2
    objects) every labelled anchor is sampled, so the losses follow by hand."""
    logits = torch.tensor([[[[2.0, -1.0]], [[0.5, -3.0]]]])  # [N, A, H, W]
    deltas = torch.zeros(1, 8, 1, 2)
    deltas[0, 0:4, 0, 0] = torch.tensor([0.1, -0.2, 0.3, 0.0])  # anchor 0 of cell 0
    rpn = make_rpn(sizes=((16, 64),), strides=(16,), head=FixedHead([logits], [deltas]))
    # anchors in order: cell 0 size 16, cell 0 size 64, cell 1 size 16, cell 1 size 64
    gt = Instances((32, 48), gt_boxes=Boxes(torch.tensor([[-8.0, -8.0, 8.0, 8.0]])))
    set_sampling_generator(torch.Generator().manual_seed(0))
    try:
        losses = rpn.train()([(32, 48)], {"m0": torch.zeros(1, 4, 1, 2)}, [gt])
        rpn.box_loss_weight = 3.0
        weighted = rpn([(32, 48)], {"m0": torch.zeros(1, 4, 1, 2)}, [gt])
    finally:
        set_sampling_generator(None)
    torch.testing.assert_close(weighted["loss_rpn_cls"], losses["loss_rpn_cls"])
    torch.testing.assert_close(weighted["loss_rpn_loc"], losses["loss_rpn_loc"] * 3)
    # labels: anchor 0 is the box (object); 1 and 3 (IoU 1/16) and 2 (IoU 0) background
    flat_logits = torch.tensor([2.0, 0.5, -1.0, -3.0])
    targets = torch.tensor([1.0, 0.0, 0.0, 0.0])
    expected_cls = functional.binary_cross_entropy_with_logits(
        flat_logits, targets, reduction="sum"
    )
    torch.testing.assert_close(losses["loss_rpn_cls"], expected_cls / 4)
    torch.testing.assert_close(losses["loss_rpn_loc"], torch.tensor(0.1 + 0.2 + 0.3) / 4)


def test_the_losses_reach_the_head_and_an_image_without_objects_trains_background() -> None:
    torch.manual_seed(0)
    rpn = make_rpn(sizes=((16,),), strides=(4,), batch_size_per_image=16).train()
    features = {"m0": torch.randn(2, 4, 6, 6, requires_grad=True)}
    targets = [
        Instances((24, 24), gt_boxes=Boxes(torch.tensor([[2.0, 2.0, 18.0, 18.0]]))),
        Instances((24, 24), gt_boxes=Boxes(torch.zeros(0, 4))),
    ]
    losses = rpn([(24, 24)] * 2, features, targets)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert rpn.head.cls_logits.weight.grad.abs().sum() > 0
    assert rpn.head.bbox_pred.weight.grad.abs().sum() > 0


def test_proposals_keep_the_best_of_each_map_then_the_best_overall_with_their_logits() -> None:
    """Two maps, one anchor per cell; NMS runs within a map only, so the same box from both
    maps survives; the logits are kept as logits (30 is not rounded to a probability of 1)."""
    fine = torch.full((1, 1, 2, 2), -10.0)
    fine[0, 0, 0, 0], fine[0, 0, 0, 1] = 30.0, 29.0  # two overlapping anchors of map 0
    coarse = torch.full((1, 1, 1, 1), 20.0)
    head = FixedHead([fine, coarse], [torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 1, 1)])
    rpn = make_rpn(
        sizes=((16,), (16,)), strides=(2, 8), head=head, pre_nms_topk=2, nms_thresh=0.5
    ).eval()
    maps = {"m0": torch.zeros(1, 4, 2, 2), "m1": torch.zeros(1, 4, 1, 1)}
    (result,) = rpn([(50, 50)], maps)
    # map 0's second anchor ([ -6, -8, 10, 8] clipped) overlaps its first by more than 0.5
    assert result.objectness_logits.tolist() == [30.0, 20.0]
    assert result.proposal_boxes.tensor.tolist() == [[0, 0, 8, 8], [0, 0, 8, 8]]
    rpn.post_nms_topk = 1
    (result,) = rpn([(50, 50)], maps)
    assert result.objectness_logits.tolist() == [30.0]


def test_proposals_no_larger_than_min_size_are_dropped_and_broken_weights_are_an_error() -> None:
    logits = torch.tensor([[[[3.0, 2.0]]]])
    head = FixedHead([logits], [torch.zeros(1, 4, 1, 2)])
    rpn = make_rpn(sizes=((8,),), strides=(20,), head=head, min_size=4.5).eval()
    (result,) = rpn([(30, 30)], {"m0": torch.zeros(1, 4, 1, 2)})
    # anchor 0 clipped to [0, 0, 4, 4] (4 px: dropped); anchor 1 [16, 0, 24, 4]: 4 px high
    assert len(result) == 0
    rpn.min_size = 3.5
    (result,) = rpn([(30, 30)], {"m0": torch.zeros(1, 4, 1, 2)})
    assert result.objectness_logits.tolist() == [3.0, 2.0]
    logits[0, 0, 0, 1] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite"):
        rpn([(30, 30)], {"m0": torch.zeros(1, 4, 1, 2)})


def test_the_proposal_network_trains_on_losses_and_proposes_in_the_original_images_pixels() -> None:
    cfg = project_config(
        SHAPES_CONFIG, "MODEL.SMALL_CONVNET.CHANNELS=[8, 8]", "MODEL.SMALL_CONVNET.STRIDE=4"
    )
    torch.manual_seed(0)
    model = build_model(cfg)
    assert type(model) is ProposalNetwork
    image = torch.randint(0, 255, (3, 64, 80), dtype=torch.uint8)
    gt = Instances((64, 80), gt_boxes=Boxes(torch.tensor([[10.0, 10.0, 40.0, 30.0]])))
    losses = model.train()([{"image": image, "instances": gt}])
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc"}
    with pytest.raises(ValueError, match="'instances'"):
        model([{"image": image}])
    model.eval()
    with torch.no_grad():
        (plain,) = model([{"image": image}])
        (scaled,) = model([{"image": image, "height": 128, "width": 160}])
    plain, scaled = plain["proposals"], scaled["proposals"]
    assert scaled.image_size == (128, 160) and 0 < len(plain) <= 1000
    torch.testing.assert_close(scaled.proposal_boxes.tensor, plain.proposal_boxes.tensor * 2)
    torch.testing.assert_close(scaled.objectness_logits, plain.objectness_logits)


def test_p6_is_p5_subsampled_at_stride_64() -> None:
    backbone = ResNetFPNP6(depth=18, freeze_at=0, out_channels=16).eval()
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 96, 96))
    assert backbone.output_shape()["p6"] == ShapeSpec(channels=16, stride=64)
    assert features["p5"].shape[-2:] == (3, 3) and features["p6"].shape[-2:] == (2, 2)
    torch.testing.assert_close(features["p6"], features["p5"][..., ::2, ::2])


def test_the_coco_config_has_detectron2s_rpn_r_50_fpn_1x_settings() -> None:
    cfg = project_config(COCO_CONFIG)
    assert cfg.MODEL.META_ARCHITECTURE == "ProposalNetwork"
    assert cfg.MODEL.BACKBONE.NAME == "ResNetFPNP6" and cfg.MODEL.RESNETS.DEPTH == 50
    assert cfg.MODEL.ANCHOR_GENERATOR.SIZES == [[32], [64], [128], [256], [512]]
    assert cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS == [[0.5, 1.0, 2.0]]
    spec = cfg.MODEL.RPN
    assert spec.IN_FEATURES == ["p2", "p3", "p4", "p5", "p6"]
    assert (spec.IOU_THRESHOLDS, spec.IOU_LABELS) == ([0.3, 0.7], [0, -1, 1])
    assert (spec.BATCH_SIZE_PER_IMAGE, spec.POSITIVE_FRACTION) == (256, 0.5)
    assert (spec.PRE_NMS_TOPK_TEST, spec.POST_NMS_TOPK_TEST, spec.NMS_THRESH) == (1000, 2000, 0.7)
    shapes = {f"p{level}": ShapeSpec(256, 2**level) for level in range(2, 7)}
    rpn = RPN.from_config(cfg, shapes)
    assert rpn.strides == [4, 8, 16, 32, 64]
    assert rpn.anchor_generator.num_anchors_per_location() == [3] * 5


def test_the_coco_model_trains_and_proposes_at_every_level() -> None:
    """detectron2's R50-FPN RPN, built as the config says, on one small image: losses that
    reach p2's and p6's anchors' head, and at most 2000 proposals from all five levels."""
    cfg = project_config(COCO_CONFIG, "MODEL.WEIGHTS=", "MODEL.DEVICE=cpu")
    torch.manual_seed(0)
    model = build_model(cfg)
    assert isinstance(model.backbone, ResNetFPNP6) and model.backbone.size_divisibility == 32
    image = torch.randint(0, 255, (3, 96, 160), dtype=torch.uint8)
    gt = Instances((96, 160), gt_boxes=Boxes(torch.tensor([[8.0, 8.0, 40.0, 40.0]])))
    losses = model.train()([{"image": image, "instances": gt}])
    sum(losses.values()).backward()
    assert model.proposal_generator.head.conv[0][0].weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        features = model.backbone(torch.zeros(1, 3, 96, 160))
        (output,) = model([{"image": image}])
    assert [features[f"p{level}"].shape[-2:] for level in range(2, 7)] == [
        (24, 40), (12, 20), (6, 10), (3, 5), (2, 3)
    ]  # fmt: skip
    assert 0 < len(output["proposals"]) <= 2000


def test_check_config_reports_every_rpn_problem_at_once_naming_the_keys() -> None:
    cfg = project_config(
        SHAPES_CONFIG,
        "MODEL.RPN.IOU_LABELS=[0, 1]",
        "MODEL.RPN.POSITIVE_FRACTION=1.5",
        "MODEL.ANCHOR_GENERATOR.SIZES=[[16], [32]]",
        "MODEL.RPN.POST_NMS_TOPK_TEST=0",
        "MODEL.RPN.NMS_THRESH=1.5",
    )
    with pytest.raises(ConfigError, match="5 problems") as error:
        check_config(cfg)
    for words in (
        "MODEL.RPN.IOU_THRESHOLDS [0.3, 0.7] make 3 IoU bands but MODEL.RPN.IOU_LABELS",
        "MODEL.RPN.POSITIVE_FRACTION must be in [0, 1], got 1.5",
        "MODEL.ANCHOR_GENERATOR.SIZES: give one list for all 1 feature maps",
        "MODEL.RPN.POST_NMS_TOPK_TEST must be at least 1, got 0",
        "MODEL.RPN.NMS_THRESH must be in [0, 1], got 1.5",
    ):
        assert words in str(error.value)


def test_the_shipped_configs_pass_the_checks_and_say_what_is_missing_without_the_keys() -> None:
    check_config(project_config(SHAPES_CONFIG))
    coco_on_shapes = ("DATASETS.TRAIN=[shapes_train]", "DATASETS.TEST=[]", "MODEL.WEIGHTS=")
    check_config(project_config(COCO_CONFIG, *coco_on_shapes))  # COCO is not here
    plain = load_config(PROJECT.parents[1] / "configs" / "shapes" / "fast_rcnn.yaml")
    check_config(plain)  # another meta-architecture: the RPN's check says nothing
    plain.MODEL.META_ARCHITECTURE = "ProposalNetwork"
    with pytest.raises(ConfigError, match=r"load it over rpn\.add_rpn_config"):
        check_config(plain)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["MODEL.RPN.IN_FEATURES=[p7]"], "must name some of the backbone's maps"),
        (["MODEL.ANCHOR_GENERATOR.SIZES=[[32], [64]]"], "one list per map"),
        (
            ["MODEL.ANCHOR_GENERATOR.SIZES=[[32], [64, 96], [128], [256], [512]]"],
            "the same number of anchors",
        ),
    ],
)
def test_an_rpn_config_that_cannot_be_built_names_its_key(overrides, message) -> None:
    cfg = project_config(COCO_CONFIG, *overrides)
    shapes = {f"p{level}": ShapeSpec(256, 2**level) for level in range(2, 7)}
    with pytest.raises(ValueError, match=message):
        RPN.from_config(cfg, shapes)


def test_the_readme_lists_the_keys_as_generated_from_their_defaults() -> None:
    readme = (PROJECT / "README.md").read_text()
    assert generated_part(readme, "README.md") == markdown_reference(RPNKeys), (
        "regenerate the table with the command in README.md's marker line"
    )
