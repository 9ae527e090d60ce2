"""detkit's configuration: typed defaults, YAML files with ``_BASE_``, overrides, validation."""

from .checks import check_config, register_config_check
from .defaults import key, section
from .errors import ConfigError
from .loading import add_config, dump_config, get_default_config, load_config
from .overrides import looks_like_override, parse_overrides, split_overrides

__all__ = [
    "ConfigError",
    "add_config",
    "check_config",
    "dump_config",
    "get_default_config",
    "key",
    "load_config",
    "looks_like_override",
    "parse_overrides",
    "register_config_check",
    "section",
    "split_overrides",
]
