"""The one way detkit reads YAML a user gives: config files (and their ``_BASE_`` chain) and the
values of ``KEY=VALUE`` overrides, and so the ``DATASETS.REGISTER`` entries in either.

It is PyYAML's safe loader (no tag builds a Python object), stricter where plain YAML surprises
silently or can be abused: a key given twice in one mapping is refused (YAML keeps the last);
so is any alias (``*name``), before anything is built, since a kilobyte of nested aliases
expands into billions of values; so is a value nested more than :data:`MAX_NESTING` levels
deep (no config needs more than a few, and deeper ones exhaust the parsers' stacks); and numbers
are read without YAML 1.1's base 60, so ``20:30`` is text, not 1230.
"""

from __future__ import annotations

import re
import typing
from typing import Any

import yaml

from .errors import ConfigError

MAX_NESTING = 32  # levels of mappings and lists; DATASETS.REGISTER's class names are at 6
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
# PyYAML's patterns for YAML 1.1 integers and floats, less the base-60 forms
_INT_PATTERN = re.compile(
    r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"
)
_FLOAT_PATTERN = re.compile(
    r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)


def read_yaml(text: str, source: str, lines: bool = True) -> Any:
    """The value of the YAML ``text`` from ``source`` (a file name, or ``override '...'``).

    Raises :class:`ConfigError` naming ``source`` (and the line, when ``lines``) for text that
    is not valid YAML, a key given twice in one mapping, an alias, or nesting deeper than
    :data:`MAX_NESTING`.
    """
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to be a config") from None
    except _RefusedYaml as error:
        where = f"{source}:{error.line}" if lines else source
        raise ConfigError(f"{where}: {error}") from None
    except yaml.MarkedYAMLError as error:  # one line: where, and what the parser met
        mark = error.problem_mark or error.context_mark
        if mark is None:
            raise ConfigError(f"{source}: not valid YAML: {error.problem}") from None
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if lines else source
        at = "" if lines else f" at column {mark.column + 1}"
        what = "; ".join(part for part in (error.context, error.problem) if part)
        raise ConfigError(f"{where}: not valid YAML{at}: {what}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML: {' '.join(str(error).split())}") from None


class _RefusedYaml(yaml.YAMLError):
    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader without aliases, repeated keys or base-60 numbers."""

    yaml_implicit_resolvers: typing.ClassVar = {
        first: [(tag, pattern) for tag, pattern in resolvers if tag not in (_INT, _FLOAT)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    _depth = 0  # of the node being composed

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise _RefusedYaml(
                f"the alias *{event.anchor} is refused: detkit reads no YAML aliases (a few "
                "nested ones expand into billions of values); write the value out",
                event.start_mark.line + 1,
            )
        if self._depth >= MAX_NESTING:
            raise _RefusedYaml(
                f"nested too deeply to be a config (more than {MAX_NESTING} levels of mappings "
                "and lists)",
                event.start_mark.line + 1,
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first_lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, typing.Hashable) and key in first_lines:
                raise _RefusedYaml(
                    f"{key!r} is given twice (first at line {first_lines[key]}); YAML would "
                    "silently keep only the last, so merge them",
                    line,
                )
            if isinstance(key, typing.Hashable):
                first_lines[key] = line
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_implicit_resolver(_INT, _INT_PATTERN, list("-+0123456789"))
_StrictLoader.add_implicit_resolver(_FLOAT, _FLOAT_PATTERN, list("-+0123456789."))
