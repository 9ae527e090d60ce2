"""The data package's up-front checks, run by :func:`detkit.config.check_config` (registered
when :mod:`detkit.data` is imported): every dataset named is registered, with one proposal file
per dataset when files are given; the transforms and the proposal loader named are registered;
the training sizes are ones :class:`~detkit.data.transforms.ResizeShortestEdge` takes (its own
rule, :func:`~detkit.data.transforms.resize_problems`, given the config's keys)."""

from __future__ import annotations

import difflib

from omegaconf import DictConfig, OmegaConf

from ..config import register_config_check
from ..config.checks import unknown_name_problems
from .catalog import DatasetCatalog
from .proposals import PROPOSAL_LOADER_REGISTRY
from .transforms import TRANSFORM_REGISTRY, resize_problems


@register_config_check
def _dataset_problems(cfg: DictConfig) -> list[str]:
    """Every dataset named must be registered (checked now, not after training), with one
    proposal file per dataset when files are given."""
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


@register_config_check
def _transform_problems(cfg: DictConfig) -> list[str]:
    """The transforms listed are registered, and the training sizes are ones
    ``ResizeShortestEdge`` takes. The test sizes are range-checked with the other keys:
    the predictor and the tools read them too."""
    inputs = cfg.INPUT
    return [
        *unknown_name_problems(
            "INPUT.TRANSFORMS_TRAIN", inputs.TRANSFORMS_TRAIN, TRANSFORM_REGISTRY
        ),
        *unknown_name_problems("INPUT.TRANSFORMS_TEST", inputs.TRANSFORMS_TEST, TRANSFORM_REGISTRY),
        *resize_problems(
            inputs.MIN_SIZE_TRAIN,
            inputs.MAX_SIZE_TRAIN,
            names=("INPUT.MIN_SIZE_TRAIN", "INPUT.MAX_SIZE_TRAIN"),
        ),
    ]


@register_config_check
def _proposal_loader_problems(cfg: DictConfig) -> list[str]:
    loader = cfg.DATASETS.PROPOSAL_LOADER
    if loader == "auto":
        return []
    return unknown_name_problems("DATASETS.PROPOSAL_LOADER", [loader], PROPOSAL_LOADER_REGISTRY)
