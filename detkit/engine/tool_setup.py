"""The set-up every command under ``tools/`` shares, detectron2's ``setup(args)``: the command
line parsed with the one override grammar (:mod:`detkit.config.overrides`), the config loaded
and its datasets set up (:func:`setup_config`), and a user error reported as one line.

    def argument_parser() -> argparse.ArgumentParser:
        parser = tool_argument_parser(__doc__)
        parser.add_argument("--output", type=output_file, required=True)
        return parser

    def run(args: argparse.Namespace) -> int:
        cfg = setup_config(args)
        ...

    if __name__ == "__main__":
        sys.exit(run_tool("my_tool", argument_parser(), run))

A user error (:data:`USER_ERRORS`: a config, file or value the user gave that cannot be used)
ends the command with one line ``my_tool: <what is wrong>`` on stderr and exit status 2, without
a traceback, which ``--debug`` or ``DETKIT_DEBUG=1`` shows instead. ``tools/train_net.py``
(:func:`detkit.engine.run_train_net`) parses and sets up the same way.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from ..config import (
    ConfigError,
    get_default_config,
    load_config,
    parse_overrides,
    split_overrides,
)
from ..data import setup_datasets
from ..utils.errors import UserError
from ..utils.tool_help import tool_description

# What ends a command with one line and exit status 2: errors in what the user gave.
USER_ERRORS = (ConfigError, UserError)
OVERRIDES_HELP = "config overrides, after the options: KEY=VALUE (or detectron2's KEY VALUE)"


def tool_argument_parser(
    doc: str | None, config_help: str = "the config (YAML)", required: bool = True
) -> argparse.ArgumentParser:
    """A tool's parser: its description (the first paragraph of its docstring ``doc``),
    ``--config-file`` (described by ``config_help``; optional unless ``required``), ``--debug``
    and the config overrides (``opts``) that follow the options."""
    parser = argparse.ArgumentParser(description=tool_description(doc))
    parser.add_argument("--config-file", required=required, metavar="FILE", help=config_help)
    add_common_arguments(parser)
    return parser


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """``--debug`` and the config overrides (``opts``), as every command that loads a config
    takes them."""
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of a user error (also: DETKIT_DEBUG=1)",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help=OVERRIDES_HELP)


def parse_command_line(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None = None,
    defaults: DictConfig | None = None,
) -> argparse.Namespace:
    """``argv`` (``sys.argv[1:]`` when None) parsed by ``parser``: the words before the first
    config override (a top-level key of ``defaults``, detkit's when None) by ``parser``, and
    ``args.opts`` the overrides as ``KEY=VALUE`` strings. Raises :class:`ConfigError` for an
    option placed after an override and for overrides without a ``--config-file``."""
    words = sys.argv[1:] if argv is None else list(argv)
    options, overrides = split_overrides(words, set(defaults or get_default_config()))
    args = parser.parse_args(options)
    args.opts = parse_overrides(args.opts) + overrides  # opts: what argparse left, e.g. x.y=1
    if args.opts and not getattr(args, "config_file", None):
        raise ConfigError(f"config overrides {' '.join(args.opts)} need a --config-file")
    return args


def setup_config(args: argparse.Namespace, defaults: DictConfig | None = None) -> DictConfig:
    """The config of a command line, ready for use: ``args.config_file`` loaded with the
    overrides ``args.opts`` over ``defaults`` (detkit's when None, or with a project's keys),
    then its datasets set up (:func:`detkit.data.setup_datasets`). It is read-only from then on
    (``OmegaConf.set_readonly``): a setting a tool imposes goes into ``args.opts`` before.
    ``args`` may come from a plain ``parser.parse_args()`` too, as detectron2's ``setup(args)``
    takes them (``KEY VALUE`` pairs included)."""
    cfg = load_config(args.config_file, parse_overrides(args.opts), defaults=defaults)
    cfg = setup_datasets(cfg, args.config_file)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def debug_requested(words: Sequence[str]) -> bool:
    """Whether a user error should show its traceback: ``--debug`` among the options
    ``words``, or ``DETKIT_DEBUG`` set to anything but 0."""
    return "--debug" in words or os.environ.get("DETKIT_DEBUG", "") not in ("", "0")


def run_tool(
    name: str,
    parser: argparse.ArgumentParser,
    command: Callable[[argparse.Namespace], int],
    argv: Sequence[str] | None = None,
) -> int:
    """Parses ``argv`` with ``parser`` (:func:`parse_command_line`) and runs ``command(args)``;
    returns its exit status, or 2 after printing a user error as one line ``name: error``."""
    words = sys.argv[1:] if argv is None else list(argv)
    try:
        return command(parse_command_line(parser, words))
    except USER_ERRORS as error:
        if debug_requested(words):
            raise
        tqdm.write(f"{name}: {error}", file=sys.stderr)  # below a progress bar, if one runs
        return 2
