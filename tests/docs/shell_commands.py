"""Checks the commands of the docs' shell blocks against what they name: ``make`` targets of the
Makefile, the commands ``.ci/run`` runs, and detkit's scripts, whose options are parsed by the
script's own argument parser. Anything else must be in :data:`ALLOWED` with a reason."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import re
import shlex
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path

from doc_blocks import REPO, isolated

from detkit.config import ConfigError
from detkit.engine import default_argument_parser
from detkit.engine.tool_setup import parse_command_line

# Commands that are not detkit's, by their first words, and why they are fine in the docs.
ALLOWED = {
    ("git", "clone"): "fetches the repository; nothing of detkit's to check",
    ("python", "-m", "pytest"): "runs detkit's tests; the options are pytest's",
}
# Commands that run the command after their own options; that command is checked instead.
WRAPPERS = {"time", "/usr/bin/time"}
IGNORED = {"cd"}
_SEPARATORS = {"&&", "||", ";", "|", "&"}
_REDIRECTIONS = {">", ">>", "<", ">&", "&>", "<&"}
_PYTHON = re.compile(r"(.*/)?python(\d+(\.\d+)?)?")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
# detkit's scripts, as the repository-relative path after any folder prefix ("./", "../")
_SCRIPT = re.compile(r"(?:.*/)?((?:tools/\w+|benchmarks/\w+|projects/[^/]+/\w+)\.py)")


def command_lines(code: str) -> list[str]:
    """The command lines of a shell block: ``\\`` continuations joined, blank lines and
    comment-only lines left out."""
    joined = re.sub(r"\\\n", " ", code)
    return [
        line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def simple_commands(line: str) -> list[list[str]]:
    """The words of each command of ``line`` (split at ``&&``, ``;``, ``|`` …), comments,
    redirections and leading ``VAR=value`` assignments left out."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split, lexer.commenters = True, "#"
    commands, words = [], []
    tokens = list(lexer)
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token in _SEPARATORS:
            commands.append(words)
            words = []
        elif token in _REDIRECTIONS:
            if words and words[-1].isdigit():  # the descriptor of 2>&1
                words.pop()
            index += 1  # and its target
        elif words or not _ASSIGNMENT.match(token):
            words.append(token)
        index += 1
    return [c for c in [*commands, words] if c]


@cache
def make_targets() -> frozenset[str]:
    """The targets the Makefile defines (rules, not variables or pattern rules)."""
    targets = set()
    for line in (REPO / "Makefile").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_./-]+(?:\s+[A-Za-z0-9_./-]+)*)\s*::?(?!=)", line)
        if match:
            targets.update(match[1].split())
    return frozenset(targets - {".PHONY"})


@cache
def ci_commands() -> frozenset[tuple[str, ...]]:
    """The commands ``.ci/run`` runs, as tuples of words."""
    commands = set()
    for line in command_lines((REPO / ".ci" / "run").read_text()):
        commands.update(tuple(words) for words in simple_commands(line))
    return frozenset(commands)


def check_command(words: list[str]) -> str:
    """Why the command ``words`` is wrong, or ``""`` when it is fine."""
    while words and words[0] in WRAPPERS:
        words = words[1:]
        while words and words[0].startswith("-"):
            words = words[1:]
    if not words or words[0] in IGNORED or tuple(words) in ci_commands():
        return ""
    if words[0] == "make":
        unknown = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
        unknown = [w for w in unknown if w not in make_targets()]
        return f"make: no target {', '.join(unknown)} in the Makefile" if unknown else ""
    if _PYTHON.fullmatch(words[0]):
        words = ["python", *words[1:]]
    if any(tuple(words[: len(prefix)]) == prefix for prefix in ALLOWED):
        return ""
    if words[0] == "python":
        return _check_python(words[1:])
    return f"{shlex.join(words)}: not a detkit command; allow it in ALLOWED with a reason"


def _check_python(words: list[str]) -> str:
    if words[:1] == ["-m"] and len(words) > 1 and words[1].split(".")[0] == "detkit":
        name, options = words[1], words[2:]
        try:
            parser = getattr(importlib.import_module(name), "argument_parser", None)
        except ImportError as error:
            return f"python -m {name}: {error}"
        if parser is None:
            return f"python -m {name}: the module has no argument_parser() to check options with"
        return parse_options(f"python -m {name}", parser(), options)
    match = _SCRIPT.fullmatch(words[0]) if words else None
    if match:
        script = REPO / match[1]
        if not script.is_file():
            return f"{words[0]}: no such script"
        try:
            parser = script_parser(script)
        except Exception as error:  # whatever importing the script raised
            return f"{words[0]}: cannot import it: {type(error).__name__}: {error}"
        if parser is None:
            return f"{words[0]}: the script has no module-level argument_parser()"
        return parse_options(words[0], parser(), words[1:])
    return f"python {shlex.join(words)}: not a detkit script, module or allowed command"


@cache
def script_parser(script: Path) -> Callable[[], argparse.ArgumentParser] | None:
    """The script's ``argument_parser``, imported as Python imports a script it runs (its
    folder first on ``sys.path``) without running its ``__main__`` block. A project's
    ``train_net.py`` without one takes ``tools/train_net.py``'s options
    (``detkit.engine.default_argument_parser``)."""
    name = f"detkit_doc_script_{abs(hash(script))}"
    spec = importlib.util.spec_from_file_location(name, script)
    module = importlib.util.module_from_spec(spec)
    with isolated(REPO, modules_from=script.parent):
        sys.path.insert(0, str(script.parent))
        sys.modules[name] = module  # dataclasses look their module up by name
        try:
            spec.loader.exec_module(module)
        finally:
            del sys.modules[name]
    parser = getattr(module, "argument_parser", None)
    if parser is None and script.parent.parent.name == "projects":
        return default_argument_parser
    return parser


def parse_options(command: str, parser: argparse.ArgumentParser, words: list[str]) -> str:
    """Parses ``words`` with ``parser`` as the command does (a command that takes config
    overrides with :func:`detkit.engine.tool_setup.parse_command_line`, as every tool that reads
    a config does); returns the error, or ``""``."""
    takes_overrides = any(action.dest == "opts" for action in parser._actions)
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            if takes_overrides:
                parse_command_line(parser, words)
            else:
                parser.parse_args(words)
    except SystemExit as stop:
        if stop.code in (0, None):  # --help
            return ""
        message = stderr.getvalue().strip().splitlines()
        return f"{command}: {message[-1] if message else f'exit status {stop.code}'}"
    except ConfigError as error:
        return f"{command}: {error}"
    return ""


def check_shell_block(code: str) -> list[str]:
    """The problems of every command of a shell block, one line each."""
    problems = []
    for line in command_lines(code):
        for words in simple_commands(line):
            problem = check_command(words)
            if problem:
                problems.append(problem)
    return problems
