"""Datasets declared in a config (``DATASETS.REGISTER``) and the classes a model takes from its
training data: what :func:`detkit.config.load_config` applies to every config it loads, so
that every tool knows a user's datasets and class names without a line of Python."""

from __future__ import annotations

import difflib
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..config import ConfigError
from .catalog import DatasetCatalog
from .classes import dataset_class_names
from .datasets.coco import register_coco_instances
from .datasets.pascal_voc import register_pascal_voc

# The fields of each format's entry: required, then optional.
FORMATS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "coco": (("NAME", "FORMAT", "JSON_FILE", "IMAGE_ROOT"), ()),
    "pascal_voc": (("NAME", "FORMAT", "DIRNAME", "SPLIT"), ("YEAR", "CLASS_NAMES")),
}
_REGISTERED: dict[str, dict[str, Any]] = {}  # name -> the entry that registered it


def register_config_datasets(cfg: DictConfig, source: str = "DATASETS.REGISTER") -> list[str]:
    """Registers every entry of ``DATASETS.REGISTER`` (checked: its format and fields, a name
    not taken by another dataset); registering the same entry again does nothing. Returns the
    names."""
    names = []
    for index, raw in enumerate(OmegaConf.to_container(cfg.DATASETS.REGISTER, resolve=True)):
        where = f"{source}[{index}]"
        entry = _checked_entry(raw, where)
        name = entry["NAME"]
        if _REGISTERED.get(name) == entry:
            names.append(name)
            continue
        if name in DatasetCatalog:
            raise ConfigError(
                f"{where}: a dataset named {name!r} is already registered; choose another NAME"
            )
        _register(entry)
        _REGISTERED[name] = entry
        names.append(name)
    return names


def _checked_entry(raw: dict, where: str) -> dict[str, Any]:
    entry = {str(k).upper(): v for k, v in raw.items()}
    kind = entry.get("FORMAT")
    if kind not in FORMATS:
        raise ConfigError(f"{where}: FORMAT must be one of {sorted(FORMATS)}, got {kind!r}")
    required, optional = FORMATS[kind]
    missing = [f for f in required if entry.get(f) in (None, "")]
    unknown = [f for f in entry if f not in required + optional]
    problems = [f"needs {', '.join(missing)}"] if missing else []
    for field in unknown:
        close = difflib.get_close_matches(field, required + optional, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        problems.append(f"has no field {field}{hint}")
    if problems:
        fields = ", ".join(required + optional)
        raise ConfigError(f"{where} ({kind}): {'; '.join(problems)}; its fields: {fields}")
    return entry


def _register(entry: dict[str, Any]) -> None:
    if entry["FORMAT"] == "coco":
        register_coco_instances(entry["NAME"], {}, entry["JSON_FILE"], entry["IMAGE_ROOT"])
    else:
        register_pascal_voc(
            entry["NAME"],
            entry["DIRNAME"],
            entry["SPLIT"],
            int(entry.get("YEAR") or 2007),
            entry.get("CLASS_NAMES") or None,
        )


def fill_classes(cfg: DictConfig) -> None:
    """``MODEL.ROI_HEADS.CLASS_NAMES`` from the first training dataset when empty (and its
    classes can be read without loading it), then ``NUM_CLASSES`` from them when 0."""
    heads = cfg.MODEL.ROI_HEADS
    train = list(cfg.DATASETS.TRAIN)
    if not heads.CLASS_NAMES and train and train[0] in DatasetCatalog:
        names = dataset_class_names(train[0])
        if names is not None:
            heads.CLASS_NAMES = names
    if heads.NUM_CLASSES == 0 and heads.CLASS_NAMES:
        heads.NUM_CLASSES = len(heads.CLASS_NAMES)
