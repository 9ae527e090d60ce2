"""The data package's config checks (detkit/data/config_checks.py) are its constructors'
rules: check_config refuses the training sizes exactly when ResizeShortestEdge refuses them,
with its message naming the config keys where it names its arguments."""

from __future__ import annotations

import pytest

from detkit.config import get_default_config
from detkit.config.checks import config_problems
from detkit.data.transforms import ResizeShortestEdge

KEYS = {"short_edges": "INPUT.MIN_SIZE_TRAIN", "max_size": "INPUT.MAX_SIZE_TRAIN"}


@pytest.mark.parametrize(
    "sizes, max_size, messages",
    [
        ([600], 1000, []),
        ([480, 576, 688], 1000, []),
        ([0], 1000, ["short_edges must list positive shortest-edge sizes, got [0]"]),
        ([160, -1], 1000, ["short_edges must list positive shortest-edge sizes, got [160, -1]"]),
        ([], 1000, ["short_edges must list positive shortest-edge sizes, got []"]),
        ([600], 0, ["max_size must be positive, got 0"]),
        (
            [0],
            -5,
            [
                "short_edges must list positive shortest-edge sizes, got [0]",
                "max_size must be positive, got -5",
            ],
        ),
    ],
)
def test_check_config_refuses_the_training_sizes_the_resize_refuses(
    sizes, max_size, messages
) -> None:
    cfg = get_default_config()
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = sizes, max_size
    if messages:
        with pytest.raises(ValueError) as error:
            ResizeShortestEdge.from_config(cfg, is_train=True)
        assert str(error.value) == "ResizeShortestEdge: " + "; ".join(messages)
    else:
        ResizeShortestEdge.from_config(cfg, is_train=True)
    keyed = [KEYS[m.split(" ", 1)[0]] + " " + m.split(" ", 1)[1] for m in messages]
    assert config_problems(cfg) == keyed
