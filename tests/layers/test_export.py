"""Both ops survive ``torch.export``: the exported program computes what eager mode computes."""

from __future__ import annotations

import torch
from roi_testing import random_rois
from torch import Tensor, nn

from detkit.layers import ROIAlign, ROIPool


class TwoPoolers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pool = ROIPool(3, 0.5)
        self.align = ROIAlign((2, 3), 0.5, sampling_ratio=0, aligned=True)

    def forward(self, features: Tensor, rois: Tensor) -> tuple[Tensor, Tensor]:
        return self.pool(features, rois), self.align(features, rois)


def test_exported_program_pools_as_eager_mode_does() -> None:
    gen = torch.Generator().manual_seed(5)
    features = torch.randn(2, 4, 9, 11, generator=gen)
    rois = random_rois(gen, 2, 7, 9, 11, scale=0.5).float()
    model = TwoPoolers()
    exported = torch.export.export(model, (features, rois))
    targets = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert "detkit.roi_pool_forward.default" in targets
    assert "detkit.roi_align_forward.default" in targets
    other_features = torch.randn(2, 4, 9, 11, generator=gen)
    for got, expected in zip(
        exported.module()(other_features, rois), model(other_features, rois), strict=True
    ):
        assert torch.equal(got, expected)
