"""detkit's configuration: typed defaults, YAML files with ``_BASE_``, overrides, validation."""

from .checks import check_config, register_config_check
from .defaults import key, section
from .errors import ConfigError
from .loading import (
    add_config,
    dump_config,
    get_default_config,
    load_config,
    looks_like_override,
)

__all__ = [
    "ConfigError",
    "add_config",
    "check_config",
    "dump_config",
    "get_default_config",
    "key",
    "load_config",
    "looks_like_override",
    "register_config_check",
    "section",
]
