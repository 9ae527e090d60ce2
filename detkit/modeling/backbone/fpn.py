"""Feature Pyramid Network (Lin et al., CVPR 2017) over a bottom-up backbone, and ResNet-FPN."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn
from torch.nn import functional

from .build import BACKBONE_REGISTRY, Backbone, ShapeSpec
from .resnet import ResNet


def xavier_fill(conv: nn.Conv2d) -> None:
    """Caffe2's "XavierFill", detectron2's start for FPN convolutions: kaiming-uniform with
    a = 1 (a bound of sqrt(3 / fan_in)) and zero bias. (fvcore has it, but importing fvcore.nn
    runs torch.jit.script, which warns on every import in this torch.)"""
    nn.init.kaiming_uniform_(conv.weight, a=1)
    nn.init.zeros_(conv.bias)


class FPN(Backbone):
    """A pyramid ``p<l>`` of ``out_channels`` maps, one per ``in_features`` map of ``bottom_up``
    (``l`` = log2 of its stride: ``res2`` … ``res5`` give ``p2`` … ``p5``).

    Each input gets a lateral 1x1 conv; going from the coarsest map down, the running result is
    upsampled 2x (nearest) and added to the next finer lateral; a 3x3 conv then smooths each
    level. The input strides must double from one map to the next, and images must be padded
    to a multiple of the largest stride (``size_divisibility``) so that the maps line up.
    Convolutions start as detectron2's do (Caffe2's "XavierFill": kaiming-uniform with a = 1,
    bias 0). No extra coarser level (detectron2's ``p6``): Fast R-CNN has no RPN to feed.
    """

    def __init__(
        self, bottom_up: Backbone, in_features: Sequence[str], out_channels: int = 256
    ) -> None:
        super().__init__()
        shapes = bottom_up.output_shape()
        unknown = [name for name in in_features if name not in shapes]
        if not in_features or unknown:
            raise ValueError(
                f"FPN: in_features must be some of the bottom-up maps {sorted(shapes)}, "
                f"got {list(in_features)}"
            )
        strides = [shapes[name].stride for name in in_features]
        doubling = [strides[0] * 2**index for index in range(len(strides))]
        if strides != doubling or strides[0] & (strides[0] - 1):
            raise ValueError(
                f"FPN: in_features must have power-of-2 strides, each twice the previous; "
                f"{list(in_features)} have strides {strides}"
            )
        self.bottom_up = bottom_up
        self.in_features = list(in_features)
        self.lateral_convs: list[nn.Conv2d] = []
        self.output_convs: list[nn.Conv2d] = []
        self._shapes: dict[str, ShapeSpec] = {}
        for name, stride in zip(in_features, strides, strict=True):
            level = int(math.log2(stride))
            lateral = nn.Conv2d(shapes[name].channels, out_channels, kernel_size=1)
            output = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
            for conv in (lateral, output):
                xavier_fill(conv)
            self.add_module(f"fpn_lateral{level}", lateral)
            self.add_module(f"fpn_output{level}", output)
            self.lateral_convs.append(lateral)
            self.output_convs.append(output)
            self._shapes[f"p{level}"] = ShapeSpec(channels=out_channels, stride=stride)

    @property
    def size_divisibility(self) -> int:
        return max(shape.stride for shape in self._shapes.values())

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        height, width = images.shape[-2:]
        divisor = self.size_divisibility
        if height % divisor or width % divisor:
            raise ValueError(
                f"FPN: image size {height}x{width} is not a multiple of {divisor}; pad the "
                f"batch to multiples of size_divisibility (FastRCNN.preprocess_images does)"
            )
        features = self.bottom_up(images)
        levels = list(zip(self.in_features, self.lateral_convs, self.output_convs, strict=True))
        results = []
        running = None
        for name, lateral, output in reversed(levels):
            x = lateral(features[name])
            if running is not None:
                x = x + functional.interpolate(running, scale_factor=2.0, mode="nearest")
            running = x
            results.append(output(x))
        return dict(zip(self._shapes, reversed(results), strict=True))

    def output_shape(self) -> dict[str, ShapeSpec]:
        return dict(self._shapes)


@BACKBONE_REGISTRY.register()
class ResNetFPN(FPN):
    """An FPN over a ResNet trunk (``ResNet``, through the last of ``in_features``): with the
    default ``res2`` … ``res5``, ``{"p2", "p3", "p4", "p5"}`` at strides 4 … 32.

    The trunk is the module ``bottom_up``; torchvision ResNet ImageNet weights load into it by
    name (``DetectionCheckpointer`` maps them there).
    """

    def __init__(
        self,
        depth: int = 50,
        freeze_at: int = 2,
        in_features: Sequence[str] = ("res2", "res3", "res4", "res5"),
        out_channels: int = 256,
    ) -> None:
        trunk = ResNet(depth=depth, freeze_at=freeze_at, out_features=in_features)
        super().__init__(trunk, in_features, out_channels)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec | None = None) -> ResNetFPN:
        return cls(
            depth=cfg.MODEL.RESNETS.DEPTH,
            freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
            in_features=cfg.MODEL.FPN.IN_FEATURES,
            out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        )
