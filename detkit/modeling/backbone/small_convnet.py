"""A small VGG-style network trained from scratch: the backbone for CPU-sized jobs."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .build import BACKBONE_REGISTRY, Backbone, ShapeSpec


def _conv_block(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


@BACKBONE_REGISTRY.register()
class SmallConvNet(Backbone):
    """A stride-2 stem, then one stage per entry of ``channels`` (``convs_per_stage`` 3x3 convs
    with BatchNorm and ReLU), a 2x2 max pool between stages: ``{"features": [N, C, H/s, W/s]}``
    with ``s = 2 ** len(channels)``.

    No ImageNet weights exist for it; it learns from the detection data alone, which a small
    synthetic dataset (``shapes``) allows within minutes on a CPU.
    """

    def __init__(self, channels: Sequence[int] = (32, 64, 128, 256), convs_per_stage: int = 2):
        super().__init__()
        if not channels or convs_per_stage < 1:
            raise ValueError(
                f"SmallConvNet: needs at least one stage and one conv per stage, got "
                f"channels={list(channels)}, convs_per_stage={convs_per_stage}"
            )
        layers: list[nn.Module] = [_conv_block(3, channels[0], stride=2)]
        previous = channels[0]
        for index, width in enumerate(channels):
            if index:
                layers.append(nn.MaxPool2d(2))
            for _ in range(convs_per_stage):
                layers.append(_conv_block(previous, width))
                previous = width
        self.features = nn.Sequential(*layers)
        self._channels = previous
        self._stride = 2 ** len(channels)

    @classmethod
    def from_config(cls, cfg) -> SmallConvNet:
        spec = cfg.MODEL.SMALL_CONVNET
        return cls(channels=spec.CHANNELS, convs_per_stage=spec.CONVS_PER_STAGE)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        return {"features": self.features(images)}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {"features": ShapeSpec(channels=self._channels, stride=self._stride)}
