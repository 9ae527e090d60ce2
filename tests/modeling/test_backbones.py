"""Backbones: built by config, shapes and strides, and torchvision weights give their features."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from detkit.config import load_config
from detkit.modeling.backbone import VGG16, ResNet, SmallConvNet, build_backbone

REPO = Path(__file__).resolve().parents[2]


def load_torchvision_weights(backbone: torch.nn.Module, path: Path) -> None:
    """Loads a saved torchvision state_dict by name; the backbone's own keys must all be there."""
    state = torch.load(path, weights_only=True)
    own = backbone.state_dict()
    missing = [k for k in own if k not in state]
    assert not missing, missing
    backbone.load_state_dict({k: state[k] for k in own})


def test_vgg16_matches_torchvision_features(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = torchvision.models.vgg16().eval()
    torch.save(reference.state_dict(), tmp_path / "vgg16.pth")
    backbone = VGG16().eval()
    load_torchvision_weights(backbone, tmp_path / "vgg16.pth")
    image = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        expected = reference.features[:30](image)  # through conv5_3's ReLU, before pool5
        features = backbone(image)["conv5_3"]
    assert features.shape == (1, 512, 4, 5)
    assert torch.equal(features, expected)


@pytest.mark.parametrize("depth", [18, 50])
def test_resnet_c4_matches_torchvision(tmp_path: Path, depth: int) -> None:
    torch.manual_seed(0)
    reference = getattr(torchvision.models, f"resnet{depth}")().eval()
    for module in reference.modules():  # non-trivial BatchNorm statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    torch.save(reference.state_dict(), tmp_path / "resnet.pth")
    backbone = ResNet(depth=depth).eval()
    load_torchvision_weights(backbone, tmp_path / "resnet.pth")
    image = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        x = reference.maxpool(reference.relu(reference.bn1(reference.conv1(image))))
        expected = reference.layer3(reference.layer2(reference.layer1(x)))
        features = backbone(image)["res4"]
    assert features.shape == (2, backbone.output_shape()["res4"].channels, 4, 6)
    assert torch.equal(features, expected)


@pytest.mark.parametrize(
    ("depth", "out_features", "shapes"),
    [
        (18, ["res2", "res5"], {"res2": (64, 4), "res5": (512, 32)}),
        (50, ["res3", "res4", "res5"], {"res3": (512, 8), "res4": (1024, 16), "res5": (2048, 32)}),
    ],
)
def test_resnet_returns_the_stages_asked_for_as_torchvision_computes_them(
    tmp_path: Path, depth: int, out_features: list[str], shapes: dict[str, tuple[int, int]]
) -> None:
    torch.manual_seed(0)
    reference = getattr(torchvision.models, f"resnet{depth}")().eval()
    torch.save(reference.state_dict(), tmp_path / "resnet.pth")
    backbone = ResNet(depth=depth, out_features=out_features).eval()
    load_torchvision_weights(backbone, tmp_path / "resnet.pth")
    assert {k: (s.channels, s.stride) for k, s in backbone.output_shape().items()} == shapes
    image = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        x = reference.maxpool(reference.relu(reference.bn1(reference.conv1(image))))
        expected = {}
        stages = [reference.layer1, reference.layer2, reference.layer3, reference.layer4]
        for name, layer in zip(["res2", "res3", "res4", "res5"], stages, strict=True):
            x = layer(x)
            expected[name] = x
        features = backbone(image)
    assert list(features) == list(shapes)
    for name, feature in features.items():
        assert torch.equal(feature, expected[name]), name


def test_resnet_builds_no_stage_after_the_last_one_asked_for() -> None:
    c4 = ResNet(depth=18)
    assert not hasattr(c4, "layer4")
    modules = {name.split(".")[0] for name, _ in c4.named_parameters()}
    assert modules == {"conv1", "bn1", "layer1", "layer2", "layer3"}
    with pytest.raises(ValueError, match="out_features"):
        ResNet(depth=18, out_features=["res6"])
    with pytest.raises(ValueError, match="out_features"):
        ResNet(depth=18, out_features=[])


@pytest.mark.parametrize(
    ("overrides", "kind", "feature", "channels"),
    [
        ([], VGG16, "conv5_3", 512),
        (["MODEL.BACKBONE.NAME=ResNet", "MODEL.RESNETS.DEPTH=34"], ResNet, "res4", 256),
        (["MODEL.BACKBONE.NAME=ResNet", "MODEL.RESNETS.DEPTH=101"], ResNet, "res4", 1024),
    ],
)
def test_backbones_built_by_config(overrides, kind, feature, channels) -> None:
    cfg = load_config(REPO / "configs" / "Base-FastRCNN.yaml", overrides)
    backbone = build_backbone(cfg)
    assert isinstance(backbone, kind)
    shape = backbone.output_shape()[feature]
    assert (shape.channels, shape.stride) == (channels, 16)


def test_freezing() -> None:
    vgg = VGG16(freeze_at=2)
    frozen = [name for name, p in vgg.named_parameters() if not p.requires_grad]
    assert frozen == [f"features.{i}.{kind}" for i in (0, 2, 5, 7) for kind in ("weight", "bias")]
    resnet = ResNet(depth=18, freeze_at=2)
    trainable = {name.split(".")[0] for name, p in resnet.named_parameters() if p.requires_grad}
    assert trainable == {"layer2", "layer3"}
    resnet.train()
    assert not resnet.bn1.training and resnet.layer2[0].conv1.training
    with pytest.raises(ValueError, match="depth"):
        ResNet(depth=152)


@pytest.mark.parametrize(
    ("channels", "stride", "pools"),
    [([16, 32, 64], 8, 2), ([8, 16, 32, 48], 16, 3), ([16, 32, 32, 32], 4, 1), ([8], 2, 0)],
)
def test_small_convnet_shape_and_stride(channels: list[int], stride: int, pools: int) -> None:
    cfg = load_config(
        REPO / "configs" / "Base-FastRCNN.yaml",
        [
            "MODEL.BACKBONE.NAME=SmallConvNet",
            f"MODEL.SMALL_CONVNET.CHANNELS={channels}",
            f"MODEL.SMALL_CONVNET.STRIDE={stride}",
        ],
    )
    backbone = build_backbone(cfg)
    assert isinstance(backbone, SmallConvNet)
    shape = backbone.output_shape()["features"]
    assert (shape.channels, shape.stride) == (channels[-1], stride)
    features = backbone(torch.zeros(2, 3, 8 * stride, 5 * stride))["features"]
    assert features.shape == (2, channels[-1], 8, 5)
    convs = [m for m in backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 1 + 2 * len(channels)  # the stem, then two per stage
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in backbone.modules()) == pools


@pytest.mark.parametrize(("channels", "stride"), [([], 8), ([16, 32], 8), ([16, 32], 3)])
def test_small_convnet_rejects_impossible_layouts(channels: list[int], stride: int) -> None:
    with pytest.raises(ValueError, match="SmallConvNet"):
        SmallConvNet(channels=channels, stride=stride)
