"""The backbone registry and the interface every backbone follows."""

from __future__ import annotations

from dataclasses import dataclass

from fvcore.common.registry import Registry
from torch import Tensor, nn

BACKBONE_REGISTRY = Registry("BACKBONE")
BACKBONE_REGISTRY.__doc__ = """Backbones: ``cls.from_config(cfg)`` builds one; see Backbone."""


@dataclass(frozen=True)
class ShapeSpec:
    """Channels and stride (image pixels per feature cell) of one named feature map."""

    channels: int
    stride: int


class Backbone(nn.Module):
    """A network that maps a normalised image batch ``[N, 3, H, W]`` to named feature maps."""

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def output_shape(self) -> dict[str, ShapeSpec]:
        """Channels and stride of every feature map ``forward`` returns."""
        raise NotImplementedError

    @property
    def size_divisibility(self) -> int:
        """What the input's height and width must be multiples of (0: any size); the model pads
        images to it. A backbone that adds maps of neighbouring strides (an FPN) needs its
        largest stride, so that every map is exactly twice the size of the next coarser one."""
        return 0


def build_backbone(cfg) -> Backbone:
    """The backbone named by ``MODEL.BACKBONE.NAME``, built from the config."""
    return BACKBONE_REGISTRY.get(cfg.MODEL.BACKBONE.NAME).from_config(cfg)


def freeze(module: nn.Module) -> None:
    """Stops training of ``module``'s parameters."""
    for parameter in module.parameters():
        parameter.requires_grad_(False)
