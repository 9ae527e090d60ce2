"""Checks across keys (detkit/config/checks.py) and the deprecated keys still read
(detkit/config/compat.py)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from detkit.config import (
    ConfigError,
    check_config,
    get_default_config,
    load_config,
    register_config_check,
)
from detkit.modeling import Matcher

REPO = Path(__file__).resolve().parents[2]


def test_every_problem_is_reported_at_once_with_its_key() -> None:
    cfg = get_default_config()
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 80
    cfg.MODEL.BACKBONE.NAME = "VGG61"
    cfg.MODEL.ROI_HEADS.SAMPLER = "OHEMSamplr"
    cfg.INPUT.TRANSFORMS_TRAIN = ["ResizeShortestEdge", "RandomFlop"]
    cfg.TEST.EVALUATORS = ["coco", "lvis"]
    cfg.SOLVER.IMS_PER_BATCH = 3
    with pytest.raises(ConfigError) as error:
        check_config(cfg, world_size=2)
    first, *problems = str(error.value).split("\n  ")
    assert first == "5 problems:"
    assert any(
        p.startswith("SOLVER.IMS_PER_BATCH=3 images do not divide among 2") for p in problems
    )
    assert any(
        p.startswith("MODEL.BACKBONE.NAME: no 'VGG61' in the BACKBONE registry")
        and "did you mean 'VGG16'?" in p
        for p in problems
    )
    assert any(p.startswith("MODEL.ROI_HEADS.SAMPLER: no 'OHEMSamplr'") for p in problems)
    assert any(
        p.startswith("INPUT.TRANSFORMS_TRAIN: no 'RandomFlop'") and "'RandomFlip'" in p
        for p in problems
    )
    assert any(
        p.startswith("TEST.EVALUATORS: no 'lvis' in the EVALUATOR registry") for p in problems
    )


def test_the_shipped_configs_pass() -> None:
    for config in sorted((REPO / "configs").rglob("*.yaml")):
        # the pretrained weights they name are put in place by the user (docs/datasets.md)
        cfg = load_config(config, ["MODEL.WEIGHTS="])
        if config.name.startswith("Base-"):  # a base names no dataset, so no classes
            cfg.MODEL.ROI_HEADS.NUM_CLASSES = 1
        check_config(cfg, world_size=1)


@pytest.mark.parametrize(
    "thresholds, labels, message",
    [
        (
            [0.5],
            [-1, 0, 1],
            r"\[0.5\] make 2 IoU bands but MODEL.ROI_HEADS.IOU_LABELS \[-1, 0, 1\]",
        ),
        ([0.5, 0.1], [-1, 0, 1], r"IOU_THRESHOLDS must rise within \[0, 1\], got \[0.5, 0.1\]"),
        ([0.1, 1.5], [-1, 0, 1], r"must rise within \[0, 1\]"),
        ([0.5], [0, 2], r"IOU_LABELS must be -1 \(ignored\), 0 \(background\) or 1"),
    ],
)
def test_matcher_bands_that_do_not_fit_are_refused(thresholds, labels, message) -> None:
    cfg = get_default_config()
    cfg.MODEL.ROI_HEADS.IOU_THRESHOLDS, cfg.MODEL.ROI_HEADS.IOU_LABELS = thresholds, labels
    with pytest.raises(ConfigError, match=message):
        check_config(cfg)


def test_bg_iou_lo_is_read_as_the_bands_it_meant_with_a_warning(tmp_path, caplog) -> None:
    old = tmp_path / "old.yaml"
    old.write_text("MODEL:\n  ROI_HEADS:\n    IOU_THRESHOLDS: [0.6]\n    BG_IOU_LO: 0.2\n")
    with caplog.at_level(logging.WARNING):
        cfg = load_config(old)
    heads = cfg.MODEL.ROI_HEADS
    assert (list(heads.IOU_THRESHOLDS), list(heads.IOU_LABELS)) == ([0.2, 0.6], [-1, 0, 1])
    assert heads.BG_IOU_LO is None
    assert "MODEL.ROI_HEADS.BG_IOU_LO is deprecated" in caplog.text and str(old) in caplog.text
    # the bands label as the old keys did: ignored below 0.2, background to 0.6, then foreground
    import torch

    matcher = Matcher(heads.IOU_THRESHOLDS, heads.IOU_LABELS)
    _, labels = matcher(torch.tensor([[0.1, 0.2, 0.59, 0.6, 0.9]]))
    assert labels.tolist() == [-1, 0, 0, 1, 1]
    # an override works the same way
    cfg = load_config(REPO / "configs" / "Base-FastRCNN.yaml", ["MODEL.ROI_HEADS.BG_IOU_LO=0.0"])
    assert list(cfg.MODEL.ROI_HEADS.IOU_THRESHOLDS) == [0.0, 0.5]


def test_a_project_check_runs_with_the_others(monkeypatch) -> None:
    from detkit.config import checks

    monkeypatch.setattr(checks, "_CHECKS", list(checks._CHECKS))  # detkit's own, not the test's

    @register_config_check
    def needs_a_small_batch(cfg):
        if cfg.SOLVER.IMS_PER_BATCH > 4:
            return [f"SOLVER.IMS_PER_BATCH={cfg.SOLVER.IMS_PER_BATCH}: at most 4 for this project"]
        return []

    register_config_check(needs_a_small_batch)  # twice: runs once
    cfg = get_default_config()
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    check_config(cfg)
    cfg.SOLVER.IMS_PER_BATCH = 8
    cfg.MODEL.ROI_HEADS.POSITIVE_FRACTION = 1.5
    with pytest.raises(ConfigError) as error:
        check_config(cfg)
    assert str(error.value).split("\n  ") == [
        "2 problems:",
        "MODEL.ROI_HEADS.POSITIVE_FRACTION must be in [0, 1], got 1.5",
        "SOLVER.IMS_PER_BATCH=8: at most 4 for this project",
    ]


def test_check_config_alone_runs_the_checks_of_every_package() -> None:
    """`from detkit.config import check_config` in a fresh interpreter, nothing else imported:
    the checks the data, modeling, evaluation and solver packages contribute run too
    (detkit/__init__.py imports those packages, and each registers its checks)."""
    program = (
        "from detkit.config import ConfigError, check_config, get_default_config\n"
        "cfg = get_default_config()\n"
        "cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3\n"
        "cfg.INPUT.TRANSFORMS_TRAIN = ['RandomFlop']\n"
        "cfg.MODEL.ROI_HEADS.IOU_THRESHOLDS = [0.1, 0.5]\n"
        "cfg.MODEL.ROI_HEADS.IOU_LABELS = [0, 1]\n"
        "cfg.TEST.EVALUATORS = ['lvis']\n"
        "cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS = 5, [4, 2]\n"
        "cfg.DATASETS.TEST = ['shapes_vall']\n"
        "try:\n"
        "    check_config(cfg)\n"
        "except ConfigError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, cwd=REPO, check=True
    )
    lines = result.stdout.splitlines()
    assert lines[0] == "5 problems:", result.stdout
    for start in (
        "INPUT.TRANSFORMS_TRAIN: no 'RandomFlop'",  # data
        "DATASETS.TEST: no dataset named 'shapes_vall'",  # data
        "MODEL.ROI_HEADS.IOU_THRESHOLDS [0.1, 0.5] make 3 IoU bands",  # modeling
        "TEST.EVALUATORS: no 'lvis'",  # evaluation
        "SOLVER.STEPS",  # solver
    ):
        assert any(line.strip().startswith(start) for line in lines[1:]), (start, result.stdout)


def test_the_voc_configs_hold_the_papers_setting() -> None:
    cfg = load_config(REPO / "configs" / "PascalVOC" / "fast_rcnn_VGG16.yaml")
    assert (cfg.DATASETS.TRAIN, cfg.DATASETS.TEST) == (["voc_2007_trainval"], ["voc_2007_test"])
    assert all(
        f.endswith(".mat")
        for f in [*cfg.DATASETS.PROPOSAL_FILES_TRAIN, *cfg.DATASETS.PROPOSAL_FILES_TEST]
    )
    assert (list(cfg.INPUT.MIN_SIZE_TRAIN), cfg.INPUT.MAX_SIZE_TRAIN) == ([600], 1000)
    assert (cfg.SOLVER.IMS_PER_BATCH, cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE) == (2, 64)
    assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_ITER, list(cfg.SOLVER.STEPS)) == (
        0.001,
        40000,
        [30000],
    )
    assert cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST == 0.3 and cfg.MODEL.BACKBONE.FREEZE_AT == 2
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 20 and list(cfg.TEST.EVALUATORS) == ["pascal_voc"]
    svd = load_config(REPO / "configs" / "PascalVOC" / "fast_rcnn_VGG16_svd.yaml")
    assert list(svd.MODEL.ROI_BOX_HEAD.SVD_RANKS) == [1024, 256]  # the paper's fc6, fc7 ranks
