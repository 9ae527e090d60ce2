"""The model's config checks (detkit/modeling/config_checks.py) are its constructors' rules:
check_config refuses a setting exactly when building the part refuses it, with the part's
message naming the config keys where the part names its arguments."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from detkit.config import get_default_config
from detkit.config.checks import config_problems
from detkit.modeling import SAMPLER_REGISTRY, FastRCNNFCHead, FastRCNNSampler, Matcher
from detkit.modeling.matcher import band_problems
from detkit.modeling.roi_heads.box_head import svd_rank_problems
from detkit.modeling.sampling import sampler_problems

BAND_KEYS = ("MODEL.ROI_HEADS.IOU_THRESHOLDS", "MODEL.ROI_HEADS.IOU_LABELS")
SAMPLER_KEYS = ("MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "MODEL.ROI_HEADS.POSITIVE_FRACTION")


def config(values: dict):
    """detkit's defaults for three classes, with ``values`` (dotted key → value) set."""
    cfg = get_default_config()
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    for key, value in values.items():
        OmegaConf.update(cfg, key, value, merge=False)
    return cfg


def refusal(build) -> str | None:
    """The message of the ValueError ``build()`` raises, or None when it builds."""
    try:
        build()
    except ValueError as error:
        return str(error)
    return None


@pytest.mark.parametrize(
    "thresholds, labels",
    [
        ([0.1, 0.5], [-1, 0, 1]),  # the paper's bands
        ([0.5], [0, 1]),  # nothing ignored (OHEM's)
        ([0.5], [-1, 0, 1]),  # a label too many
        ([0.5, 0.1], [-1, 0, 1]),  # falling
        ([0.1, 1.5], [-1, 0, 1]),  # above 1
        ([0.5], [0, 2]),  # a label that means nothing (the Matcher built it)
        ([0.5, 0.1], [0, 1, 1, 2]),  # three problems at once
    ],
)
def test_check_config_refuses_the_bands_the_matcher_refuses(thresholds, labels) -> None:
    cfg = config(dict(zip(BAND_KEYS, (thresholds, labels), strict=True)))
    refused = refusal(lambda: Matcher(thresholds, labels))
    assert (refused is not None) == bool(config_problems(cfg))
    assert config_problems(cfg) == band_problems(thresholds, labels, names=BAND_KEYS)
    if refused is not None:
        assert refused == "Matcher: " + "; ".join(band_problems(thresholds, labels))


def test_the_matcher_names_its_arguments_where_check_config_names_the_keys() -> None:
    with pytest.raises(ValueError) as error:
        Matcher([0.5], [0, 2])
    assert str(error.value) == (
        "Matcher: labels must be -1 (ignored), 0 (background) or 1 (foreground), got [0, 2]"
    )
    assert config_problems(config(dict(zip(BAND_KEYS, ([0.5], [0, 2]), strict=True)))) == [
        "MODEL.ROI_HEADS.IOU_LABELS must be -1 (ignored), 0 (background) or 1 (foreground), "
        "got [0, 2]"
    ]


@pytest.mark.parametrize(
    "batch, fraction, messages",
    [
        (64, 0.25, []),
        (0, 0.25, ["batch_size_per_image must be positive, got 0"]),
        (64, 1.5, ["positive_fraction must be in [0, 1], got 1.5"]),
        (
            -1,
            -0.5,
            [
                "batch_size_per_image must be positive, got -1",
                "positive_fraction must be in [0, 1], got -0.5",
            ],
        ),
    ],
)
def test_check_config_refuses_the_sizes_the_sampler_refuses(batch, fraction, messages) -> None:
    refused = refusal(lambda: FastRCNNSampler(batch, fraction))
    assert refused == ("FastRCNNSampler: " + "; ".join(messages) if messages else None)
    keys = dict(zip(("batch_size_per_image", "positive_fraction"), SAMPLER_KEYS, strict=True))
    keyed = [keys[m.split(" ", 1)[0]] + " " + m.split(" ", 1)[1] for m in messages]
    cfg = config(dict(zip(SAMPLER_KEYS, (batch, fraction), strict=True)))
    assert config_problems(cfg) == keyed == sampler_problems(batch, fraction, names=SAMPLER_KEYS)


def test_the_fast_rcnn_samplers_sizes_are_not_another_samplers_business() -> None:
    """A project's sampler that reads neither key: POSITIVE_FRACTION=1.5 is not refused for it
    (its package registers the checks of what it reads, as projects/OHEM does)."""

    @SAMPLER_REGISTRY.register()
    class EveryLabelledRoI:
        @classmethod
        def from_config(cls, cfg):
            return cls()

        def __call__(self, proposals, context):
            return [torch.nonzero(p.match_labels >= 0).flatten() for p in proposals]

    try:
        assert config_problems(config({SAMPLER_KEYS[1]: 1.5})) == [
            "MODEL.ROI_HEADS.POSITIVE_FRACTION must be in [0, 1], got 1.5"
        ]
        own = config({"MODEL.ROI_HEADS.SAMPLER": "EveryLabelledRoI", SAMPLER_KEYS[1]: 1.5})
        assert config_problems(own) == []
    finally:
        SAMPLER_REGISTRY._obj_map.pop("EveryLabelledRoI")  # fvcore offers no public way


@pytest.mark.parametrize("ranks", [[6, 0], [0, 0], [], [6, 4, 2], [-1], [3, -2]])
def test_check_config_refuses_the_svd_ranks_the_box_head_refuses(ranks) -> None:
    cfg = config({"MODEL.ROI_BOX_HEAD.SVD_RANKS": ranks, "MODEL.ROI_BOX_HEAD.FC_DIM": 24})
    refused = refusal(lambda: FastRCNNFCHead.from_config(cfg, (4, 7, 7)))
    assert config_problems(cfg) == ([] if refused is None else [refused])
    assert config_problems(cfg) == svd_rank_problems(ranks, 2)


@pytest.mark.parametrize(
    "num_fc, fc_dim, dropout, messages",
    [
        (2, 24, 0.5, []),
        (1, 24, 0.0, []),
        (0, 24, 0.5, ["num_fc must be positive, got 0"]),
        (2, 0, 0.5, ["fc_dim must be positive, got 0"]),
        (2, 24, 1.0, ["dropout must be in [0, 1), got 1.0"]),
        (
            0,
            -3,
            -0.1,
            [
                "num_fc must be positive, got 0",
                "fc_dim must be positive, got -3",
                "dropout must be in [0, 1), got -0.1",
            ],
        ),
    ],
)
def test_check_config_refuses_the_sizes_the_fc_head_refuses(
    num_fc, fc_dim, dropout, messages
) -> None:
    refused = refusal(lambda: FastRCNNFCHead((4, 7, 7), num_fc, fc_dim, dropout))
    assert refused == ("FastRCNNFCHead: " + "; ".join(messages) if messages else None)
    keyed = [
        f"MODEL.ROI_BOX_HEAD.{m.split(' ', 1)[0].upper()} {m.split(' ', 1)[1]}" for m in messages
    ]
    cfg = config(
        {
            "MODEL.ROI_BOX_HEAD.NUM_FC": num_fc,
            "MODEL.ROI_BOX_HEAD.FC_DIM": fc_dim,
            "MODEL.ROI_BOX_HEAD.DROPOUT": dropout,
        }
    )
    assert config_problems(cfg) == keyed
