"""The Fast R-CNN model: loss values by hand, inference, the train/test contracts, registries."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from detkit.config import load_config
from detkit.modeling import (
    BACKBONE_REGISTRY,
    ROI_BOX_HEAD_REGISTRY,
    Backbone,
    Box2BoxTransform,
    FastRCNNOutputLayers,
    ShapeSpec,
    build_model,
)
from detkit.structures import Boxes, Instances
from detkit.utils.events import EventStorage

REPO = Path(__file__).resolve().parents[2]
SMALL = [
    "MODEL.ROI_HEADS.NUM_CLASSES=3",
    "MODEL.ROI_BOX_HEAD.FC_DIM=32",
    "MODEL.PIXEL_STD=[58.0, 57.0, 57.0]",
]


def small_config(*overrides: str):
    return load_config(REPO / "configs" / "Base-FastRCNN.yaml", [*SMALL, *overrides])


def test_losses_by_hand() -> None:
    predictor = FastRCNNOutputLayers(
        4, num_classes=2, box2box_transform=Box2BoxTransform((1, 1, 1, 1))
    )
    scores = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # RoI 0: class 0, RoI 1: background
    deltas = torch.tensor([[0.5, 0.0, 0.0, 2.0, 9.0, 9.0, 9.0, 9.0], [9.0] * 8])
    proposals = Instances(
        (50, 50),
        proposal_boxes=Boxes(torch.tensor([[0.0, 0, 10, 10], [5, 5, 15, 15]])),
        gt_classes=torch.tensor([0, 2]),
        gt_boxes=Boxes(torch.tensor([[1.0, 0, 11, 10], [5, 5, 15, 15]])),
    )
    losses = predictor.losses(scores, deltas, [proposals])
    ce = (-math.log(math.exp(2) / (math.exp(2) + 2)) - math.log(math.e / (math.e + 2))) / 2
    # target (0.1, 0, 0, 0); smooth-L1 of (0.4, 0, 0, 2): 0.5*0.16 + (2 - 0.5); over 2 RoIs
    box = (0.5 * 0.4**2 + 1.5) / 2
    torch.testing.assert_close(losses["loss_cls"], torch.tensor(ce))
    torch.testing.assert_close(losses["loss_box_reg"], torch.tensor(box))


def test_losses_record_the_box_heads_accuracy_in_the_event_storage() -> None:
    predictor = FastRCNNOutputLayers(
        4, num_classes=2, box2box_transform=Box2BoxTransform((1, 1, 1, 1))
    )
    # RoIs: class 0 predicted 0 (right), class 1 predicted 0 (wrong), background (class 2)
    # predicted background (right), ignored (-1, not counted); over 2 images
    scores = torch.tensor([[3.0, 0, 0], [3.0, 0, 0], [0, 0, 3.0], [0, 3.0, 0]])
    deltas = torch.zeros(4, 8)
    boxes = Boxes(torch.tensor([[0.0, 0, 10, 10]] * 2))
    images = [
        Instances((50, 50), proposal_boxes=boxes, gt_boxes=boxes, gt_classes=torch.tensor(c))
        for c in ([0, 1], [2, -1])
    ]
    with EventStorage() as storage:
        predictor.losses(scores, deltas, images)
        latest = {name: value for name, (value, _) in storage.latest().items()}
    # (the RoIs per image are recorded where they are sampled: test_sampling_context.py)
    assert latest == pytest.approx(
        {"fast_rcnn/cls_accuracy": 2 / 3, "fast_rcnn/fg_cls_accuracy": 1 / 2}
    )
    predictor.losses(scores, deltas, images)  # outside a trainer: nothing to record into


def test_inference_thresholds_nms_and_clips() -> None:
    predictor = FastRCNNOutputLayers(
        4, num_classes=2, box2box_transform=Box2BoxTransform((1, 1, 1, 1)), nms_thresh=0.5
    )
    proposals = Instances(
        (20, 30),
        proposal_boxes=Boxes(torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10], [20, 5, 40, 15]])),
    )
    scores = torch.log(torch.tensor([[0.7, 0.01, 0.29], [0.6, 0.01, 0.39], [0.02, 0.9, 0.08]]))
    detections = predictor.inference(scores, torch.zeros(3, 8), [proposals])[0]
    # RoI 1 overlaps RoI 0 (IoU 9/11) in class 0 and is suppressed; scores <= 0.05 are dropped
    assert detections.pred_classes.tolist() == [1, 0]
    torch.testing.assert_close(detections.scores, torch.tensor([0.9, 0.7]))
    assert detections.pred_boxes.tensor.tolist() == [[20.0, 5, 30, 15], [0, 0, 10, 10]]


def make_input(height: int, width: int, with_targets: bool = True) -> dict:
    proposals = Boxes(
        torch.tensor([[0.0, 0, 40, 40], [10, 10, 60, 50], [5, 5, 20, 30], [30, 0, 63, 20]])
    )
    item = {
        "image": torch.randint(0, 256, (3, height, width), dtype=torch.uint8),
        "proposals": Instances(
            (height, width), proposal_boxes=proposals, objectness_logits=torch.zeros(4)
        ),
        "height": 2 * height,
        "width": 3 * width,
    }
    if with_targets:
        gt = Boxes(torch.tensor([[2.0, 2, 38, 41], [8, 8, 22, 28]]))
        item["instances"] = Instances((height, width), gt_boxes=gt, gt_classes=torch.tensor([1, 2]))
    return item


@pytest.mark.parametrize(
    "overrides",
    [[]] + [["MODEL.BACKBONE.NAME=ResNet", f"MODEL.RESNETS.DEPTH={d}"] for d in (18, 34, 50, 101)],
    ids=["VGG16", "ResNet-18", "ResNet-34", "ResNet-50", "ResNet-101"],
)
def test_train_and_test_contracts(overrides: list[str]) -> None:
    torch.manual_seed(0)
    model = build_model(small_config(*overrides))
    model.train()
    losses = model([make_input(64, 80), make_input(70, 64)])
    assert set(losses) == {"loss_cls", "loss_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    trainable = [p for p in model.backbone.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for p in trainable)
    assert trainable[-1].grad.abs().sum() > 0

    model.eval()
    with torch.no_grad():
        outputs = model([make_input(64, 80, with_targets=False)])
    instances = outputs[0]["instances"]
    assert instances.image_size == (128, 240)
    assert set(instances.get_fields()) == {"pred_boxes", "scores", "pred_classes"}
    boxes = instances.pred_boxes.tensor
    assert (boxes[:, 0::2] <= 240).all() and (boxes[:, 1::2] <= 128).all() and (boxes >= 0).all()
    assert ((instances.pred_classes >= 0) & (instances.pred_classes < 3)).all()


def test_label_and_sample_assigns_classes_and_background() -> None:
    model = build_model(small_config())
    proposals = [make_input(64, 80)["proposals"]]
    targets = [make_input(64, 80)["instances"]]
    sampled = model.roi_heads.label_and_sample_proposals(proposals, targets)[0]
    # 4 proposals + 2 ground-truth boxes; best IoUs: 0.84 (gt 0), 0.33, 0.58 (gt 1), 0.08, 1, 1
    assert sorted(sampled.gt_classes.tolist()) == [1, 1, 2, 2, 3]  # IoU 0.08 < 0.1: ignored
    fg = sampled.gt_classes < 3
    assert sampled.gt_boxes.tensor[fg].tolist().count([8.0, 8.0, 22.0, 28.0]) == 2
    assert torch.equal(sampled.gt_boxes.tensor[~fg], sampled.proposal_boxes.tensor[~fg])


@BACKBONE_REGISTRY.register()
class TinyTestBackbone(Backbone):
    """A one-layer backbone registered from a test module."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, kernel_size=16, stride=16)

    @classmethod
    def from_config(cls, cfg, input_shape) -> TinyTestBackbone:
        return cls()

    def forward(self, images):
        return {"tiny": self.conv(images)}

    def output_shape(self):
        return {"tiny": ShapeSpec(channels=8, stride=16)}


@ROI_BOX_HEAD_REGISTRY.register()
class TinyTestHead(nn.Module):
    """A box head registered from a test module."""

    def __init__(self, input_shape) -> None:
        super().__init__()
        channels, height, width = input_shape
        self.fc = nn.Linear(channels * height * width, 5)
        self.output_size = 5

    @classmethod
    def from_config(cls, cfg, input_shape) -> TinyTestHead:
        return cls(input_shape)

    def forward(self, pooled):
        return self.fc(pooled.flatten(1))


def test_components_registered_outside_detkit_are_picked_by_config() -> None:
    model = build_model(
        small_config("MODEL.BACKBONE.NAME=TinyTestBackbone", "MODEL.ROI_BOX_HEAD.NAME=TinyTestHead")
    )
    assert isinstance(model.backbone, TinyTestBackbone)
    assert isinstance(model.roi_heads.box_head, TinyTestHead)
    assert model.roi_heads.box_predictor.cls_score.in_features == 5
    losses = model.train()([make_input(64, 80)])
    assert all(torch.isfinite(v) for v in losses.values())


def test_channels_last_computes_the_same_model() -> None:
    overrides = [
        "MODEL.BACKBONE.NAME=SmallConvNet",
        "MODEL.SMALL_CONVNET.CHANNELS=[8, 16]",
        "MODEL.SMALL_CONVNET.STRIDE=4",
    ]
    torch.manual_seed(0)
    inputs = [make_input(64, 80), make_input(70, 64)]
    test_input = make_input(64, 80, with_targets=False)
    outputs, layouts = [], []
    for channels_last in (False, True):
        torch.manual_seed(1)
        model = build_model(small_config(*overrides, f"MODEL.CHANNELS_LAST={channels_last}"))
        model.backbone.register_forward_hook(
            lambda module, args, output: layouts.append(
                args[0].is_contiguous(memory_format=torch.channels_last)
            )
        )
        torch.manual_seed(2)  # the same RoI sampling in both runs
        losses = model.train()(inputs)
        sum(losses.values()).backward()
        gradient = model.backbone.features[0][0].weight.grad
        with torch.no_grad():
            (detections,) = model.eval()([test_input])
        outputs.append((losses, gradient, detections["instances"].scores))
    assert layouts == [False, False, True, True]  # (training, inference) per model
    (losses_a, gradient_a, scores_a), (losses_b, gradient_b, scores_b) = outputs
    for name in losses_a:
        torch.testing.assert_close(losses_a[name], losses_b[name], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gradient_a, gradient_b, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(scores_a, scores_b, rtol=1e-4, atol=1e-5)
