"""The entries of ``DATASETS.REGISTER``: the datasets a config declares, each a mapping of
fields that :func:`detkit.config.load_config` checks as it reads the config. Registering them
is the set-up step's work (:func:`detkit.data.setup_datasets`), not loading's.

An entry's field names are read in any case and so is its ``FORMAT``; each field is checked for
its type, and two entries may not share a ``NAME``."""

from __future__ import annotations

import difflib
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError

# The fields of each format's entry: required, then optional.
FORMATS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "coco": (("NAME", "FORMAT", "JSON_FILE", "IMAGE_ROOT"), ()),
    "pascal_voc": (("NAME", "FORMAT", "DIRNAME", "SPLIT"), ("YEAR", "CLASS_NAMES")),
}
# The fields that name a file or a folder (True) to read.
PATH_FIELDS = {"JSON_FILE": False, "IMAGE_ROOT": True, "DIRNAME": True}


def config_dataset_entries(cfg: DictConfig, source: str = "DATASETS.REGISTER") -> list[dict]:
    """The checked entries of ``DATASETS.REGISTER``: field names in capitals, ``FORMAT`` in
    lower case, ``YEAR`` an int; raises :class:`ConfigError` naming the entry (as
    ``{source}[index]``) and the field."""
    raw_entries = OmegaConf.to_container(cfg.DATASETS.REGISTER, resolve=False)
    entries = [_checked_entry(raw, f"{source}[{index}]") for index, raw in enumerate(raw_entries)]
    for index, entry in enumerate(entries):
        if entry["NAME"] in [other["NAME"] for other in entries[:index]]:
            raise ConfigError(
                f"{source}[{index}]: a dataset named {entry['NAME']!r} is declared by an earlier "
                "entry too; choose another NAME"
            )
    return entries


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
