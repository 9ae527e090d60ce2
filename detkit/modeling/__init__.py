"""The Fast R-CNN model's parts and the registries they are built from."""

from .box_regression import Box2BoxTransform
from .matcher import Matcher
from .sampling import SAMPLER_REGISTRY, FastRCNNSampler, build_sampler

__all__ = ["SAMPLER_REGISTRY", "Box2BoxTransform", "FastRCNNSampler", "Matcher", "build_sampler"]
