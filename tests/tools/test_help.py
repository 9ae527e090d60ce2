"""Every tool's ``--help``: its description is the first paragraph of the tool's docstring in
full, never a first line cut in the middle of a sentence."""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS = sorted((REPO / "tools").glob("*.py"))


def first_paragraph(script: Path) -> str:
    """The docstring's first paragraph as one line, RST's double backquotes dropped."""
    doc = ast.get_docstring(ast.parse(script.read_text()))
    return " ".join(doc.split("\n\n")[0].replace("``", "").split())


def parser_of(script: Path):
    """The script's ``argument_parser()``, imported as Python runs a script (its folder first
    on ``sys.path``; itself in ``sys.modules``, where dataclasses look it up)."""
    name = f"help_of_{script.stem}"
    spec = importlib.util.spec_from_file_location(name, script)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(script.parent))
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(script.parent))
        del sys.modules[name]
    return module.argument_parser()


@pytest.mark.parametrize("script", TOOLS, ids=lambda p: p.name)
def test_the_description_is_the_docstrings_first_paragraph_in_full(script: Path) -> None:
    description = parser_of(script).description
    assert description == first_paragraph(script)
    assert description.endswith("."), description


def test_help_of_a_tool_whose_first_sentence_wraps_shows_all_of_it() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "analyze_model.py"), "--help"],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert " ".join(result.stdout.split()).count(first_paragraph(REPO / "tools/analyze_model.py"))
