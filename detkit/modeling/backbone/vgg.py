"""VGG16 up to conv5_3 (stride 16), the network of the Fast R-CNN paper."""

from __future__ import annotations

from torch import Tensor, nn

from .build import BACKBONE_REGISTRY, Backbone, ShapeSpec, freeze

# Output channels of VGG16's convolutions, "M" a 2x2 max pool; conv5_3 ends it, without pool5,
# which RoI pooling replaces.
VGG16_LAYOUT = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
# Index in `features` just past each conv block (its convs, ReLUs and pool).
_BLOCK_ENDS = [5, 10, 17, 24, 30]


@BACKBONE_REGISTRY.register()
class VGG16(Backbone):
    """VGG16's convolutions through conv5_3 + ReLU: ``{"conv5_3": [N, 512, H/16, W/16]}``.

    Modules are named as in ``torchvision.models.vgg16().features`` so torchvision's ImageNet
    weights load by name. ``freeze_at`` conv blocks from the input stay fixed (2 = conv1_1 to
    conv2_2, as in the paper).
    """

    def __init__(self, freeze_at: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for spec in VGG16_LAYOUT:
            if spec == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [
                    nn.Conv2d(channels, spec, kernel_size=3, padding=1),
                    nn.ReLU(inplace=True),
                ]
                channels = spec
        self.features = nn.Sequential(*layers)
        if not 0 <= freeze_at <= len(_BLOCK_ENDS):
            raise ValueError(f"VGG16: freeze_at must be in [0, 5], got {freeze_at}")
        if freeze_at:
            freeze(self.features[: _BLOCK_ENDS[freeze_at - 1]])

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec | None = None) -> VGG16:
        return cls(freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        return {"conv5_3": self.features(images)}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {"conv5_3": ShapeSpec(channels=512, stride=16)}
