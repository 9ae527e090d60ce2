"""Loading configs: YAML files with ``_BASE_`` inheritance, ``KEY=VALUE`` overrides, validation.

Every key a file or an override sets must exist in the defaults (detkit's, plus what projects
add with :func:`add_config`) and take a value of the declared type (a list key a list of plain
values); anything else raises :class:`ConfigError` naming the key, where it came from and, for
a typo, the closest valid key. YAML is read by :func:`~detkit.config.yaml_reader.read_yaml`,
and ``${oc.env:VAR}`` interpolations are replaced by their values as they are read
(:mod:`detkit.config.interpolation`).

Loading reads no file but the YAML chain and changes nothing outside the config: the datasets a
config declares (``DATASETS.REGISTER``, whose entries it checks) are registered, and the class
names filled, by the set-up step after it, :func:`detkit.data.setup_datasets`.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from .compat import upgrade_deprecated_keys
from .dataset_entries import config_dataset_entries
from .defaults import DetkitConfig
from .errors import ConfigError
from .interpolation import resolve_interpolations
from .overrides import parse_override
from .yaml_reader import read_yaml

BASE_KEY = "_BASE_"


def get_default_config() -> DictConfig:
    """detkit's defaults: a typed config that refuses unknown keys."""
    cfg = OmegaConf.structured(DetkitConfig)
    OmegaConf.set_struct(cfg, True)
    return cfg


def add_config(cfg: DictConfig, extra_defaults: Any) -> DictConfig:
    """Returns ``cfg`` with a project's own keys added.

    ``extra_defaults`` is a dataclass (instance or type) or a nested mapping of new keys and
    their defaults, e.g. ``{"MODEL": {"MY_HEAD": {"DEPTH": 3}}}``. Keys that already exist are
    refused, so a project cannot silently change detkit's defaults.
    """
    if dataclasses.is_dataclass(extra_defaults):
        extra = OmegaConf.structured(extra_defaults)
    else:
        extra = OmegaConf.create(dict(extra_defaults))
    for key in _all_keys(extra):  # a section both have is shared; any other key is new
        existing = OmegaConf.select(cfg, key, default=_ABSENT)
        if existing is _ABSENT:
            continue
        if not (OmegaConf.is_dict(existing) and OmegaConf.is_dict(OmegaConf.select(extra, key))):
            raise ConfigError(f"add_config: {key} is already defined; projects add new keys only")
    merged = copy.deepcopy(cfg)
    _add_sections(merged, extra)
    OmegaConf.set_struct(merged, True)
    return merged


def _add_sections(cfg: DictConfig, extra: DictConfig) -> None:
    """Adds the keys of ``extra`` to ``cfg``, descending into the sections both have.

    ``OmegaConf.masked_copy`` keeps the nodes themselves, so a key declared with a type (a
    dataclass field) is still checked against that type in ``cfg``.
    """
    new_keys = [key for key in extra if key not in cfg]
    for key in extra:
        if key not in new_keys:
            _add_sections(cfg[key], extra[key])
    with open_dict(cfg):
        cfg.merge_with(OmegaConf.masked_copy(extra, new_keys))


def load_config(
    path: str | Path, overrides: Iterable[str] = (), defaults: DictConfig | None = None
) -> DictConfig:
    """Loads ``path`` (following its ``_BASE_`` chain) over the defaults, then the overrides.
    Reads no other file and registers nothing (:func:`detkit.data.setup_datasets` does, after).

    Args:
        path: a YAML config file.
        overrides: ``"KEY=VALUE"`` strings with dotted keys; values are parsed as YAML
            (``SOLVER.STEPS=[3000, 4000]``).
        defaults: the config to start from, e.g. the result of :func:`add_config` when the file
            uses a project's keys; detkit's defaults when omitted.
    """
    cfg = copy.deepcopy(defaults) if defaults is not None else get_default_config()
    OmegaConf.set_struct(cfg, True)
    for file, data in _read_chain(Path(path), []):
        _merge(cfg, data, prefix="", source=str(file))
    for text in overrides:
        key, value = parse_override(text)
        _assign(cfg, key, value, source=f"override {text!r}")
    upgrade_deprecated_keys(cfg, str(path))
    config_dataset_entries(cfg, f"{path}: DATASETS.REGISTER")  # their fields, checked now
    return cfg


def dump_config(cfg: DictConfig) -> str:
    """The resolved config as YAML; :func:`load_config` reads it back unchanged."""
    return OmegaConf.to_yaml(cfg)


_ABSENT = object()


def _all_keys(cfg: DictConfig, prefix: str = "", sections: bool = True) -> list[str]:
    """Dotted names of every key in ``cfg``; sections included unless ``sections=False``."""
    return _dotted_keys(OmegaConf.to_container(cfg, resolve=False), prefix, sections)


def _dotted_keys(tree: dict, prefix: str, sections: bool) -> list[str]:
    keys = []
    for key, value in tree.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            keys += [full] if sections else []
            keys += _dotted_keys(value, f"{full}.", sections)
        else:
            keys.append(full)
    return keys


def _read_chain(file: Path, seen: list[Path]) -> list[tuple[Path, dict]]:
    """The files of a ``_BASE_`` chain with their contents, the farthest base first."""
    resolved = file.resolve()
    if resolved in seen:
        cycle = " -> ".join(str(p) for p in [*seen, resolved])
        raise ConfigError(f"_BASE_ chain loops: {cycle}")
    if not file.is_file():
        raise ConfigError(f"config file not found: {file}")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{file}: not a UTF-8 text file, so not a YAML config") from error
    data = read_yaml(text, str(file)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: a config file must hold a mapping of keys, got {data!r}")
    base = data.pop(BASE_KEY, None)
    if base is None:
        return [(file, data)]
    base_file = file.parent / str(base)
    if not base_file.is_file():
        raise ConfigError(f"{file}: _BASE_ file {base!r} not found (looked for {base_file})")
    return [*_read_chain(base_file, [*seen, resolved]), (file, data)]


def _merge(cfg: DictConfig, data: Mapping, prefix: str, source: str) -> None:
    for name, value in data.items():
        key = f"{prefix}{name}"
        node = OmegaConf.select(cfg, key, default=_ABSENT)
        if node is _ABSENT:
            raise ConfigError(
                _unknown_key_message(cfg, key, source, is_section=isinstance(value, Mapping))
            )
        if isinstance(node, DictConfig):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: {key} is a section; give it a mapping, not {value!r}")
            _merge(cfg, value, prefix=f"{key}.", source=source)
        else:
            _assign(cfg, key, value, source)


def _assign(cfg: DictConfig, key: str, value: Any, source: str) -> None:
    node = OmegaConf.select(cfg, key, default=_ABSENT)
    if node is _ABSENT:
        raise ConfigError(_unknown_key_message(cfg, key, source))
    if isinstance(node, DictConfig) and not isinstance(value, Mapping):
        raise ConfigError(f"{source}: {key} is a section; give it a mapping, not {value!r}")
    value = resolve_interpolations(value, f"{source}: {key}")
    declared = _declared_type(cfg, key)
    if isinstance(value, str) and declared.startswith("a list") and value.strip()[:1] == "(":
        value = _tuple_as_list(value, key, source)  # detectron2's SOLVER.STEPS "(20,)"
    if not isinstance(value, bool) and declared == "a bool":
        # OmegaConf would turn 2 or "maybe" into True/False without a word
        raise ConfigError(f"{source}: {key} takes a bool (true or false), got {value!r}")
    nested = _nested_element(cfg, key, value)
    if nested is not None:  # OmegaConf would keep it in a list of numbers or names
        raise ConfigError(
            f"{source}: {key} takes {declared}, got {value!r}: its element {nested!r} is a "
            f"{'mapping' if isinstance(nested, Mapping) else 'list'} (in YAML, `a: b` inside "
            "[...] is a mapping)"
        )
    try:
        OmegaConf.update(cfg, key, value, merge=True)
    except OmegaConfBaseException as error:
        expected = _declared_type(cfg, key)
        raise ConfigError(
            f"{source}: {key} takes {expected}, got {value!r} ({type(value).__name__})"
        ) from error


def _nested_element(cfg: DictConfig, key: str, value: Any) -> Any:
    """The first list or mapping in ``value`` when ``key`` takes a list of plain values (numbers,
    names, booleans), else None."""
    parent, _, name = key.rpartition(".")
    hint = _without_none(_declared_hint(OmegaConf.select(cfg, parent) if parent else cfg, name))
    element = typing.get_args(hint)[:1] if typing.get_origin(hint) is list else ()
    if element not in [(int,), (float,), (str,), (bool,)] or not isinstance(value, list):
        return None
    return next((item for item in value if isinstance(item, Mapping | list)), None)


def _tuple_as_list(text: str, key: str, source: str) -> list:
    """A Python tuple literal such as ``(20,)`` or ``(3000, 4000)`` as a list."""
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError) as error:
        raise ConfigError(f"{source}: {key} takes a list, got {text!r}") from error
    return list(value) if isinstance(value, tuple | list) else [value]


def _declared_type(cfg: DictConfig, key: str) -> str:
    """What ``key`` takes, in words ("an int", "a list of float")."""
    parent, _, name = key.rpartition(".")
    words = _type_words(_declared_hint(OmegaConf.select(cfg, parent) if parent else cfg, name))
    return f"{'an' if words[0] in 'aeiou' else 'a'} {words}"


def _declared_hint(section: DictConfig, name: str) -> Any:
    """The type the section's dataclass declares for ``name`` or, for a key it does not declare
    (a project's key added to it, an untyped section), the type of the key's value (for a list,
    ``list[T]`` when its elements are all of type T)."""
    section_type = OmegaConf.get_type(section)
    if dataclasses.is_dataclass(section_type):
        with contextlib.suppress(NameError):  # an annotation that does not resolve here
            hints = typing.get_type_hints(section_type)
            if name in hints:
                return hints[name]
    value = section[name]
    if OmegaConf.is_list(value):
        element_types = {type(element) for element in value}
        return list[element_types.pop()] if len(element_types) == 1 else list
    return OmegaConf.get_type(section, name)


def _without_none(hint: Any) -> Any:
    """``X`` for the type hint ``X | None``; any other hint as it is."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return hint


def _type_words(hint: Any) -> str:
    """``int`` -> "int", ``list[int]`` -> "list of int"; ``X | None`` reads as ``X``."""
    hint = _without_none(hint)
    if typing.get_origin(hint) is list:
        (element,) = typing.get_args(hint) or (None,)
        return "list" if element is None else f"list of {_type_words(element)}"
    return getattr(hint, "__name__", str(hint))


def _unknown_key_message(cfg: DictConfig, key: str, source: str, is_section: bool = False) -> str:
    """The message for an unknown ``key`` (``is_section``: given a mapping): the closest valid
    key, and when a whole section is unknown, at any depth (``PROJECT.X``, ``MODEL.OHEM.X``),
    how to add a project's keys, the likely cause."""
    message = f"{source}: unknown config key {key}"
    match = difflib.get_close_matches(key, _all_keys(cfg), n=1, cutoff=0.6)
    if match:
        message += f"; did you mean {match[0]}?"
    parts = key.split(".")
    missing = next(
        ".".join(parts[: i + 1])
        for i in range(len(parts))
        if OmegaConf.select(cfg, ".".join(parts[: i + 1]), default=_ABSENT) is _ABSENT
    )
    if is_section or missing != key:
        message += (
            f" (no section {missing} in the defaults; if a project defines it, add the "
            "project's keys with detkit.config.add_config and pass them as load_config(..., "
            "defaults=...))"
        )
    return message
