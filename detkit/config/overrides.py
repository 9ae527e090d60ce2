"""The one command-line grammar of config overrides, shared by ``tools/train_net.py`` and every
other tool: the tool's options first, then ``KEY=VALUE`` strings with dotted upper-case keys
(``SOLVER.BASE_LR=0.01``), or detectron2's ``KEY VALUE`` pairs (``SOLVER.BASE_LR 0.01``); both
styles mix. The overrides begin at the first word that is one of them, so an option that takes
several values (``--input a.jpg b.jpg``) never swallows an override, and an option placed after
an override is refused with one line that says where it goes."""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .yaml_reader import read_yaml

# "KEY=VALUE" with an upper-case dotted key, as config keys are written.
_OVERRIDE = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)*=")
# A config key alone: the first word of a detectron2-style "KEY VALUE" pair.
_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)*$")


def looks_like_override(text: str) -> bool:
    """Whether a command-line word is a ``KEY=VALUE`` override (and not, say, a file name or a
    value that merely contains ``=``)."""
    return bool(_OVERRIDE.match(text))


def starts_overrides(word: str, sections: Collection[str]) -> bool:
    """Whether ``word`` begins the overrides: a ``KEY=VALUE`` override, or a config key whose
    first part is one of the top-level ``sections`` (``MODEL.WEIGHTS``, ``SEED``) and which is
    not an existing file or folder (an input named ``MODEL`` stays an input)."""
    if looks_like_override(word):
        return True
    return bool(_KEY.match(word)) and word.split(".")[0] in sections and not Path(word).exists()


def split_overrides(words: Sequence[str], sections: Collection[str]) -> tuple[list[str], list[str]]:
    """The words before the first override (the tool's options, for its argument parser) and
    the overrides from there on as ``KEY=VALUE`` strings (:func:`parse_overrides`, which
    refuses an option among them)."""
    words = list(words)
    start = next(
        (index for index, word in enumerate(words) if starts_overrides(word, sections)),
        len(words),
    )
    return words[:start], parse_overrides(words[start:])


def parse_overrides(words: Sequence[str]) -> list[str]:
    """``KEY=VALUE`` strings from ``words``, which may also hold detectron2-style ``KEY VALUE``
    pairs (``SOLVER.BASE_LR 0.01``) and ``--`` separators. Raises :class:`ConfigError` for an
    option (``--name``), which must come before the overrides, and for a key without a value."""
    overrides, index = [], 0
    words = [word for word in words if word != "--"]
    while index < len(words):
        item = words[index]
        if item.startswith("--"):
            raise ConfigError(f"option {item} must come before the KEY=VALUE config overrides")
        if looks_like_override(item):
            overrides.append(item)
            index += 1
        elif (
            "=" not in item and index + 1 < len(words) and not looks_like_override(words[index + 1])
        ):
            overrides.append(f"{item}={words[index + 1]}")
            index += 2
        elif "=" in item:  # e.g. a lower-case key: load_config names it and suggests the key
            overrides.append(item)
            index += 1
        else:
            raise ConfigError(f"override {item!r} has no value; write KEY=VALUE")
    return overrides


def parse_override(text: str) -> tuple[str, Any]:
    """The key and the value (read as YAML) of one ``KEY=VALUE`` override; ``KEY=`` is the empty
    string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or " " in key:
        raise ConfigError(f"override {text!r} is not KEY=VALUE (e.g. SOLVER.BASE_LR=0.01)")
    if not raw.strip():  # KEY= is the empty string (MODEL.WEIGHTS=), not YAML's null
        return key, ""
    return key, read_yaml(raw, f"override {text!r}", lines=False)
