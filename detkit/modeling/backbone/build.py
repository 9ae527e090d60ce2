"""The backbone registry and the interface every backbone follows."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from ...utils.registry import Registry

BACKBONE_REGISTRY = Registry("BACKBONE")
BACKBONE_REGISTRY.__doc__ = """Backbones, picked by ``MODEL.BACKBONE.NAME``: a Backbone class
with ``from_config(cfg, input_shape)`` or a builder ``f(cfg, input_shape) -> Backbone``
(detectron2's habit); ``input_shape`` is the image's :class:`ShapeSpec` (channels, stride 1)."""


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


def build_backbone(cfg, input_shape: ShapeSpec | None = None) -> Backbone:
    """The backbone named by ``MODEL.BACKBONE.NAME``, built from the config for images of
    ``input_shape`` (default: ``len(MODEL.PIXEL_MEAN)`` channels, stride 1)."""
    if input_shape is None:
        input_shape = ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN), stride=1)
    backbone = BACKBONE_REGISTRY.build(cfg.MODEL.BACKBONE.NAME, cfg, input_shape)
    if not isinstance(backbone, Backbone):
        raise TypeError(
            f"MODEL.BACKBONE.NAME={cfg.MODEL.BACKBONE.NAME!r} built a "
            f"{type(backbone).__name__}, not a detkit.modeling.Backbone"
        )
    return backbone


def freeze(module: nn.Module) -> None:
    """Stops training of ``module``'s parameters."""
    for parameter in module.parameters():
        parameter.requires_grad_(False)
