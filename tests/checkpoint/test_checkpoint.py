"""DetectionCheckpointer: torchvision weights mapped by name, detkit checkpoints, safe loading."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from detkit.checkpoint import DetectionCheckpointer
from detkit.config import load_config
from detkit.modeling import build_model

REPO = Path(__file__).resolve().parents[2]


def model_for(*overrides: str) -> nn.Module:
    cfg = load_config(
        REPO / "configs" / "Base-FastRCNN.yaml",
        ["MODEL.ROI_HEADS.NUM_CLASSES=3", "MODEL.ROI_BOX_HEAD.FC_DIM=32", *overrides],
    )
    return build_model(cfg).eval()


def test_vgg16_weights_fill_backbone_and_fc6_fc7(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = torchvision.models.vgg16()
    # keep torchvision's names but shrink the classifier to this model's fc6/fc7 (512*1*1 -> 32)
    reference.classifier[0] = nn.Linear(512, 32)
    reference.classifier[3] = nn.Linear(32, 32)
    torch.save(reference.state_dict(), tmp_path / "vgg16.pth")
    model = model_for("MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION=1")
    DetectionCheckpointer(model).load(str(tmp_path / "vgg16.pth"))
    image = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        assert torch.equal(model.backbone(image)["conv5_3"], reference.features[:30].eval()(image))
    head = model.roi_heads.box_head
    assert torch.equal(head.fc6.weight, reference.classifier[0].weight)
    assert torch.equal(head.fc7.bias, reference.classifier[3].bias)


def test_resnet_weights_and_report_of_skipped_keys(tmp_path: Path, caplog) -> None:
    torch.manual_seed(0)
    reference = torchvision.models.resnet18().eval()
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    model = model_for("MODEL.BACKBONE.NAME=ResNet", "MODEL.RESNETS.DEPTH=18")
    with caplog.at_level(logging.INFO):
        DetectionCheckpointer(model).load(str(tmp_path / "resnet18.pth"))
    assert "layer4" in caplog.text and "fc.weight" in caplog.text  # skipped, and said so
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        x = reference.maxpool(reference.relu(reference.bn1(reference.conv1(image))))
        expected = reference.layer3(reference.layer2(reference.layer1(x)))
        assert torch.equal(model.backbone(image)["res4"], expected)


def test_detkit_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = model_for()
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("model_final")
    fresh = model_for()
    DetectionCheckpointer(fresh).load(str(tmp_path / "model_final.pth"))
    for (name, a), (_, b) in zip(
        model.state_dict().items(), fresh.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


class Payload:
    """An object only a full unpickler can rebuild."""


def test_unsafe_pickles_are_refused_unless_allowed(tmp_path: Path) -> None:
    model = model_for()
    torch.save({"model": model.state_dict(), "extra": Payload()}, tmp_path / "unsafe.pth")
    with pytest.raises(RuntimeError, match="allow_unsafe_pickle=True"):
        DetectionCheckpointer(model).load(str(tmp_path / "unsafe.pth"))
    extra = DetectionCheckpointer(model, allow_unsafe_pickle=True).load(
        str(tmp_path / "unsafe.pth")
    )
    assert isinstance(extra["extra"], Payload)


def test_bad_files(tmp_path: Path) -> None:
    model = model_for()
    with pytest.raises(FileNotFoundError, match=r"nothing\.pth"):
        DetectionCheckpointer(model).load(str(tmp_path / "nothing.pth"))
    torch.save({"other.weight": torch.zeros(2)}, tmp_path / "foreign.pth")
    with pytest.raises(ValueError, match="none of its 1 weights"):
        DetectionCheckpointer(model).load(str(tmp_path / "foreign.pth"))
