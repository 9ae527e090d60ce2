"""The table of config keys (key | default | meaning), generated from typed defaults.

Each key's meaning lives next to its default (:func:`detkit.config.defaults.key`), and the table
in ``docs/configs.md`` is generated from them, between two marker lines, so that the docs cannot
drift from the code::

    python -m detkit.config.reference --write docs/configs.md   # regenerate the table
    python -m detkit.config.reference --check docs/configs.md   # exit 1 if it is out of date
    python -m detkit.config.reference                           # print the table

A project documents its own keys the same way: ``markdown_reference(MyProjectKeys)`` with the
dataclass it passes to :func:`detkit.config.add_config`, or on the command line
``--defaults my_project.config:MyProjectKeys --write projects/MyProject/README.md`` (with the
project's folder on ``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from .defaults import DOC

BEGIN_MARKER = "<!-- BEGIN GENERATED: config reference"
END_MARKER = "<!-- END GENERATED -->"
DETKIT_DEFAULTS = "detkit.config.defaults:DetkitConfig"
DEFAULT_FILE = "docs/configs.md"
_MISSING = "???"  # OmegaConf's mark of a key without a value


@dataclass(frozen=True)
class KeyReference:
    """One row of the table: a dotted key, its default and its meaning."""

    name: str
    default: Any
    meaning: str


def key_references(defaults: Any) -> list[KeyReference]:
    """Every key of ``defaults`` (a dataclass type or instance, or a structured config), in
    declaration order; a key declared without :func:`~detkit.config.defaults.key` has an empty
    meaning."""
    cfg = defaults if isinstance(defaults, DictConfig) else OmegaConf.structured(defaults)
    return list(_walk(cfg, ""))


def _walk(cfg: DictConfig, prefix: str) -> Iterator[KeyReference]:
    meanings = _field_meanings(OmegaConf.get_type(cfg))
    for name in cfg:
        if OmegaConf.is_missing(cfg, name):
            yield KeyReference(f"{prefix}{name}", _MISSING, meanings.get(name, ""))
            continue
        value = cfg[name]
        if isinstance(value, DictConfig):
            yield from _walk(value, f"{prefix}{name}.")
            continue
        if isinstance(value, ListConfig):
            value = OmegaConf.to_container(value)
        yield KeyReference(f"{prefix}{name}", value, meanings.get(name, ""))


def _field_meanings(cls: Any) -> dict[str, str]:
    if not dataclasses.is_dataclass(cls):
        return {}
    return {f.name: f.metadata.get(DOC, "") for f in dataclasses.fields(cls)}


def format_default(value: Any) -> str:
    """``value`` as YAML would show it inline: ``null``, ``true``, ``[]``, ``""``, ``[a, b]``;
    a string that YAML would read as something else is quoted."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(format_default(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {format_default(v)}" for k, v in value.items()) + "}"
    text = str(value)
    if text == _MISSING:
        return text
    plain = text and not any(c in text for c in ",[]{}#&*!|>'\"%@`") and text.strip() == text
    if plain and _reads_back(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def _reads_back(text: str) -> bool:
    """Whether YAML reads ``text``, unquoted, as that string."""
    try:
        return yaml.safe_load(text) == text
    except yaml.YAMLError:
        return False


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def markdown_reference(defaults: Any) -> str:
    """The Markdown table ``| key | default | meaning |`` of every key of ``defaults`` (see
    :func:`key_references`), one row per key, ending with a newline."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for ref in key_references(defaults):
        default = _cell(format_default(ref.default))
        lines.append(f"| `{ref.name}` | `{default}` | {_cell(ref.meaning)} |")
    return "\n".join(lines) + "\n"


def _marker_lines(text: str, source: str) -> tuple[list[str], int, int]:
    lines = text.splitlines(keepends=True)
    begins = [i for i, line in enumerate(lines) if line.startswith(BEGIN_MARKER)]
    ends = [i for i, line in enumerate(lines) if line.strip() == END_MARKER]
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        raise ValueError(
            f"{source}: needs one line starting with {BEGIN_MARKER!r} and, after it, one "
            f"{END_MARKER!r} line, around the generated table"
        )
    return lines, begins[0], ends[0]


def generated_part(text: str, source: str = "the text") -> str:
    """What lies between the marker lines of ``text``."""
    lines, begin, end = _marker_lines(text, source)
    return "".join(lines[begin + 1 : end])


def with_generated_part(text: str, table: str, source: str = "the text") -> str:
    """``text`` with ``table`` between its marker lines, which stay as they are."""
    lines, begin, end = _marker_lines(text, source)
    return "".join([*lines[: begin + 1], table, *lines[end:]])


def load_defaults(spec: str) -> Any:
    """The object ``MODULE:NAME`` names: a dataclass or a structured config."""
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"--defaults {spec}: {error}") from error


def argument_parser() -> argparse.ArgumentParser:
    """The command line: print the table, ``--write`` it into a file or ``--check`` one."""
    parser = argparse.ArgumentParser(
        prog="python -m detkit.config.reference", description=__doc__.split("\n")[0]
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument(
        "--write",
        nargs="?",
        const=DEFAULT_FILE,
        metavar="FILE",
        help=f"replace the table between the marker lines of FILE (default {DEFAULT_FILE})",
    )
    action.add_argument(
        "--check",
        nargs="?",
        const=DEFAULT_FILE,
        metavar="FILE",
        help="exit 1 if FILE's table differs from the generated one",
    )
    parser.add_argument(
        "--defaults",
        default=DETKIT_DEFAULTS,
        metavar="MODULE:NAME",
        help=f"the dataclass whose keys to tabulate (default {DETKIT_DEFAULTS})",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command line ``argv``; returns the exit status: 0, 1 for a table that is out of
    date (``--check``), 2 for a file without marker lines or defaults that cannot be loaded."""
    args = argument_parser().parse_args(argv)
    try:
        table = markdown_reference(load_defaults(args.defaults))
        if not (args.write or args.check):
            print(table, end="")
            return 0
        path = Path(args.write or args.check)
        text = path.read_text()
        updated = with_generated_part(text, table, str(path))
    except (OSError, ValueError) as error:
        print(f"reference: {error}", file=sys.stderr)
        return 2
    if args.write:
        if updated != text:
            path.write_text(updated)
        return 0
    if updated != text:
        command = "python -m detkit.config.reference --write " + str(path)
        if args.defaults != DETKIT_DEFAULTS:
            command += f" --defaults {args.defaults}"
        print(f"{path}: the table of config keys is out of date; run {command}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
