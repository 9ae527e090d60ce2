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
    with BatchNorm and ReLU), with 2x2 max pools between the first stages until the feature map
    reaches ``stride``: ``{"features": [N, C, H/stride, W/stride]}``. Stages after that keep the
    resolution, adding depth and receptive field without coarsening the grid RoI pooling cuts
    from.

    No ImageNet weights exist for it; it learns from the detection data alone, which a small
    synthetic dataset (``shapes``) allows within minutes on a CPU.
    """

    def __init__(
        self,
        channels: Sequence[int] = (16, 32, 64),
        convs_per_stage: int = 2,
        stride: int = 8,
    ) -> None:
        super().__init__()
        pools = stride.bit_length() - 2  # the stem halves once; each pool halves again
        if not channels or convs_per_stage < 1:
            raise ValueError(
                f"SmallConvNet: needs at least one stage and one conv per stage, got "
                f"channels={list(channels)}, convs_per_stage={convs_per_stage}"
            )
        if stride < 2 or stride & (stride - 1) or pools > len(channels) - 1:
            raise ValueError(
                f"SmallConvNet: stride must be a power of 2 from 2 to "
                f"{2 ** len(channels)} for {len(channels)} stages, got {stride}"
            )
        layers: list[nn.Module] = [_conv_block(3, channels[0], stride=2)]
        previous = channels[0]
        for index, width in enumerate(channels):
            if 0 < index <= pools:
                layers.append(nn.MaxPool2d(2))
            for _ in range(convs_per_stage):
                layers.append(_conv_block(previous, width))
                previous = width
        self.features = nn.Sequential(*layers)
        self._channels = previous
        self._stride = stride

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec | None = None) -> SmallConvNet:
        spec = cfg.MODEL.SMALL_CONVNET
        return cls(channels=spec.CHANNELS, convs_per_stage=spec.CONVS_PER_STAGE, stride=spec.STRIDE)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        return {"features": self.features(images)}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {"features": ShapeSpec(channels=self._channels, stride=self._stride)}
