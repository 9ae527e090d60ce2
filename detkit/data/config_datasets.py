"""The set-up step of a loaded config's data: the datasets it declares (``DATASETS.REGISTER``)
registered, and the classes the model takes from its training data filled in, so that every
tool knows a user's datasets and class names without a line of Python.

:func:`detkit.config.load_config` only reads the config (and checks the entries' fields,
:mod:`detkit.config.dataset_entries`); :func:`setup_datasets` is the step after it that every
tool runs (through :func:`detkit.engine.tool_setup.setup_config`), and that
:class:`~detkit.engine.DefaultTrainer` runs itself for a config set up in Python. Relative
paths are read from the working directory (:mod:`detkit.config.paths`). The files of the
datasets a run names (``DATASETS.TRAIN`` and ``DATASETS.TEST``) are checked by
:func:`detkit.config.check_config`, before any work."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ..config import ConfigError, register_config_check
from ..config.dataset_entries import PATH_FIELDS, config_dataset_entries
from ..config.paths import path_problem
from .catalog import DatasetCatalog, MetadataCatalog
from .classes import dataset_class_names
from .datasets.coco import register_coco_instances
from .datasets.pascal_voc import register_pascal_voc

_REGISTERED: dict[str, dict[str, Any]] = {}  # name -> the entry that registered it


def setup_datasets(cfg: DictConfig, config_file: str | Path | None = None) -> DictConfig:
    """Sets up the data of ``cfg`` (loaded from ``config_file``, which errors name) and returns
    it: registers ``DATASETS.REGISTER`` (:func:`register_config_datasets`) and fills the class
    names (:func:`fill_classes`). Running it again does nothing new. When the class names
    cannot be filled, the datasets this call registered are unregistered again, so that a
    corrected config can be set up in the same process."""
    source = f"{config_file}: DATASETS.REGISTER" if config_file else "DATASETS.REGISTER"
    before = set(DatasetCatalog.list())
    names = register_config_datasets(cfg, source)
    try:
        fill_classes(cfg, source)
    except ConfigError:
        unregister_config_datasets(name for name in names if name not in before)
        raise
    return cfg


def register_config_datasets(cfg: DictConfig, source: str = "DATASETS.REGISTER") -> list[str]:
    """Registers every entry of ``DATASETS.REGISTER``, all or none: each is checked first (its
    format, fields and their types, a name no other dataset has); registering the same entry
    again does nothing. Returns the names."""
    entries = config_dataset_entries(cfg, source)
    for index, entry in enumerate(entries):
        name = entry["NAME"]
        if name in DatasetCatalog and _REGISTERED.get(name) != entry:
            raise ConfigError(
                f"{source}[{index}]: a dataset named {name!r} is already registered; choose "
                "another NAME"
            )
    for entry in entries:
        if _REGISTERED.get(entry["NAME"]) != entry or entry["NAME"] not in DatasetCatalog:
            _register(entry)
            _REGISTERED[entry["NAME"]] = entry
    return [entry["NAME"] for entry in entries]


def unregister_config_datasets(names: Iterable[str]) -> None:
    """Removes the datasets ``names`` that a config registered from the catalogs."""
    for name in names:
        if _REGISTERED.pop(name, None) is not None and name in DatasetCatalog:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def _register(entry: dict[str, Any]) -> None:
    if entry["FORMAT"] == "coco":
        register_coco_instances(entry["NAME"], {}, entry["JSON_FILE"], entry["IMAGE_ROOT"])
    else:
        register_pascal_voc(
            entry["NAME"],
            entry["DIRNAME"],
            entry["SPLIT"],
            entry.get("YEAR") or 2007,
            entry.get("CLASS_NAMES") or None,
        )


def fill_classes(cfg: DictConfig, source: str = "DATASETS.REGISTER") -> None:
    """``MODEL.ROI_HEADS.CLASS_NAMES`` from the first training dataset when empty (and its
    classes can be read without loading it), then ``NUM_CLASSES`` from them when 0.

    When ``NUM_CLASSES`` is 0 the names are needed: a COCO file that cannot be read is refused,
    naming the ``DATASETS.REGISTER`` entry (of ``source``) that declares it."""
    heads = cfg.MODEL.ROI_HEADS
    train = list(cfg.DATASETS.TRAIN)
    if not heads.CLASS_NAMES and train and train[0] in DatasetCatalog:
        try:
            names = dataset_class_names(train[0])
        except ConfigError as error:
            if heads.NUM_CLASSES != 0:
                return  # names are a nicety here; train_net's checks name the file
            raise ConfigError(
                f"{_declaration(cfg, train[0], source)} {error}; its categories are the "
                "model's classes (MODEL.ROI_HEADS.NUM_CLASSES is 0)"
            ) from None
        if names is not None:
            heads.CLASS_NAMES = names
    if heads.NUM_CLASSES == 0 and heads.CLASS_NAMES:
        heads.NUM_CLASSES = len(heads.CLASS_NAMES)


def _declaration(cfg: DictConfig, name: str, source: str) -> str:
    """Where the COCO file of the dataset ``name`` is declared: the ``JSON_FILE`` of its
    ``DATASETS.REGISTER`` entry, or the ``json_file`` it was registered with in Python."""
    for index, entry in enumerate(config_dataset_entries(cfg, source)):
        if entry["NAME"] == name:
            return f"{source}[{index}] ({name}): JSON_FILE"
    return f"DATASETS.TRAIN[0]: the json_file of dataset {name!r}"


@register_config_check
def _named_dataset_file_problems(cfg: DictConfig) -> list[str]:
    """The files and folders of the ``DATASETS.REGISTER`` entries that ``DATASETS.TRAIN`` or
    ``DATASETS.TEST`` name, which a run will read: each must exist and be readable."""
    try:
        entries = config_dataset_entries(cfg)
    except ConfigError as error:
        return [str(error)]
    named = set(cfg.DATASETS.TRAIN) | set(cfg.DATASETS.TEST)
    return [
        f"DATASETS.REGISTER[{index}] ({entry['NAME']}): {field} {entry[field]}: {problem}"
        for index, entry in enumerate(entries)
        if entry["NAME"] in named
        for field, folder in PATH_FIELDS.items()
        if field in entry and (problem := path_problem(entry[field], folder)) is not None
    ]
