"""Checks of a whole config before any work starts: :func:`check_config` reports every problem
at once, one line each naming the key.

The checks here know keys and values only: sizes, counts and periods out of range, the batch
split, the pixel normalisation, the weights file, the device and the classes. A rule about a
part (a matcher's bands, a sampler's sizes, a registered name, a dataset) lives with the code
that builds the part, and its package adds the check through :func:`register_config_check`:
``detkit/data/config_checks.py``, ``detkit/modeling/config_checks.py``,
``detkit/evaluation/config_checks.py``, ``detkit/solver/config_checks.py``. ``detkit``'s own
``__init__`` imports those packages, so ``from detkit.config import check_config`` runs them
all; this package imports none of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..utils.device import device_problem
from ..utils.registry import Registry
from .errors import ConfigError

ConfigCheck = Callable[[DictConfig], list[str]]
_CHECKS: list[ConfigCheck] = []


def register_config_check(check: ConfigCheck) -> ConfigCheck:
    """Adds ``check(cfg) -> problems`` (one message per problem, naming the key; empty when
    fine) to what :func:`check_config` runs: how a package or a project checks its own keys
    and settings before any work starts. Usable as a decorator; a check registered twice runs
    once."""
    if check not in _CHECKS:
        _CHECKS.append(check)
    return check


def check_config(cfg: DictConfig, world_size: int = 1) -> None:
    """Raises :class:`ConfigError` listing every problem :func:`config_problems` finds, one
    per line; returns when there is none."""
    problems = config_problems(cfg, world_size)
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(f"{len(problems)} problems:\n" + "\n".join(f"  {p}" for p in problems))


def config_problems(cfg: DictConfig, world_size: int = 1) -> list[str]:
    """Every problem of ``cfg`` for a run of ``world_size`` processes, one message each naming
    the key: sizes, counts and periods out of range, the batch split, the pixel normalisation,
    the weights file, the device, the classes, and what every check registered with
    :func:`register_config_check` finds (detkit's packages': the lr schedule, the matcher's
    bands, the sampler's sizes, every key that names a registry entry or a dataset, …; and the
    projects')."""
    problems = [
        *_range_problems(cfg),
        *_batch_problems(cfg, world_size),
        *_pixel_problems(cfg),
        *_weights_problems(cfg),
        *_device_problems(cfg),
        *_class_problems(cfg),
    ]
    for check in _CHECKS:
        problems += check(cfg)
    return problems


def unknown_name_problems(key: str, names: Iterable[str], registry: Registry) -> list[str]:
    """One problem per name of ``names`` (the value of ``key``) that ``registry`` does not
    hold, saying what it holds and the closest name."""
    return [
        f"{key}: {registry.unknown_name_message(name)}" for name in names if name not in registry
    ]


# Keys that must be positive (a zero or negative value has no meaning, or would divide by
# zero or loop forever), and keys where 0 means "off" or "none", as their docs say.
POSITIVE_KEYS = (
    "SOLVER.IMS_PER_BATCH",
    "SOLVER.BASE_LR",
    "SOLVER.CHECKPOINT_PERIOD",
    "SOLVER.LOG_PERIOD",
    "INPUT.MIN_SIZE_TEST",
    "INPUT.MAX_SIZE_TEST",
    "TEST.DETECTIONS_PER_IMAGE",
    "DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TRAIN",
    "DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST",
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION",
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
