"""Truncated SVD of the box head's fc layers (paper §3.1): the factorisation, the head built
from MODEL.ROI_BOX_HEAD.SVD_RANKS, checkpoints of either layout, and tools/compress_fc.py."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from detkit.checkpoint import DetectionCheckpointer
from detkit.config import ConfigError, check_config, load_config
from detkit.modeling import FastRCNNFCHead, build_model
from detkit.modeling.roi_heads.svd import compress_fc_layers, factor_linear, truncated_linear
from detkit.structures import Boxes, Instances

REPO = Path(__file__).resolve().parents[2]
SHAPES = REPO / "configs" / "shapes" / "fast_rcnn.yaml"
SMALL = ["MODEL.SMALL_CONVNET.CHANNELS=[8, 8]", "MODEL.ROI_BOX_HEAD.FC_DIM=24"]


def linear(in_features: int, out_features: int, seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(in_features, out_features).double()


def test_a_full_rank_factorisation_computes_the_same_layer() -> None:
    layer = linear(12, 7, seed=0)
    x = torch.randn(5, 12, dtype=torch.float64)
    factored = factor_linear(layer, 7)
    assert factored[0].bias is None and factored[0].weight.shape == (7, 12)
    torch.testing.assert_close(factored(x), layer(x), rtol=1e-12, atol=1e-12)


def test_a_low_rank_factorisation_is_the_best_rank_r_approximation() -> None:
    layer = linear(10, 8, seed=1)
    u, s, vh = torch.linalg.svd(layer.weight.detach(), full_matrices=False)
    best = u[:, :3] @ torch.diag(s[:3]) @ vh[:3]  # Eckart-Young: the best rank-3 matrix
    x = torch.randn(4, 10, dtype=torch.float64)
    torch.testing.assert_close(factor_linear(layer, 3)(x), x @ best.T + layer.bias.detach())


def test_ranks_outside_one_to_the_smaller_side_are_refused() -> None:
    for rank in (0, 8):
        with pytest.raises(ValueError, match=r"rank .* of a 10 -> 7 layer must be in \[1, 7\]"):
            truncated_linear(10, 7, rank)


def test_the_reported_error_is_relative_to_the_layer() -> None:
    # A 6 x 9 layer with singular values 4, 3, 2, 1: rank 2 drops 2 and 1, so the error is
    # sqrt(2² + 1²) / sqrt(4² + 3² + 2² + 1²) = sqrt(5 / 30) at any scale of the weights.
    torch.manual_seed(2)
    u = torch.linalg.qr(torch.randn(6, 4, dtype=torch.float64)).Q
    v = torch.linalg.qr(torch.randn(9, 4, dtype=torch.float64)).Q
    weight = u @ torch.diag(torch.tensor([4.0, 3.0, 2.0, 1.0], dtype=torch.float64)) @ v.T
    for scale in (1.0, 1000.0):
        head = FastRCNNFCHead((1, 3, 3), fc_dim=6)
        with torch.no_grad():
            head.fc6.weight.copy_(scale * weight)
        errors = compress_fc_layers(head, {"fc6": 2})
        assert errors == {"fc6": pytest.approx((5 / 30) ** 0.5, rel=1e-5)}


def test_the_head_builds_factored_layers_from_the_config() -> None:
    cfg = load_config(SHAPES, [*SMALL, "MODEL.ROI_BOX_HEAD.SVD_RANKS=[6, 0]"])
    head = build_model(cfg).roi_heads.box_head
    assert [type(head.fc6), type(head.fc7)] == [nn.Sequential, nn.Linear]
    assert head.fc6[0].weight.shape == (6, 8 * 7 * 7) and head.fc6[1].weight.shape == (24, 6)
    with pytest.raises(ValueError, match=r"svd_ranks names \['fc9'\]"):
        FastRCNNFCHead((4, 7, 7), svd_ranks={"fc9": 3})
    cfg.MODEL.ROI_BOX_HEAD.SVD_RANKS = [6, 4, 2]
    with pytest.raises(ConfigError, match=r"SVD_RANKS \[6, 4, 2\]: at most one rank per"):
        check_config(cfg)


def test_a_checkpoint_of_the_other_layout_is_refused_naming_the_key() -> None:
    plain, factored = FastRCNNFCHead((2, 3, 3), fc_dim=8), FastRCNNFCHead((2, 3, 3), fc_dim=8)
    compress_fc_layers(factored, {"fc6": 4})
    with pytest.raises(ValueError, match=r"fc6 as a truncated SVD of rank 4 .* giving fc6 rank 4"):
        plain.load_state_dict(factored.state_dict(), strict=False)
    svd_head = FastRCNNFCHead((2, 3, 3), fc_dim=8, svd_ranks={"fc6": 4})
    with pytest.raises(ValueError, match=r"unfactored fc6, but the box head builds it as a "):
        svd_head.load_state_dict(plain.state_dict(), strict=False)
    svd_head.load_state_dict(factored.state_dict())  # the matching layout loads


def load_compress_fc():
    spec = importlib.util.spec_from_file_location("compress_fc", REPO / "tools" / "compress_fc.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["compress_fc"] = module
    spec.loader.exec_module(module)
    return module


def detections(model: nn.Module) -> Instances:
    generator = torch.Generator().manual_seed(5)
    image = torch.randint(0, 255, (3, 64, 80), generator=generator, dtype=torch.uint8)
    boxes = torch.tensor([[4.0, 4, 40, 30], [20, 10, 70, 60], [0, 0, 80, 64], [30, 30, 50, 50]])
    proposals = Instances((64, 80), proposal_boxes=Boxes(boxes), objectness_logits=torch.zeros(4))
    with torch.no_grad():
        return model.eval()([{"image": image, "proposals": proposals}])[0]["instances"]


def test_compress_fc_writes_a_checkpoint_that_loads_by_config(tmp_path, capsys) -> None:
    cfg = load_config(SHAPES, [*SMALL, "MODEL.ROI_HEADS.SCORE_THRESH_TEST=0.0"])
    torch.manual_seed(0)
    model = build_model(cfg)
    DetectionCheckpointer(model, str(tmp_path)).save("model_trained")
    weights = str(tmp_path / "model_trained.pth")
    tool = load_compress_fc()
    full = tmp_path / "full_rank.pth"
    argv = ["--config-file", str(SHAPES), "--ranks", "fc6=24", "fc7=24", "--output", str(full)]
    assert tool.main([*argv, *SMALL, f"MODEL.WEIGHTS={weights}"]) == 0
    assert "MODEL.ROI_BOX_HEAD.SVD_RANKS=[24,24]" in capsys.readouterr().out
    compressed = build_model(
        load_config(
            SHAPES,
            [
                *SMALL,
                "MODEL.ROI_HEADS.SCORE_THRESH_TEST=0.0",
                "MODEL.ROI_BOX_HEAD.SVD_RANKS=[24,24]",
            ],
        )
    )
    DetectionCheckpointer(compressed).load(str(full))
    original, factored = detections(model), detections(compressed)
    assert len(original) > 0
    torch.testing.assert_close(factored.scores, original.scores, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        factored.pred_boxes.tensor, original.pred_boxes.tensor, rtol=1e-4, atol=1e-3
    )
    # errors: no weights, a bad rank, a layer the head lacks
    assert tool.main([*argv, *SMALL]) == 2
    assert "give the trained weights as MODEL.WEIGHTS" in capsys.readouterr().err
    bad = ["--config-file", str(SHAPES), "--ranks", "fc6=x", "--output", str(full)]
    assert tool.main([*bad, *SMALL, f"MODEL.WEIGHTS={weights}"]) == 2
    assert "'fc6=x' is not LAYER=RANK" in capsys.readouterr().err
    bad = ["--config-file", str(SHAPES), "--ranks", "fc8=3", "--output", str(full)]
    assert tool.main([*bad, *SMALL, f"MODEL.WEIGHTS={weights}"]) == 2
    assert "fc8 is not an unfactored fully connected layer" in capsys.readouterr().err
