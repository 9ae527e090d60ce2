"""Checks across config keys: settings that are each valid but do not fit together, and names
that no registry knows. :func:`check_config` runs them all before any work starts and reports
every problem at once."""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError

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
    ``world_size`` processes: sizes, counts and periods out of range, the lr schedule, the
    batch split, the matcher's bands and the sampler's sizes, every key that names a registry
    entry (components, evaluators, transforms) or a registered dataset, the weights file, and
    the checks projects added with :func:`register_config_check`."""
    problems = [
        *_range_problems(cfg),
        *_schedule_problems(cfg),
        *_batch_problems(cfg, world_size),
        *_matcher_problems(cfg),
        *_sampling_problems(cfg),
        *_box_head_problems(cfg),
        *_pixel_problems(cfg),
        *_test_pyramid_problems(cfg),
        *_registry_name_problems(cfg),
        *_dataset_problems(cfg),
        *_weights_problems(cfg),
        *_device_problems(cfg),
        *_class_problems(cfg),
    ]
    for check in _PROJECT_CHECKS:
        problems += check(cfg)
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(f"{len(problems)} problems:\n" + "\n".join(f"  {p}" for p in problems))


def _schedule_problems(cfg: DictConfig) -> list[str]:
    from ..solver import fitted_schedule, warmup_multistep_schedule

    solver, fitted = cfg.SOLVER, fitted_schedule(cfg)
    try:
        warmup_multistep_schedule(
            solver.MAX_ITER, fitted.steps, solver.GAMMA, fitted.warmup_iters, solver.WARMUP_FACTOR
        )
    except ValueError as error:
        return [str(error)]
    return []


# Keys that must be positive (a zero or negative value has no meaning, or would divide by
# zero or loop forever), and keys where 0 means "off" or "none", as their docs say.
POSITIVE_KEYS = (
    "SOLVER.IMS_PER_BATCH",
    "SOLVER.BASE_LR",
    "SOLVER.CHECKPOINT_PERIOD",
    "SOLVER.LOG_PERIOD",
    "INPUT.MAX_SIZE_TRAIN",
    "INPUT.MIN_SIZE_TEST",
    "INPUT.MAX_SIZE_TEST",
    "TEST.DETECTIONS_PER_IMAGE",
    "DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TRAIN",
    "DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST",
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION",
    "MODEL.ROI_BOX_HEAD.NUM_FC",
    "MODEL.ROI_BOX_HEAD.FC_DIM",
)
NON_NEGATIVE_KEYS = (
    "TEST.EVAL_PERIOD",
    "TEST.VAL_LOSS_PERIOD",
    "DATALOADER.NUM_WORKERS",
    "SOLVER.WEIGHT_DECAY",
    "SOLVER.MOMENTUM",
    "SOLVER.MAX_NONFINITE_STEPS",
    "DATALOADER.MAX_BAD_IMAGES",
    "INPUT.MAX_IMAGE_PIXELS",
)
# Keys that take one of a few words.
CHOICE_KEYS = {"DATALOADER.BAD_IMAGE_POLICY": ("stop", "skip")}


def _range_problems(cfg: DictConfig) -> list[str]:
    problems = [
        f"{key} must be positive, got {value}"
        for key in POSITIVE_KEYS
        if (value := OmegaConf.select(cfg, key)) is not None and value <= 0
    ]
    problems += [
        f"{key} must be 0 or more, got {value}"
        for key in NON_NEGATIVE_KEYS
        if (value := OmegaConf.select(cfg, key)) is not None and value < 0
    ]
    problems += [
        f"{key} must be one of {', '.join(choices)}, got {value!r}"
        for key, choices in CHOICE_KEYS.items()
        if (value := OmegaConf.select(cfg, key)) is not None and value not in choices
    ]
    sizes = list(cfg.INPUT.MIN_SIZE_TRAIN)
    if not sizes or any(size <= 0 for size in sizes):
        problems.append(f"INPUT.MIN_SIZE_TRAIN must list positive shortest-edge sizes, got {sizes}")
    return problems


def _batch_problems(cfg: DictConfig, world_size: int) -> list[str]:
    if world_size < 1:
        return [
            f"the run needs at least one process (--num-gpus x --num-machines), got {world_size}"
        ]
    if cfg.SOLVER.IMS_PER_BATCH > 0 and cfg.SOLVER.IMS_PER_BATCH % world_size:
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


def _pixel_problems(cfg: DictConfig) -> list[str]:
    """The per-channel normalisation: one mean and one positive, finite divisor per channel (a
    0 makes every pixel of that channel infinite, and the loss non-finite, at the first step)."""
    means, stds = list(cfg.MODEL.PIXEL_MEAN), list(cfg.MODEL.PIXEL_STD)
    problems = []
    if len(means) != len(stds):
        problems.append(
            f"MODEL.PIXEL_MEAN has {len(means)} entries but MODEL.PIXEL_STD has {len(stds)}; "
            "give one of each per channel"
        )
    if not all(math.isfinite(std) and std > 0 for std in stds):
        problems.append(
            "MODEL.PIXEL_STD must hold positive numbers (each channel is divided by its "
            f"entry), got {stds}"
        )
    if not all(math.isfinite(mean) for mean in means):
        problems.append(f"MODEL.PIXEL_MEAN must hold finite numbers, got {means}")
    return problems


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


def _dataset_problems(cfg: DictConfig) -> list[str]:
    """Every dataset named must be registered (checked now, not after training), with one
    proposal file per dataset when files are given."""
    from ..data import DatasetCatalog

    registered = DatasetCatalog.list()
    problems = []
    for key in ("DATASETS.TRAIN", "DATASETS.TEST"):
        for name in OmegaConf.select(cfg, key):
            if name not in DatasetCatalog:
                problems.append(f"{key}: {_unknown_dataset(name, registered)}")
    for files_key, names_key in (
        ("DATASETS.PROPOSAL_FILES_TRAIN", "DATASETS.TRAIN"),
        ("DATASETS.PROPOSAL_FILES_TEST", "DATASETS.TEST"),
    ):
        files, names = OmegaConf.select(cfg, files_key), OmegaConf.select(cfg, names_key)
        if files and len(files) != len(names):
            problems.append(
                f"{files_key} gives {len(files)} files for the {len(names)} datasets of "
                f"{names_key} {list(names)}; give one per dataset, in the same order"
            )
    return problems


def _unknown_dataset(name: str, registered: list[str]) -> str:
    message = f"no dataset named {name!r} is registered"
    match = difflib.get_close_matches(name, registered, n=1, cutoff=0.6)
    if match:
        return f"{message}; did you mean {match[0]!r}?"
    return f"{message} (registered: {', '.join(sorted(registered)) or 'none'})"


def _weights_problems(cfg: DictConfig) -> list[str]:
    """A local ``MODEL.WEIGHTS`` must be a non-empty file (paths with a ``scheme://`` go to
    their iopath handler when loaded)."""
    weights = cfg.MODEL.WEIGHTS
    if not weights or "://" in weights:
        return []
    path = Path(weights)
    if path.is_dir():
        return [f"MODEL.WEIGHTS: {weights} is a directory; give a checkpoint file in it"]
    if not path.is_file():
        return [f"MODEL.WEIGHTS: no such file {weights}"]
    if path.stat().st_size == 0:
        return [f"MODEL.WEIGHTS: {weights} is empty (0 bytes), not a checkpoint"]
    return []


def _device_problems(cfg: DictConfig) -> list[str]:
    from ..utils.device import device_problem

    problem = device_problem(cfg.MODEL.DEVICE)
    return [problem] if problem else []


def _class_problems(cfg: DictConfig) -> list[str]:
    heads = cfg.MODEL.ROI_HEADS
    names, count = list(heads.CLASS_NAMES), heads.NUM_CLASSES
    if count < 0:
        return [f"MODEL.ROI_HEADS.NUM_CLASSES must be positive, got {count}"]
    if count == 0:
        return [
            "MODEL.ROI_HEADS.NUM_CLASSES is 0 (take it from the data) but no class names are "
            "known: set MODEL.ROI_HEADS.CLASS_NAMES or NUM_CLASSES, or train on a registered "
            "dataset whose classes can be read (DATASETS.TRAIN)"
        ]
    if names and len(names) != count:
        return [
            f"MODEL.ROI_HEADS.CLASS_NAMES names {len(names)} classes {names} but NUM_CLASSES "
            f"is {count}"
        ]
    if len(set(names)) != len(names):
        return [f"MODEL.ROI_HEADS.CLASS_NAMES has a name twice: {names}"]
    return []
