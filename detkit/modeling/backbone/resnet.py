"""ResNet's C4 trunk (stem, res2, res3, res4; stride 16) with frozen BatchNorm."""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.models.resnet import ResNet as TorchvisionResNet

from ...layers import FrozenBatchNorm2d
from .build import BACKBONE_REGISTRY, Backbone, ShapeSpec, freeze

_DEPTHS = {
    18: (BasicBlock, [2, 2, 2]),
    34: (BasicBlock, [3, 4, 6]),
    50: (Bottleneck, [3, 4, 6]),
    101: (Bottleneck, [3, 4, 23]),
}


@BACKBONE_REGISTRY.register()
class ResNet(Backbone):
    """ResNet-{18, 34, 50, 101} through res4, returned as ``{"res4": [N, C, H/16, W/16]}``.

    Blocks and names are torchvision's (``conv1``, ``bn1``, ``layer1`` … ``layer3``), so its
    ImageNet weights load by name; BatchNorm is frozen (``FrozenBatchNorm2d``). ``freeze_at``
    stages stay fixed: 1 = the stem, 2 = the stem and res2 (detectron2's default).
    """

    def __init__(self, depth: int = 50, freeze_at: int = 2) -> None:
        super().__init__()
        if depth not in _DEPTHS:
            raise ValueError(f"ResNet: depth must be one of {sorted(_DEPTHS)}, got {depth}")
        if not 0 <= freeze_at <= 4:
            raise ValueError(f"ResNet: freeze_at must be in [0, 4], got {freeze_at}")
        block, layers = _DEPTHS[depth]
        trunk = TorchvisionResNet(block, [*layers, 1], norm_layer=FrozenBatchNorm2d)
        self.conv1, self.bn1, self.relu, self.maxpool = (
            trunk.conv1,
            trunk.bn1,
            trunk.relu,
            trunk.maxpool,
        )
        self.layer1, self.layer2, self.layer3 = trunk.layer1, trunk.layer2, trunk.layer3
        self._channels = 256 * block.expansion
        stages = [nn.ModuleList([self.conv1, self.bn1]), self.layer1, self.layer2, self.layer3]
        for stage in stages[:freeze_at]:
            freeze(stage)

    @classmethod
    def from_config(cls, cfg) -> ResNet:
        return cls(depth=cfg.MODEL.RESNETS.DEPTH, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        return {"res4": self.layer3(self.layer2(self.layer1(x)))}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {"res4": ShapeSpec(channels=self._channels, stride=16)}
