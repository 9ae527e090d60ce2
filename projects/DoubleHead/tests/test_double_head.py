"""Double-Head's box head: its outputs and config keys, the split of the two losses between its
branches inside detkit's RoI heads, the conv-head's structure against a hand count, and a short
training run through the project's train_net.py."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from double_head import (
    BottleneckBlock,
    ConvHead,
    DoubleHead,
    WideningBlock,
    add_double_head_config,
)
from double_head.config import DoubleHeadKeys
from torch import nn

from detkit.config import ConfigError, check_config, get_default_config, load_config
from detkit.config.reference import generated_part, markdown_reference
from detkit.modeling import ROI_BOX_HEAD_REGISTRY, FastRCNNFCHead, ShapeSpec, StandardROIHeads
from detkit.structures import Boxes, Instances

PROJECT = Path(__file__).resolve().parents[1]
REPO = PROJECT.parents[1]
SHAPES_CONFIG = PROJECT / "configs" / "shapes_double_head.yaml"
FPN_CONFIG = PROJECT / "configs" / "fpn_R_50_double_head_1x.yaml"
SHAPES_FEATURES = {"features": ShapeSpec(channels=32, stride=4)}  # the shapes backbone's output


def project_config(*overrides: str, path: Path = SHAPES_CONFIG):
    return load_config(path, overrides, defaults=add_double_head_config(get_default_config()))


def test_forward_gives_fc_and_conv_features_and_output_size_their_widths() -> None:
    head = DoubleHead((32, 7, 7), num_fc=2, fc_dim=24, num_conv_blocks=3, conv_dim=16)
    pooled = torch.randn(6, 32, 7, 7)
    output = head(pooled)
    assert isinstance(output, tuple) and len(output) == 2  # FastRCNNOutputLayers splits tuples
    assert head.output_size == (24, 16)
    assert output[0].shape == (6, 24) and output[1].shape == (6, 16)


def test_the_fc_branch_is_fast_rcnns_head_with_its_parameter_names() -> None:
    torch.manual_seed(0)
    fast_rcnn = FastRCNNFCHead((32, 7, 7), num_fc=2, fc_dim=24, dropout=0.0)
    head = DoubleHead((32, 7, 7), num_fc=2, fc_dim=24, num_conv_blocks=2, conv_dim=16)
    missing, unexpected = head.load_state_dict(fast_rcnn.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("conv_head.") for k in missing)
    pooled = torch.randn(4, 32, 7, 7)
    torch.testing.assert_close(head(pooled)[0], fast_rcnn(pooled))


def test_the_config_picks_double_head_and_sizes_the_predictor_from_its_pair() -> None:
    assert "DoubleHead" in ROI_BOX_HEAD_REGISTRY
    heads = StandardROIHeads.from_config(project_config(), SHAPES_FEATURES)
    assert type(heads.box_head) is DoubleHead
    # configs/shapes/fast_rcnn.yaml: FC_DIM 256, 3 classes; shapes_double_head.yaml: CONV_DIM 64
    assert heads.box_head.output_size == (256, 64)
    cls_score, bbox_pred = heads.box_predictor.cls_score, heads.box_predictor.bbox_pred
    assert (cls_score.in_features, cls_score.out_features) == (256, 4)
    assert (bbox_pred.in_features, bbox_pred.out_features) == (64, 12)
    assert len(heads.box_head.conv_head.blocks) == 5


def test_the_coco_config_builds_the_papers_widths() -> None:
    head = ROI_BOX_HEAD_REGISTRY.build("DoubleHead", project_config(path=FPN_CONFIG), (256, 7, 7))
    assert head.output_size == (1024, 1024)
    assert (head.fc6.in_features, head.fc6.out_features) == (256 * 7 * 7, 1024)
    first, *bottlenecks = head.conv_head.blocks
    assert first.shortcut[0].out_channels == 1024 and len(bottlenecks) == 4
    assert all(b.conv2[0].in_channels == 256 for b in bottlenecks)
    assert isinstance(first.conv1[1], nn.BatchNorm2d)


def test_keys_come_from_add_config_with_defaults_types_and_typo_hints() -> None:
    defaults = add_double_head_config(get_default_config())
    assert dict(defaults.MODEL.DOUBLE_HEAD) == {
        "NUM_CONV_BLOCKS": 5,
        "CONV_DIM": 1024,
        "NORM": "BN",
    }
    assert "DOUBLE_HEAD" not in get_default_config().MODEL
    with pytest.raises(ConfigError, match=r"did you mean MODEL\.DOUBLE_HEAD\.NUM_CONV_BLOCKS\?"):
        project_config("MODEL.DOUBLE_HEAD.NUM_CONV_BLOCK=3")
    with pytest.raises(ConfigError, match=r"MODEL\.DOUBLE_HEAD\.CONV_DIM takes an int"):
        project_config("MODEL.DOUBLE_HEAD.CONV_DIM=wide")
    with pytest.raises(ConfigError, match=r"unknown config key MODEL\.DOUBLE_HEAD"):
        load_config(SHAPES_CONFIG)  # without the project's keys
    with pytest.raises(ConfigError, match="already defined"):
        add_double_head_config(defaults)


def test_building_from_a_config_without_the_keys_says_how_to_add_them() -> None:
    cfg = load_config(
        REPO / "configs" / "shapes" / "fast_rcnn.yaml", ["MODEL.ROI_BOX_HEAD.NAME=DoubleHead"]
    )
    with pytest.raises(ConfigError, match="add_double_head_config"):
        StandardROIHeads.from_config(cfg, SHAPES_FEATURES)


@pytest.mark.parametrize("wrong", [{"num_blocks": 0}, {"conv_dim": 18}, {"norm": "GN"}])
def test_conv_head_refuses_what_it_cannot_build(wrong: dict) -> None:
    with pytest.raises(ValueError, match="ConvHead"):
        ConvHead(8, **{"conv_dim": 16, "num_blocks": 2, "norm": "", **wrong})


def test_check_config_names_every_conv_head_setting_it_cannot_build() -> None:
    check_config(project_config())
    cfg = project_config(
        "MODEL.DOUBLE_HEAD.NUM_CONV_BLOCKS=0",
        "MODEL.DOUBLE_HEAD.CONV_DIM=18",
        "MODEL.DOUBLE_HEAD.NORM=GN",
    )
    with pytest.raises(ConfigError) as error:
        check_config(cfg)
    assert str(error.value).split("\n  ") == [
        "3 problems:",
        "MODEL.DOUBLE_HEAD.NUM_CONV_BLOCKS must be at least 1, got 0",
        "MODEL.DOUBLE_HEAD.CONV_DIM must be a positive multiple of 4 (the bottlenecks are "
        "CONV_DIM // 4 wide), got 18",
        "MODEL.DOUBLE_HEAD.NORM must be one of ('BN', ''), got 'GN'",
    ]
    # another box head: the Double-Head keys are not its business
    check_config(
        project_config("MODEL.ROI_BOX_HEAD.NAME=FastRCNNFCHead", "MODEL.DOUBLE_HEAD.NORM=GN")
    )


def labelled_batch() -> tuple[dict[str, torch.Tensor], list[Instances], list[Instances]]:
    """Shapes-like features of two 96x128 images (stride 4) with proposals near and away from
    two ground-truth boxes each."""
    features = {"features": torch.randn(2, 32, 24, 32, requires_grad=True)}
    proposals, targets = [], []
    for shift in (0.0, 8.0):
        gt = torch.tensor([[10.0, 12, 50, 60], [60, 20, 110, 80]]) + shift
        boxes = torch.cat(
            [
                gt + torch.tensor([2.0, -3, 4, 1]),
                torch.tensor([[0.0, 0, 30, 30], [40, 40, 90, 95], [70, 5, 120, 40]]),
            ]
        )
        proposals.append(
            Instances(
                (96, 128), proposal_boxes=Boxes(boxes), objectness_logits=torch.zeros(len(boxes))
            )
        )
        targets.append(Instances((96, 128), gt_boxes=Boxes(gt), gt_classes=torch.tensor([0, 2])))
    return features, proposals, targets


def has_gradient(parameter: torch.Tensor) -> bool:
    return parameter.grad is not None and bool(parameter.grad.any())


@pytest.mark.parametrize(
    ("loss_name", "trained", "untouched"),
    [("loss_cls", "fc", "conv"), ("loss_box_reg", "conv", "fc")],
)
def test_each_loss_trains_only_its_own_branch(loss_name: str, trained: str, untouched: str) -> None:
    torch.manual_seed(0)
    heads = StandardROIHeads.from_config(project_config(), SHAPES_FEATURES).train()
    features, proposals, targets = labelled_batch()
    losses = heads(features, proposals, targets)
    assert losses[loss_name] > 0
    losses[loss_name].backward()

    branches: dict[str, list[torch.Tensor]] = {"fc": [], "conv": []}
    for name, parameter in heads.named_parameters():
        if name.startswith(("box_head.fc", "box_predictor.cls_score.")):
            branches["fc"].append(parameter)
        elif name.startswith(("box_head.conv_head.", "box_predictor.bbox_pred.")):
            branches["conv"].append(parameter)
        else:
            pytest.fail(f"parameter {name} is in neither branch")
    assert len(branches["fc"]) == 6  # fc6, fc7, cls_score: weights and biases
    assert all(has_gradient(p) for p in branches[trained])
    assert not any(has_gradient(p) for p in branches[untouched])
    assert has_gradient(features["features"])  # both losses reach the shared features


def test_conv_head_has_the_blocks_and_parameters_counted_by_hand() -> None:
    head = ConvHead(8, conv_dim=16, num_blocks=3, norm="")
    assert [type(block) for block in head.blocks] == [
        WideningBlock,
        BottleneckBlock,
        BottleneckBlock,
    ]
    convs = [m for m in head.modules() if isinstance(m, nn.Conv2d)]
    assert [(m.in_channels, m.out_channels, m.kernel_size) for m in convs] == [
        (8, 8, (3, 3)),  # widening block: 3x3, 1x1 up to 16, 1x1 shortcut
        (8, 16, (1, 1)),
        (8, 16, (1, 1)),
        *[(16, 4, (1, 1)), (4, 4, (3, 3)), (4, 16, (1, 1))] * 2,  # bottlenecks 16 -> 4 -> 16
    ]
    # widening: (8*8*9 + 8) + 2 * (8*16 + 16); bottleneck: (16*4 + 4) + (4*4*9 + 4) + (4*16 + 16)
    assert sum(p.numel() for p in head.parameters()) == 872 + 2 * 296

    normed = ConvHead(8, conv_dim=16, num_blocks=3, norm="BN")
    assert sum(isinstance(m, nn.BatchNorm2d) for m in normed.modules()) == 9
    # no conv biases; each BatchNorm has a weight and a bias per channel
    widening = 576 + 128 + 128 + 2 * (8 + 16 + 16)
    bottleneck = 64 + 144 + 64 + 2 * (4 + 4 + 16)
    assert sum(p.numel() for p in normed.parameters()) == widening + 2 * bottleneck


def zero_convs(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.zeros_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


@pytest.mark.parametrize("norm", ["", "BN"])
def test_with_zero_conv_weights_the_shortcuts_carry_the_input_through(norm: str) -> None:
    torch.manual_seed(0)
    head = ConvHead(8, conv_dim=16, num_blocks=4, norm=norm).eval()  # fresh BN: identity
    projection = torch.randn(16, 8)
    with torch.no_grad():
        zero_convs(head)
        head.blocks[0].shortcut[0].weight.copy_(projection[:, :, None, None])
    pooled = torch.randn(5, 8, 7, 7)
    # only the widening block's projection remains: ReLU, then the average over the 7x7 map
    expected = torch.einsum("oc,nchw->nohw", projection, pooled).clamp(min=0).mean(dim=(2, 3))
    torch.testing.assert_close(head(pooled), expected, rtol=1e-4, atol=1e-5)


def test_blocks_add_their_branch_to_the_shortcut_then_apply_relu() -> None:
    torch.manual_seed(0)
    widening = WideningBlock(8, 16, norm="")
    projection, shortcut_bias, branch_bias = torch.randn(16, 8), torch.randn(16), torch.randn(16)
    with torch.no_grad():
        zero_convs(widening)
        widening.shortcut[0].weight.copy_(projection[:, :, None, None])
        widening.shortcut[0].bias.copy_(shortcut_bias)
        widening.conv2[0].bias.copy_(branch_bias)  # the branch's output: its last bias alone
    x = torch.randn(3, 8, 7, 7)
    shortcut = torch.einsum("oc,nchw->nohw", projection, x) + shortcut_bias[:, None, None]
    expected = (shortcut + branch_bias[:, None, None]).clamp(min=0)
    torch.testing.assert_close(widening(x), expected)

    bottleneck = BottleneckBlock(16, norm="")
    residual = torch.randn(16)
    with torch.no_grad():
        zero_convs(bottleneck)
        bottleneck.conv3[0].bias.copy_(residual)
    y = torch.randn(3, 16, 7, 7)
    given = y.clone()
    torch.testing.assert_close(bottleneck(y), (y + residual[:, None, None]).clamp(min=0))
    assert torch.equal(y, given)  # the input is not changed in place


@pytest.fixture(scope="module")
def trained(tiny_shapes, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-iteration run of the tiny model with the Double-Head config through the project's
    train_net.py, on the tiny shapes set (served as shapes_val), evaluated on it at the end."""
    root = tmp_path_factory.mktemp("datasets")
    # a complete split is reused, never regenerated: shapes_val is the tiny set here
    shutil.copytree(tiny_shapes.folder, root / "shapes" / "val")
    output = tmp_path_factory.mktemp("double_head") / "output"
    overrides = [
        "DATASETS.TRAIN=[shapes_val]",
        "DATASETS.TEST=[shapes_val]",
        f"DATASETS.PROPOSAL_FILES_TRAIN=[{tiny_shapes.proposal_file}]",
        f"DATASETS.PROPOSAL_FILES_TEST=[{tiny_shapes.proposal_file}]",
        "DATASETS.PROPOSAL_LOADER=auto",
        "MODEL.SMALL_CONVNET.CHANNELS=[8, 16]",
        "MODEL.ROI_BOX_HEAD.FC_DIM=32",
        "MODEL.DOUBLE_HEAD.CONV_DIM=16",
        "INPUT.MIN_SIZE_TRAIN=[96, 112]",
        "INPUT.MAX_SIZE_TRAIN=160",
        "INPUT.MIN_SIZE_TEST=96",
        "INPUT.MAX_SIZE_TEST=160",
        "DATALOADER.NUM_WORKERS=0",
        "SOLVER.MAX_ITER=4",
        "SOLVER.STEPS=[3]",
        "SOLVER.WARMUP_ITERS=2",
        "SOLVER.LOG_PERIOD=2",
        "SOLVER.CHECKPOINT_PERIOD=100",
        "SOLVER.BASE_LR=0.01",
        f"OUTPUT_DIR={output}",
    ]
    command = [sys.executable, str(PROJECT / "train_net.py"), "--config-file", str(SHAPES_CONFIG)]
    result = subprocess.run(
        [*command, *overrides],
        cwd=REPO,
        env={**os.environ, "DETKIT_DATASETS": str(root), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return output


def test_train_net_trains_with_finite_losses_and_evaluates(trained: Path) -> None:
    lines = [json.loads(line) for line in (trained / "metrics.json").read_text().splitlines()]
    training = [line for line in lines if "total_loss" in line]
    assert [line["iteration"] for line in training] == [1, 3]  # LOG_PERIOD 2, MAX_ITER 4
    for line in training:
        assert all(math.isfinite(line[k]) for k in ("total_loss", "loss_cls", "loss_box_reg"))
    evaluation = json.loads((trained / "inference" / "shapes_val" / "evaluation.json").read_text())
    assert {"AP", "AP50", "AP75"} <= set(evaluation["bbox"])


def test_train_net_trained_a_double_head(trained: Path) -> None:
    cfg = load_config(
        trained / "config.yaml", defaults=add_double_head_config(get_default_config())
    )
    assert cfg.MODEL.ROI_BOX_HEAD.NAME == "DoubleHead" and cfg.MODEL.DOUBLE_HEAD.CONV_DIM == 16
    state = torch.load(trained / "model_final.pth", weights_only=True)["model"]
    assert state["roi_heads.box_predictor.cls_score.weight"].shape == (4, 32)  # from the fc-head
    assert state["roi_heads.box_predictor.bbox_pred.weight"].shape == (12, 16)  # the conv-head
    assert any(key.startswith("roi_heads.box_head.conv_head.blocks.4.") for key in state)


def test_the_readme_lists_the_keys_as_generated_from_their_defaults() -> None:
    readme = (PROJECT / "README.md").read_text()
    assert generated_part(readme, "README.md") == markdown_reference(DoubleHeadKeys), (
        "regenerate the table with the command in README.md's marker line"
    )
