"""The error of a config that detkit cannot use."""

from __future__ import annotations

from ..utils.errors import UserError


class ConfigError(UserError, ValueError):
    """A config file or override that detkit cannot use; the message says what and where."""
