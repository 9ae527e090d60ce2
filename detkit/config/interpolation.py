"""Interpolations in config values: only ``${oc.env:VAR}`` and ``${oc.env:VAR,default}``, replaced
by their values as the config is loaded.

So an unset variable is refused at once, naming the key and the variable; the loaded config,
and the ``config.yaml`` a run writes from it, hold the values used; and a value cannot refer to
other keys or run other resolvers (nine levels of nine references to other values expand like
nested YAML aliases; ``oc.create`` parses YAML, aliases included).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError

# ${oc.env:VAR} or ${oc.env:VAR,default}, the default plain text
_ENV = re.compile(r"\$\{oc\.env:([A-Za-z_][A-Za-z0-9_]*)(,[^${}\\]*)?\}")
_READ = "only ${oc.env:VAR} and ${oc.env:VAR,default} are read in a config"


def resolve_interpolations(value: Any, where: str) -> Any:
    """``value`` (a scalar, or lists and mappings of them, from ``where``: a source and a key)
    with every ``${oc.env:...}`` in its strings replaced by its value.

    Raises :class:`ConfigError` naming ``where`` for any other ``${...}`` (an escaped one
    included), an unset variable without a default, and a variable whose value holds ``${``.
    """
    if isinstance(value, Mapping):
        return {name: resolve_interpolations(item, where) for name, item in value.items()}
    if isinstance(value, list):
        return [resolve_interpolations(item, where) for item in value]
    if isinstance(value, str) and "${" in value:
        return _resolved(value, where)
    return value


def _resolved(text: str, where: str) -> Any:
    if "${" in _ENV.sub("", text):
        raise ConfigError(f"{where}: {text}: {_READ} (no reference to another key, no resolver)")
    for match in _ENV.finditer(text):
        variable, default = match[1], match[2]
        if default is None and variable not in os.environ:
            raise ConfigError(
                f"{where}: {text}: the environment variable {variable} is not set (set it, or "
                f"give a default: ${{oc.env:{variable},VALUE}})"
            )
    try:
        value = OmegaConf.create({"value": text}).value
    except OmegaConfBaseException as error:
        raise ConfigError(f"{where}: {text}: {str(error).splitlines()[0]}") from None
    if isinstance(value, str) and "${" in value:
        raise ConfigError(f"{where}: {text} gives {value!r}, which holds '${{': {_READ}, once")
    return value
