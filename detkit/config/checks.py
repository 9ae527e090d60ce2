"""Checks across config keys: settings that are each valid but do not fit together, and names
that no registry knows. :func:`check_config` runs them all before any work starts and reports
every problem at once."""

from __future__ import annotations

from collections.abc import Callable

from omegaconf import DictConfig

from .loading import ConfigError

ConfigCheck = Callable[[DictConfig], list[str]]
_PROJECT_CHECKS: list[ConfigCheck] = []


def register_config_check(check: ConfigCheck) -> ConfigCheck:
    """Adds ``check(cfg) -> problems`` (one message per problem, naming the key; empty when
    fine) to what :func:`check_config` runs: how a project checks its own keys and settings
    before any work starts. Usable as a decorator; a check registered twice runs once."""
    if check not in _PROJECT_CHECKS:
        _PROJECT_CHECKS.append(check)
    return check


def check_config(cfg: DictConfig, world_size: int = 1) -> None:
    """Raises :class:`ConfigError` listing every problem of ``cfg`` for a run of
    ``world_size`` processes: the lr schedule, the batch split, the matcher's bands and the
    sampler's sizes, every key that names a registry entry (components, evaluators,
    transforms), and the checks projects added with :func:`register_config_check`."""
    problems = [
        *_schedule_problems(cfg),
        *_batch_problems(cfg, world_size),
        *_matcher_problems(cfg),
        *_sampling_problems(cfg),
        *_box_head_problems(cfg),
        *_test_pyramid_problems(cfg),
        *_registry_name_problems(cfg),
    ]
    for check in _PROJECT_CHECKS:
        problems += check(cfg)
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(f"{len(problems)} problems:\n" + "\n".join(f"  {p}" for p in problems))


def _schedule_problems(cfg: DictConfig) -> list[str]:
    from ..solver import warmup_multistep_schedule

    solver = cfg.SOLVER
    try:
        warmup_multistep_schedule(
            solver.MAX_ITER, solver.STEPS, solver.GAMMA, solver.WARMUP_ITERS, solver.WARMUP_FACTOR
        )
    except ValueError as error:
        return [str(error)]
    return []


def _batch_problems(cfg: DictConfig, world_size: int) -> list[str]:
    if cfg.SOLVER.IMS_PER_BATCH % world_size:
        return [
            f"SOLVER.IMS_PER_BATCH={cfg.SOLVER.IMS_PER_BATCH} images do not divide among "
            f"{world_size} processes"
        ]
    return []


def _matcher_problems(cfg: DictConfig) -> list[str]:
    heads = cfg.MODEL.ROI_HEADS
    thresholds, labels = list(heads.IOU_THRESHOLDS), list(heads.IOU_LABELS)
    problems = []
    if len(labels) != len(thresholds) + 1:
        problems.append(
            f"MODEL.ROI_HEADS.IOU_THRESHOLDS {thresholds} make {len(thresholds) + 1} IoU bands "
            f"but MODEL.ROI_HEADS.IOU_LABELS {labels} name {len(labels)}; give one label per "
            "band (e.g. IOU_THRESHOLDS: [0.1, 0.5] with IOU_LABELS: [-1, 0, 1])"
        )
    if thresholds != sorted(thresholds) or not all(0.0 <= t <= 1.0 for t in thresholds):
        problems.append(f"MODEL.ROI_HEADS.IOU_THRESHOLDS must rise within [0, 1], got {thresholds}")
    if not set(labels) <= {-1, 0, 1}:
        problems.append(
            f"MODEL.ROI_HEADS.IOU_LABELS must be -1 (ignored), 0 (background) or 1 "
            f"(foreground), got {labels}"
        )
    return problems


def _sampling_problems(cfg: DictConfig) -> list[str]:
    heads = cfg.MODEL.ROI_HEADS
    problems = []
    if heads.BATCH_SIZE_PER_IMAGE <= 0:
        problems.append(
            "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE must be positive, got "
            f"{heads.BATCH_SIZE_PER_IMAGE}"
        )
    if not 0.0 <= heads.POSITIVE_FRACTION <= 1.0:
        problems.append(
            f"MODEL.ROI_HEADS.POSITIVE_FRACTION must be in [0, 1], got {heads.POSITIVE_FRACTION}"
        )
    return problems


def _test_pyramid_problems(cfg: DictConfig) -> list[str]:
    sizes = list(cfg.TEST.MIN_SIZES)
    if any(size <= 0 for size in sizes):
        return [f"TEST.MIN_SIZES must hold positive shortest-edge sizes, got {sizes}"]
    return []


def _box_head_problems(cfg: DictConfig) -> list[str]:
    box = cfg.MODEL.ROI_BOX_HEAD
    ranks = list(box.SVD_RANKS)
    if len(ranks) > box.NUM_FC or any(rank < 0 for rank in ranks):
        return [
            f"MODEL.ROI_BOX_HEAD.SVD_RANKS {ranks}: at most one rank per fully connected layer "
            f"(NUM_FC={box.NUM_FC}), each 0 (whole) or positive"
        ]
    return []


def _registry_name_problems(cfg: DictConfig) -> list[str]:
    from ..data import PROPOSAL_LOADER_REGISTRY
    from ..data.transforms import TRANSFORM_REGISTRY
    from ..evaluation import EVALUATOR_REGISTRY
    from ..modeling import (
        BACKBONE_REGISTRY,
        META_ARCH_REGISTRY,
        ROI_BOX_HEAD_REGISTRY,
        ROI_HEADS_REGISTRY,
        ROI_POOLER_REGISTRY,
        SAMPLER_REGISTRY,
    )

    model = cfg.MODEL
    named = [
        ("MODEL.META_ARCHITECTURE", [model.META_ARCHITECTURE], META_ARCH_REGISTRY),
        ("MODEL.BACKBONE.NAME", [model.BACKBONE.NAME], BACKBONE_REGISTRY),
        ("MODEL.ROI_HEADS.NAME", [model.ROI_HEADS.NAME], ROI_HEADS_REGISTRY),
        ("MODEL.ROI_HEADS.SAMPLER", [model.ROI_HEADS.SAMPLER], SAMPLER_REGISTRY),
        ("MODEL.ROI_BOX_HEAD.NAME", [model.ROI_BOX_HEAD.NAME], ROI_BOX_HEAD_REGISTRY),
        ("MODEL.ROI_BOX_HEAD.POOLER_TYPE", [model.ROI_BOX_HEAD.POOLER_TYPE], ROI_POOLER_REGISTRY),
        ("INPUT.TRANSFORMS_TRAIN", list(cfg.INPUT.TRANSFORMS_TRAIN), TRANSFORM_REGISTRY),
        ("INPUT.TRANSFORMS_TEST", list(cfg.INPUT.TRANSFORMS_TEST), TRANSFORM_REGISTRY),
        ("TEST.EVALUATORS", list(cfg.TEST.EVALUATORS), EVALUATOR_REGISTRY),
    ]
    if cfg.DATASETS.PROPOSAL_LOADER != "auto":
        named.append(
            ("DATASETS.PROPOSAL_LOADER", [cfg.DATASETS.PROPOSAL_LOADER], PROPOSAL_LOADER_REGISTRY)
        )
    return [
        f"{key}: {registry.unknown_name_message(name)}"
        for key, names, registry in named
        for name in names
        if name not in registry
    ]
