"""Backbones, registered in BACKBONE_REGISTRY and picked by MODEL.BACKBONE.NAME."""

from .build import BACKBONE_REGISTRY, Backbone, ShapeSpec, build_backbone
from .fpn import FPN, ResNetFPN
from .resnet import ResNet
from .small_convnet import SmallConvNet
from .vgg import VGG16

__all__ = [
    "BACKBONE_REGISTRY",
    "FPN",
    "VGG16",
    "Backbone",
    "ResNet",
    "ResNetFPN",
    "ShapeSpec",
    "SmallConvNet",
    "build_backbone",
]
