"""Registries admit classes with from_config and builders taking the config, and nothing else."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from detkit.config import get_default_config
from detkit.data import PROPOSAL_LOADER_REGISTRY
from detkit.data.transforms import TRANSFORM_REGISTRY
from detkit.evaluation import EVALUATOR_REGISTRY
from detkit.modeling import (
    BACKBONE_REGISTRY,
    META_ARCH_REGISTRY,
    ROI_BOX_HEAD_REGISTRY,
    ROI_HEADS_REGISTRY,
    ROI_POOLER_REGISTRY,
    SAMPLER_REGISTRY,
    Backbone,
    ShapeSpec,
    build_backbone,
)
from detkit.utils.registry import Registry

ALL_REGISTRIES = [
    BACKBONE_REGISTRY,
    META_ARCH_REGISTRY,
    ROI_BOX_HEAD_REGISTRY,
    ROI_HEADS_REGISTRY,
    ROI_POOLER_REGISTRY,
    SAMPLER_REGISTRY,
    EVALUATOR_REGISTRY,
    TRANSFORM_REGISTRY,
    PROPOSAL_LOADER_REGISTRY,
]


@pytest.fixture
def registry() -> Registry:
    return Registry("TEST")


def test_every_detkit_registry_checks_what_it_admits() -> None:
    for registry in ALL_REGISTRIES:
        assert isinstance(registry, Registry), registry._name
        with pytest.raises(TypeError, match=f"{registry._name} registry: cannot register"):
            registry.register(name="NotBuildable")(42)
        assert "NotBuildable" not in registry


def test_a_class_without_from_config_is_refused_saying_what_is_expected(registry) -> None:
    with pytest.raises(TypeError, match=r"'Plain': the class Plain has no from_config .*"
                       r"from_config\(cfg, \.\.\.\) classmethod or a builder function"):

        @registry.register()
        class Plain:
            pass

    assert "Plain" not in registry


def test_a_builder_must_take_the_config_positionally(registry) -> None:
    with pytest.raises(TypeError, match="takes no positional argument"):
        registry.register(name="Nullary")(lambda: 1)
    with pytest.raises(TypeError, match="neither a class nor callable"):
        registry.register(name="Value")("a string")


def test_classes_build_through_from_config_and_builders_are_called(registry) -> None:
    @registry.register()
    class WithConfig:
        def __init__(self, value):
            self.value = value

        @classmethod
        def from_config(cls, cfg, extra):
            return cls((cfg["k"], extra))

    @registry.register(name="built_by_function")
    def build_thing(cfg, extra):
        return ("function", cfg["k"], extra)

    assert registry.build("WithConfig", {"k": 1}, 2).value == (1, 2)
    assert registry.build("built_by_function", {"k": 3}, extra=4) == ("function", 3, 4)


def test_an_unknown_name_lists_the_registered_ones_and_the_closest(registry) -> None:
    registry.register(name="FastRCNNSampler")(lambda cfg: None)
    registry.register(name="OtherSampler")(lambda cfg: None)
    with pytest.raises(KeyError, match=r"no 'FastRCNNSamplr' in the TEST registry; registered: "
                       r"FastRCNNSampler, OtherSampler; did you mean 'FastRCNNSampler'\?"):
        registry.build("FastRCNNSamplr", None)


class _OneConv(Backbone):
    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3, stride=4, padding=1)

    def forward(self, images):
        return {"c": self.conv(images)}

    def output_shape(self):
        return {"c": ShapeSpec(channels=4, stride=4)}


def test_a_detectron2_style_backbone_builder_gets_the_config_and_the_input_shape() -> None:
    seen = []

    @BACKBONE_REGISTRY.register()
    def build_one_conv_backbone(cfg, input_shape):
        seen.append(input_shape)
        return _OneConv(input_shape.channels)

    try:
        cfg = get_default_config()
        cfg.MODEL.BACKBONE.NAME = "build_one_conv_backbone"
        backbone = build_backbone(cfg)
        assert seen == [ShapeSpec(channels=3, stride=1)]
        assert backbone(torch.zeros(1, 3, 16, 16))["c"].shape == (1, 4, 4, 4)
    finally:
        BACKBONE_REGISTRY._obj_map.pop("build_one_conv_backbone")


def test_a_backbone_builder_returning_something_else_is_named() -> None:
    BACKBONE_REGISTRY.register(name="returns_a_linear")(lambda cfg, shape: nn.Linear(1, 1))
    try:
        cfg = get_default_config()
        cfg.MODEL.BACKBONE.NAME = "returns_a_linear"
        with pytest.raises(TypeError, match="'returns_a_linear' built a Linear, not a"):
            build_backbone(cfg)
    finally:
        BACKBONE_REGISTRY._obj_map.pop("returns_a_linear")
