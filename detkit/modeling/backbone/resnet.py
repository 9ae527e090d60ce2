"""ResNet trunks (stem, res2 … res5) with frozen BatchNorm: the C4 backbone and FPN's bottom-up."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.models.resnet import ResNet as TorchvisionResNet

from ...layers import FrozenBatchNorm2d
from .build import BACKBONE_REGISTRY, Backbone, ShapeSpec, freeze

# Block type and blocks per stage (res2, res3, res4, res5) of each depth.
_DEPTHS = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
}
STAGE_NAMES = ("res2", "res3", "res4", "res5")


@BACKBONE_REGISTRY.register()
class ResNet(Backbone):
    """ResNet-{18, 34, 50, 101} through the last stage ``out_features`` names, returning those
    stages' outputs (``res2`` … ``res5``, strides 4 … 32); by config, the C4 backbone
    ``{"res4": [N, C, H/16, W/16]}``.

    Blocks and names are torchvision's (``conv1``, ``bn1``, ``layer1`` … ``layer4`` for res2 …
    res5), so its ImageNet weights load by name; stages after the last one asked for are not
    built. BatchNorm is frozen (``FrozenBatchNorm2d``). ``freeze_at`` stages stay fixed: 1 = the
    stem, 2 = the stem and res2 (detectron2's default), and so on.
    """

    def __init__(
        self, depth: int = 50, freeze_at: int = 2, out_features: Sequence[str] = ("res4",)
    ) -> None:
        super().__init__()
        if depth not in _DEPTHS:
            raise ValueError(f"ResNet: depth must be one of {sorted(_DEPTHS)}, got {depth}")
        unknown = [name for name in out_features if name not in STAGE_NAMES]
        if not out_features or unknown:
            raise ValueError(
                f"ResNet: out_features must be some of {list(STAGE_NAMES)}, "
                f"got {list(out_features)}"
            )
        num_stages = max(STAGE_NAMES.index(name) for name in out_features) + 1
        if not 0 <= freeze_at <= num_stages + 1:
            raise ValueError(
                f"ResNet: freeze_at must be in [0, {num_stages + 1}] for a trunk through "
                f"{STAGE_NAMES[num_stages - 1]}, got {freeze_at}"
            )
        block, blocks = _DEPTHS[depth]
        # torchvision builds all four stages; the ones not kept get a single block.
        trunk = TorchvisionResNet(
            block, blocks[:num_stages] + [1] * (4 - num_stages), norm_layer=FrozenBatchNorm2d
        )
        self.conv1, self.bn1, self.relu, self.maxpool = (
            trunk.conv1,
            trunk.bn1,
            trunk.relu,
            trunk.maxpool,
        )
        self.stages = [getattr(trunk, f"layer{i + 1}") for i in range(num_stages)]
        for index, stage in enumerate(self.stages):
            self.add_module(f"layer{index + 1}", stage)
        self.out_features = [name for name in STAGE_NAMES if name in out_features]
        self._shapes = {
            name: ShapeSpec(channels=64 * 2**index * block.expansion, stride=4 * 2**index)
            for index, name in enumerate(STAGE_NAMES[:num_stages])
        }
        for stage in [nn.ModuleList([self.conv1, self.bn1]), *self.stages][:freeze_at]:
            freeze(stage)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec | None = None) -> ResNet:
        return cls(depth=cfg.MODEL.RESNETS.DEPTH, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        outputs = {}
        for name, stage in zip(STAGE_NAMES, self.stages, strict=False):
            x = stage(x)
            if name in self.out_features:
                outputs[name] = x
        return outputs

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {name: self._shapes[name] for name in self.out_features}
