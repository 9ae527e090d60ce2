"""FLOP counting with detkit's op handles (detkit/utils/analysis.py), against hand counts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from detkit.config import load_config
from detkit.layers import roi_align, roi_pool
from detkit.modeling import build_model
from detkit.utils.analysis import flop_count_analysis

REPO = Path(__file__).resolve().parents[2]


class Pools(nn.Module):
    def forward(self, features, rois):
        return (
            roi_align(features, rois, 7, 0.5, sampling_ratio=3, aligned=True).sum()
            + roi_align(features, rois, 5, 0.5, sampling_ratio=0).sum()
            + roi_pool(features, rois, 7, 0.5).sum()
        )


@pytest.mark.filterwarnings("ignore::FutureWarning")  # importing fvcore.nn scripts functions
def test_roi_ops_are_counted_by_the_documented_rules() -> None:
    from fvcore.nn import FlopCountAnalysis

    from detkit.utils.analysis import roi_align_flops, roi_pool_flops

    features = torch.randn(1, 3, 20, 20)
    rois = torch.tensor([[0.0, 1, 1, 30, 30]] * 5)
    analysis = FlopCountAnalysis(Pools(), (features, rois))
    analysis.set_op_handle(
        "detkit::roi_align_forward", roi_align_flops, "detkit::roi_pool_forward", roi_pool_flops
    )
    analysis.unsupported_ops_warnings(False)
    # 4 multiply-adds per sample: 3x3 samples per 7x7 bin, and an adaptive grid as 2x2 per 5x5 bin
    assert analysis.by_operator()["roi_align"] == 5 * 3 * 49 * 4 * 9 + 5 * 3 * 25 * 4 * 4
    assert analysis.by_operator()["roi_pool"] == 0
    assert "detkit::roi_align_forward" not in analysis.unsupported_ops()


def test_a_detector_is_counted_layer_by_layer() -> None:
    cfg = load_config(
        REPO / "configs" / "shapes" / "fast_rcnn.yaml",
        ["MODEL.ROI_HEADS.SCORE_THRESH_TEST=0.0", "MODEL.ROI_BOX_HEAD.SVD_RANKS=[16]"],
    )
    model = build_model(cfg)
    boxes = torch.tensor([[8.0 * i, 4, 8.0 * i + 40, 60] for i in range(6)])  # distinct on stride 4
    analysis = flop_count_analysis(model, torch.zeros(3, 64, 96, dtype=torch.uint8), boxes)
    by_module = analysis.by_module()
    pooled = 32 * 7 * 7  # the shapes backbone's 32 channels, 7x7
    # 6 RoIs through fc6 as rank 16 (pooled -> 16 -> 256) and fc7 (256 -> 256), by hand
    assert by_module["model.roi_heads.box_head.fc6"] == 6 * (pooled * 16 + 16 * 256)
    assert by_module["model.roi_heads.box_head.fc7"] == 6 * 256 * 256
    assert by_module["model.roi_heads.box_predictor.cls_score"] == 6 * 256 * 4
    assert by_module["model.roi_heads.pooler"] == 6 * 32 * 49 * 4 * 4  # adaptive grid: 2x2
    assert analysis.total() == by_module[""] > by_module["model.backbone"] > 0
