"""ResNet-FPN: levels and strides, the pyramid against torchvision's, initialisation, frozen
stages, torchvision weights by name, batch padding to the largest stride, and the R50-FPN config.

References are independent of the code under test: torchvision's ResNet and
``torchvision.ops.FeaturePyramidNetwork`` given the same weights, Caffe2's XavierFill bound
written out, padded batches built by hand, and detectron2's settings copied from its configs.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torchvision
from omegaconf import ListConfig, OmegaConf
from torch import nn

from detkit.checkpoint import DetectionCheckpointer
from detkit.config import load_config
from detkit.data import DatasetCatalog
from detkit.engine import DefaultTrainer, seed_all
from detkit.modeling import FastRCNN, build_backbone
from detkit.modeling.backbone import ResNet, ResNetFPN, SmallConvNet

REPO = Path(__file__).resolve().parents[2]
R50_FPN_CONFIG = REPO / "configs" / "COCO-Detection" / "fast_rcnn_R_50_FPN_1x.yaml"
MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]

pytestmark = pytest.mark.usefixtures("one_thread")  # small convolutions: faster on one thread


def randomise_batch_norm(model: nn.Module) -> None:
    """Non-trivial running statistics, so frozen BatchNorm has something to get right."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)


@pytest.mark.parametrize(
    ("in_features", "levels", "divisibility"),
    [
        (["res2", "res3", "res4", "res5"], {"p2": 4, "p3": 8, "p4": 16, "p5": 32}, 32),
        (["res3", "res4"], {"p3": 8, "p4": 16}, 16),
    ],
)
def test_fpn_levels_are_named_by_stride_with_out_channels_each(
    in_features: list[str], levels: dict[str, int], divisibility: int
) -> None:
    backbone = ResNetFPN(depth=18, in_features=in_features, out_channels=16).eval()
    shapes = backbone.output_shape()
    assert {name: (s.channels, s.stride) for name, s in shapes.items()} == {
        name: (16, stride) for name, stride in levels.items()
    }
    assert backbone.size_divisibility == divisibility
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 64, 96))
    assert list(features) == list(levels)
    for name, stride in levels.items():
        assert features[name].shape == (1, 16, 64 // stride, 96 // stride)


def test_fpn_built_by_config_reads_the_fpn_keys() -> None:
    cfg = load_config(
        R50_FPN_CONFIG,
        ["MODEL.RESNETS.DEPTH=34", "MODEL.FPN.OUT_CHANNELS=24", "MODEL.BACKBONE.FREEZE_AT=3"],
    )
    backbone = build_backbone(cfg)
    assert isinstance(backbone, ResNetFPN)
    assert {s.channels for s in backbone.output_shape().values()} == {24}
    assert len(backbone.bottom_up.layer3) == 6  # ResNet-34's res4 has six blocks
    assert not backbone.bottom_up.layer2[0].conv1.weight.requires_grad
    assert backbone.bottom_up.layer3[0].conv1.weight.requires_grad


def test_fpn_equals_torchvision_feature_pyramid_network_on_the_same_weights() -> None:
    torch.manual_seed(0)
    trunk = torchvision.models.resnet18().eval()
    randomise_batch_norm(trunk)
    backbone = ResNetFPN(depth=18, out_channels=32).eval()
    state = {k: v for k, v in trunk.state_dict().items() if not k.startswith("fc.")}
    backbone.bottom_up.load_state_dict(state)  # strict: the trunk's names are torchvision's
    pyramid = torchvision.ops.FeaturePyramidNetwork([64, 128, 256, 512], 32).eval()
    with torch.no_grad():
        for index, level in enumerate(range(2, 6)):
            for ours, theirs in [
                (getattr(backbone, f"fpn_lateral{level}"), pyramid.inner_blocks[index][0]),
                (getattr(backbone, f"fpn_output{level}"), pyramid.layer_blocks[index][0]),
            ]:
                theirs.weight.copy_(ours.weight)
                theirs.bias.copy_(torch.randn_like(theirs.bias))  # not zero: order matters
                ours.bias.copy_(theirs.bias)
    image = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        x = trunk.maxpool(trunk.relu(trunk.bn1(trunk.conv1(image))))
        stages = OrderedDict()
        for index, layer in enumerate([trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4]):
            x = layer(x)
            stages[f"res{index + 2}"] = x
        expected = pyramid(stages)
        features = backbone(image)
    assert list(features) == ["p2", "p3", "p4", "p5"]
    for (name, ours), theirs in zip(features.items(), expected.values(), strict=True):
        torch.testing.assert_close(ours, theirs, msg=name)


def test_fpn_convs_start_as_caffe2_xavier_fill() -> None:
    torch.manual_seed(0)
    backbone = ResNetFPN(depth=18, out_channels=64)
    convs = [m for name, m in backbone.named_children() if name.startswith("fpn_")]
    assert len(convs) == 8
    for conv in convs:
        fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        bound = math.sqrt(3.0 / fan_in)  # kaiming_uniform, a = 1: sqrt(6 / ((1 + a^2) fan_in))
        weight = conv.weight.detach()
        assert weight.abs().max() <= bound
        assert weight.abs().max() > 0.95 * bound
        # uniform on [-bound, bound] has standard deviation bound / sqrt(3)
        assert weight.std().item() == pytest.approx(bound / math.sqrt(3.0), rel=0.1)
        assert torch.equal(conv.bias, torch.zeros_like(conv.bias))


def test_frozen_stages_of_the_fpn_trunk() -> None:
    backbone = ResNetFPN(depth=18, freeze_at=2)
    trainable = {
        ".".join(name.split(".")[:2]) if name.startswith("bottom_up.") else name.split(".")[0]
        for name, p in backbone.named_parameters()
        if p.requires_grad
    }
    fpn = {f"fpn_{kind}{level}" for kind in ("lateral", "output") for level in range(2, 6)}
    assert trainable == {"bottom_up.layer2", "bottom_up.layer3", "bottom_up.layer4", *fpn}
    backbone.train()
    trunk = backbone.bottom_up
    assert not trunk.bn1.training and not trunk.layer4[0].bn1.training  # BatchNorm stays frozen
    assert trunk.layer4[0].conv1.training
    everything = ResNetFPN(depth=18, freeze_at=5)
    assert not any(p.requires_grad for p in everything.bottom_up.parameters())
    with pytest.raises(ValueError, match=r"freeze_at must be in \[0, 5\]"):
        ResNetFPN(depth=18, freeze_at=6)


@pytest.mark.parametrize(
    ("in_features", "message"),
    [(["res2", "res4"], "twice the previous"), (["res4", "res3"], "twice"), (["c5"], "res2")],
)
def test_fpn_refuses_inputs_it_cannot_combine(in_features: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ResNetFPN(depth=18, in_features=in_features)


def test_fpn_refuses_images_not_padded_to_its_largest_stride() -> None:
    backbone = ResNetFPN(depth=18, out_channels=8).eval()
    with pytest.raises(ValueError, match="96x100 is not a multiple of 32"):
        backbone(torch.zeros(1, 3, 96, 100))


def test_torchvision_resnet50_weights_load_by_name_into_the_fpn_trunk(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    torch.manual_seed(0)
    reference = torchvision.models.resnet50()
    randomise_batch_norm(reference)
    torch.save(reference.state_dict(), tmp_path / "resnet50.pth")
    detector = nn.ModuleDict({"backbone": ResNetFPN(depth=50)})  # detkit's names: backbone.*
    fpn_before = {k: v.clone() for k, v in detector.state_dict().items() if ".fpn_" in k}
    with caplog.at_level(logging.INFO):
        DetectionCheckpointer(detector).load(str(tmp_path / "resnet50.pth"))
    skipped = re.search(r"(\d+) torchvision weights have no place .* skipped: (.*)", caplog.text)
    assert skipped and skipped.groups() == ("2", "fc.bias, fc.weight")
    own = detector.state_dict()
    trunk_keys = {k.removeprefix("backbone.bottom_up.") for k in own if ".bottom_up." in k}
    expected = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    assert trunk_keys == set(expected)  # every trunk tensor came from the file
    for key, value in expected.items():
        assert torch.equal(own[f"backbone.bottom_up.{key}"], value), key
    for key, value in fpn_before.items():  # the FPN's own layers keep their initialisation
        assert torch.equal(own[key], value), key


def image_input(height: int, width: int) -> dict:
    return {"image": torch.randint(0, 256, (3, height, width), dtype=torch.uint8)}


def test_preprocess_pads_the_batch_to_multiples_of_the_backbone_size_divisibility() -> None:
    model = FastRCNN(ResNetFPN(depth=18, out_channels=8), nn.Identity(), MEAN, STD).eval()
    inputs = [image_input(61, 97), image_input(70, 64)]
    batch = model.preprocess_images(inputs)
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    expected = torch.zeros(2, 3, 96, 128)  # 70 -> 96, 97 -> 128; zeros at the bottom and right
    expected[0, :, :61, :97] = (inputs[0]["image"].float() - mean) / std
    expected[1, :, :70, :64] = (inputs[1]["image"].float() - mean) / std
    assert torch.equal(batch, expected)
    with torch.no_grad():
        features = model.backbone(batch)
    assert {name: tuple(f.shape[-2:]) for name, f in features.items()} == {
        "p2": (24, 32),
        "p3": (12, 16),
        "p4": (6, 8),
        "p5": (3, 4),
    }


def test_preprocess_pads_only_to_the_largest_image_without_size_divisibility() -> None:
    backbone = SmallConvNet(channels=[8], stride=2)
    assert backbone.size_divisibility == 0
    model = FastRCNN(backbone, nn.Identity(), MEAN, STD)
    inputs = [image_input(61, 97), image_input(70, 64)]
    batch = model.preprocess_images(inputs)
    assert batch.shape == (2, 3, 70, 97)
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    assert torch.equal(batch[1, :, :, :64], (inputs[1]["image"].float() - mean) / std)
    assert not batch[1, :, :, 64:].any() and not batch[0, :, 61:, :].any()


def test_c4_resnet_keeps_any_image_size() -> None:
    assert ResNet(depth=18).size_divisibility == 0


# detectron2's fast_rcnn_R_50_FPN_1x: configs/Base-RCNN-FPN.yaml,
# COCO-Detection/fast_rcnn_R_50_FPN_1x.yaml and the defaults of detectron2/config/defaults.py
# they rely on, by detkit key.
DETECTRON2_R50_FPN = {
    "MODEL.BACKBONE.NAME": "ResNetFPN",
    "MODEL.BACKBONE.FREEZE_AT": 2,
    "MODEL.RESNETS.DEPTH": 50,
    "MODEL.FPN.IN_FEATURES": ["res2", "res3", "res4", "res5"],
    "MODEL.FPN.OUT_CHANNELS": 256,
    "MODEL.ROI_HEADS.IN_FEATURES": ["p2", "p3", "p4", "p5"],
    "MODEL.ROI_HEADS.NUM_CLASSES": 80,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 512,
    "MODEL.ROI_HEADS.POSITIVE_FRACTION": 0.25,
    "MODEL.ROI_HEADS.IOU_THRESHOLDS": [0.5],
    "MODEL.ROI_HEADS.IOU_LABELS": [0, 1],
    "MODEL.ROI_HEADS.PROPOSAL_APPEND_GT": True,
    "MODEL.ROI_HEADS.DEDUP_PROPOSALS": False,
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.05,
    "MODEL.ROI_HEADS.NMS_THRESH_TEST": 0.5,
    "MODEL.ROI_BOX_HEAD.POOLER_TYPE": "ROIAlignV2",
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": 7,
    "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO": 0,
    "MODEL.ROI_BOX_HEAD.POOLER_CANONICAL_BOX_SIZE": 224,
    "MODEL.ROI_BOX_HEAD.POOLER_CANONICAL_LEVEL": 4,
    "MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS": [10.0, 10.0, 5.0, 5.0],
    "MODEL.ROI_BOX_HEAD.NUM_FC": 2,
    "MODEL.ROI_BOX_HEAD.FC_DIM": 1024,
    "MODEL.ROI_BOX_HEAD.DROPOUT": 0.0,
    "MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA": 0.0,
    "DATASETS.TRAIN": ["coco_2017_train"],
    "DATASETS.TEST": ["coco_2017_val"],
    "DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TRAIN": 2000,
    "DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST": 1000,
    "INPUT.MIN_SIZE_TRAIN": [640, 672, 704, 736, 768, 800],
    "INPUT.MAX_SIZE_TRAIN": 1333,
    "INPUT.MIN_SIZE_TEST": 800,
    "INPUT.MAX_SIZE_TEST": 1333,
    "SOLVER.IMS_PER_BATCH": 16,
    "SOLVER.BASE_LR": 0.02,
    "SOLVER.MOMENTUM": 0.9,
    "SOLVER.WEIGHT_DECAY": 0.0001,
    "SOLVER.BIAS_LR_FACTOR": 1.0,
    "SOLVER.WEIGHT_DECAY_BIAS": 0.0001,
    "SOLVER.MAX_ITER": 90000,
    "SOLVER.STEPS": [60000, 80000],
    "SOLVER.GAMMA": 0.1,
    "SOLVER.WARMUP_ITERS": 1000,
    "SOLVER.WARMUP_FACTOR": 0.001,
    "TEST.DETECTIONS_PER_IMAGE": 100,
    # torchvision's ImageNet weights, not detectron2's MSRA ones: RGB, ImageNet mean and std
    "MODEL.INPUT_FORMAT": "RGB",
    "MODEL.PIXEL_MEAN": MEAN,
    "MODEL.PIXEL_STD": STD,
}


def test_r50_fpn_config_holds_detectron2_settings() -> None:
    cfg = load_config(R50_FPN_CONFIG)
    actual = {key: OmegaConf.select(cfg, key) for key in DETECTRON2_R50_FPN}
    actual = {k: list(v) if isinstance(v, ListConfig) else v for k, v in actual.items()}
    assert actual == DETECTRON2_R50_FPN
    datasets = cfg.DATASETS
    assert all(name in DatasetCatalog for name in [*datasets.TRAIN, *datasets.TEST])
    for files in (datasets.PROPOSAL_FILES_TRAIN, datasets.PROPOSAL_FILES_TEST):
        assert len(files) == 1 and files[0].startswith("datasets/coco/")
    assert cfg.MODEL.WEIGHTS.endswith(".pth")  # a torchvision state_dict the user provides


def test_r50_fpn_config_trains_and_runs_inference_on_the_cpu(tiny_shapes, tmp_path: Path) -> None:

    cfg = load_config(
        R50_FPN_CONFIG,
        [
            "MODEL.DEVICE=cpu",
            'MODEL.WEIGHTS=""',
            "MODEL.FPN.OUT_CHANNELS=16",
            "MODEL.ROI_HEADS.NUM_CLASSES=3",
            "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE=16",
            "MODEL.ROI_BOX_HEAD.FC_DIM=32",
            f"DATASETS.TRAIN=[{tiny_shapes.name}]",
            f"DATASETS.TEST=[{tiny_shapes.name}]",
            f"DATASETS.PROPOSAL_FILES_TRAIN=[{tiny_shapes.proposal_file}]",
            f"DATASETS.PROPOSAL_FILES_TEST=[{tiny_shapes.proposal_file}]",
            "TEST.EVALUATORS=[coco]",
            "INPUT.MIN_SIZE_TRAIN=[72, 88]",
            "INPUT.MAX_SIZE_TRAIN=120",
            "INPUT.MIN_SIZE_TEST=80",
            "INPUT.MAX_SIZE_TEST=120",
            "DATALOADER.NUM_WORKERS=0",
            "SOLVER.IMS_PER_BATCH=2",
            "SOLVER.MAX_ITER=2",
            "SOLVER.STEPS=[1]",
            "SOLVER.WARMUP_ITERS=1",
            "SOLVER.LOG_PERIOD=1",
            f"OUTPUT_DIR={tmp_path}",
            "SEED=3",
        ],
    )
    seed_all(cfg.SEED)
    trainer = DefaultTrainer(cfg)
    sizes: list[tuple[int, int]] = []
    trainer.model.backbone.register_forward_pre_hook(
        lambda module, args: sizes.append(tuple(args[0].shape[-2:]))
    )
    trainer.resume_or_load(resume=False)
    results = trainer.train()
    metrics = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    losses = [m["total_loss"] for m in metrics if "total_loss" in m]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    assert set(results[tiny_shapes.name]["bbox"]) >= {"AP", "AP50", "AP75"}
    test_images = len(DatasetCatalog.get(tiny_shapes.name))
    assert len(sizes) == 2 + test_images  # two training steps, then one pass per test image
    assert all(h % 32 == 0 and w % 32 == 0 for h, w in sizes)
