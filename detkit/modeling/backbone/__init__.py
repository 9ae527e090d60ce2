"""Backbones, registered in BACKBONE_REGISTRY and picked by MODEL.BACKBONE.NAME."""

from .build import BACKBONE_REGISTRY, Backbone, ShapeSpec, build_backbone
from .resnet import ResNet
from .small_convnet import SmallConvNet
from .vgg import VGG16

__all__ = [
    "BACKBONE_REGISTRY",
    "VGG16",
    "Backbone",
    "ResNet",
    "ShapeSpec",
    "SmallConvNet",
    "build_backbone",
]
