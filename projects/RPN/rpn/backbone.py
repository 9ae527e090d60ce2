"""``ResNetFPNP6``: detkit's ResNet-FPN with detectron2's extra ``p6`` level for the RPN."""

from __future__ import annotations

from torch import Tensor
from torch.nn import functional

from detkit.modeling import BACKBONE_REGISTRY, ShapeSpec
from detkit.modeling.backbone import ResNetFPN


@BACKBONE_REGISTRY.register()
class ResNetFPNP6(ResNetFPN):
    """``p2`` ... ``p5`` of :class:`~detkit.modeling.backbone.ResNetFPN` and ``p6``, a
    stride-2 subsampling of ``p5`` (detectron2's ``LastLevelMaxPool``: max pooling with a 1x1
    kernel), where the RPN puts its largest anchors (512 px at stride 64). The RoI heads do not
    pool from it, so a Fast R-CNN config may name this backbone and read the same weights."""

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        features = super().forward(images)
        features["p6"] = functional.max_pool2d(features["p5"], kernel_size=1, stride=2)
        return features

    def output_shape(self) -> dict[str, ShapeSpec]:
        shapes = super().output_shape()
        return {
            **shapes,
            "p6": ShapeSpec(channels=shapes["p5"].channels, stride=2 * shapes["p5"].stride),
        }
