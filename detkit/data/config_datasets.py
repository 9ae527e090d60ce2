"""Datasets declared in a config (``DATASETS.REGISTER``) and the classes a model takes from its
training data: what :func:`detkit.config.load_config` applies to every config it loads, so
that every tool knows a user's datasets and class names without a line of Python.

An entry's field names are read in any case and so is its ``FORMAT``; each field is checked for
its type as the entry is read. Relative paths are read from the working directory
(:mod:`detkit.config.paths`). The files of the datasets a run names (``DATASETS.TRAIN`` and
``DATASETS.TEST``) are checked by :func:`detkit.config.check_config`, before any work."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..config import ConfigError, register_config_check
from ..config.paths import path_problem
from .catalog import DatasetCatalog, MetadataCatalog
from .classes import dataset_class_names
from .datasets.coco import register_coco_instances
from .datasets.pascal_voc import register_pascal_voc

# The fields of each format's entry: required, then optional.
FORMATS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "coco": (("NAME", "FORMAT", "JSON_FILE", "IMAGE_ROOT"), ()),
    "pascal_voc": (("NAME", "FORMAT", "DIRNAME", "SPLIT"), ("YEAR", "CLASS_NAMES")),
}
# The fields that name a file or a folder (True) to read.
PATH_FIELDS = {"JSON_FILE": False, "IMAGE_ROOT": True, "DIRNAME": True}
_REGISTERED: dict[str, dict[str, Any]] = {}  # name -> the entry that registered it


def apply_config_datasets(cfg: DictConfig, source: str = "DATASETS.REGISTER") -> None:
    """Registers ``DATASETS.REGISTER`` (:func:`register_config_datasets`) and fills the class
    names (:func:`fill_classes`); when they cannot be filled, the datasets this call registered
    are unregistered again, so that a corrected config can be loaded in the same process."""
    before = set(DatasetCatalog.list())
    names = register_config_datasets(cfg, source)
    try:
        fill_classes(cfg, source)
    except ConfigError:
        unregister_config_datasets(name for name in names if name not in before)
        raise


def register_config_datasets(cfg: DictConfig, source: str = "DATASETS.REGISTER") -> list[str]:
    """Registers every entry of ``DATASETS.REGISTER``, all or none: each is checked first (its
    format, fields and their types, a name no other dataset has); registering the same entry
    again does nothing. Returns the names."""
    entries = config_dataset_entries(cfg, source)
    for index, entry in enumerate(entries):
        name = entry["NAME"]
        taken = name in DatasetCatalog and _REGISTERED.get(name) != entry
        if taken or name in [other["NAME"] for other in entries[:index]]:
            raise ConfigError(
                f"{source}[{index}]: a dataset named {name!r} is already registered; choose "
                "another NAME"
            )
    for entry in entries:
        if _REGISTERED.get(entry["NAME"]) != entry:
            _register(entry)
            _REGISTERED[entry["NAME"]] = entry
    return [entry["NAME"] for entry in entries]


def unregister_config_datasets(names: Iterable[str]) -> None:
    """Removes the datasets ``names`` that a config registered from the catalogs."""
    for name in names:
        if _REGISTERED.pop(name, None) is not None:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def config_dataset_entries(cfg: DictConfig, source: str = "DATASETS.REGISTER") -> list[dict]:
    """The checked entries of ``DATASETS.REGISTER``: field names in capitals, ``FORMAT`` in
    lower case, ``YEAR`` an int; raises :class:`ConfigError` naming the entry and field."""
    raw_entries = OmegaConf.to_container(cfg.DATASETS.REGISTER, resolve=False)
    return [_checked_entry(raw, f"{source}[{index}]") for index, raw in enumerate(raw_entries)]


def _checked_entry(raw: dict, where: str) -> dict[str, Any]:
    entry = {str(k).upper(): v for k, v in raw.items()}
    kind = entry.get("FORMAT")
    kind = kind.lower() if isinstance(kind, str) else kind
    if kind not in FORMATS:
        raise ConfigError(f"{where}: FORMAT must be one of {sorted(FORMATS)}, got {kind!r}")
    entry["FORMAT"] = kind
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
    problems = [problem for field in entry if (problem := _type_problem(field, entry[field]))]
    if problems:
        raise ConfigError(f"{where}: {'; '.join(problems)}")
    if entry.get("YEAR") is not None:
        entry["YEAR"] = int(entry["YEAR"])
    return entry


def _type_problem(field: str, value: Any) -> str | None:
    """What is wrong with the type of ``value`` for ``field``, or None."""
    if field == "YEAR":
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            return None
        if isinstance(value, str) and value.isdecimal():
            return None
        return f"YEAR takes a year (an integer such as 2007), got {value!r}"
    if field == "CLASS_NAMES":
        if value is None or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            return None
        example = f", e.g. [{value}]" if isinstance(value, str) else ""
        return f"CLASS_NAMES takes a list of names{example}, got {value!r}"
    if isinstance(value, str):
        return None
    what = "a path" if field in PATH_FIELDS else "text"
    return f"{field} takes {what}, got {value!r} ({type(value).__name__})"


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
