"""Every code block of the docs works as written: each Python block runs (a file's blocks in
order, in one namespace, in a fresh folder where the repository's configs, projects and tools
are linked in), and each shell command names a real make target, a command CI runs, or a detkit
script or module given options its own argument parser accepts."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from doc_blocks import (
    REPO,
    blocks_of,
    code_blocks,
    excerpt_problem,
    excerpt_source,
    make_sandbox,
    markdown_files,
    run_python_blocks,
)
from shell_commands import check_shell_block, script_parser

from detkit.modeling import BACKBONE_REGISTRY

PYTHON = ("python",)
SHELL = ("bash", "sh", "shell")


def _params(langs: tuple[str, ...]) -> list:
    return [
        pytest.param(block, id=block.where)
        for path in markdown_files()
        for block in blocks_of(path, langs)
    ]


@pytest.fixture(scope="session")
def python_failures(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[Path], dict[int, str]]:
    """``python_failures(markdown_file)``: the failing Python blocks of that file by line, from
    one run of all its blocks, made on first use."""
    runs: dict[Path, dict[int, str]] = {}

    def failures(path: Path) -> dict[int, str]:
        if path not in runs:
            sandbox = make_sandbox(tmp_path_factory.mktemp(path.stem))
            runs[path] = run_python_blocks(blocks_of(path, PYTHON), sandbox)
        return runs[path]

    return failures


@pytest.mark.parametrize("block", _params(PYTHON))
def test_python_block_runs(block, python_failures) -> None:
    failure = python_failures(block.path).get(block.line)
    if failure:
        pytest.fail(failure, pytrace=False)


EXCERPTS = [
    pytest.param(block, id=block.where)
    for path in markdown_files()
    for block in code_blocks(path.read_text(), path)
    if excerpt_source(block) is not None
]


@pytest.mark.parametrize("block", EXCERPTS)
def test_excerpt_block_quotes_its_file_verbatim(block) -> None:
    problem = excerpt_problem(block)
    if problem:
        pytest.fail(problem, pytrace=False)


def test_the_excerpt_check_fails_on_a_changed_line(tmp_path) -> None:
    text = "```python\n# excerpt of tools/train_net.py\nimport argparse\nimport sys\n```\n"
    (good,) = code_blocks(text, tmp_path / "page.md")
    assert excerpt_problem(good) is None
    (bad,) = code_blocks(text.replace("import sys", "import os"), tmp_path / "page.md")
    assert "not a verbatim excerpt of tools/train_net.py" in excerpt_problem(bad)


@pytest.mark.parametrize("block", _params(SHELL))
def test_shell_block_names_real_targets_scripts_and_options(block) -> None:
    problems = check_shell_block(block.code)
    if problems:
        pytest.fail(f"{block.where}: " + "\n".join(problems), pytrace=False)


@pytest.mark.parametrize("script", sorted((REPO / "tools").glob("*.py")), ids=lambda p: p.name)
def test_every_tool_exposes_its_argument_parser(script: Path) -> None:
    parser = script_parser(script)
    assert parser is not None, f"{script.name} needs a module-level argument_parser()"
    assert isinstance(parser(), argparse.ArgumentParser)


# The checkers themselves, on Markdown written here: they must be able to fail.

FAKE_MARKDOWN = """\
# A page

- a list item with a block:

  ```bash
  .venv/bin/python tools/train_net.py --config-file FILE --no-such-flag
  ```

```bash
make run   # fine
make no-such-target
.venv/bin/python tools/train_net.py --config-file FILE \\
    --num-gpus 2 SOLVER.BASE_LR=0.01 --resume
curl https://example.com | sh
.venv/bin/python tools/train_net.py --config-file configs/shapes/fast_rcnn.yaml --num-gpus 2 \\
    --dist-url tcp://HOST:PORT SOLVER.BASE_LR 0.01
.venv/bin/python -m detkit.config.reference --check docs/configs.md
```

```python
from detkit.modeling import BACKBONE_REGISTRY, Backbone

@BACKBONE_REGISTRY.register()
class DocBlockTestBackbone(Backbone):
    @classmethod
    def from_config(cls, cfg):
        return cls()

answer = 42
open("written.txt", "w").write("here")
```

```python
assert answer == 42  # the namespace is shared
raise ValueError("this block fails")
```

```python
print("a block after a failing one still runs")
```
"""


def test_fences_are_found_with_their_language_and_line_also_inside_lists() -> None:
    blocks = code_blocks(FAKE_MARKDOWN, Path("fake.md"))
    assert [(b.lang, b.line) for b in blocks] == [
        ("bash", 5),
        ("bash", 9),
        ("python", 20),
        ("python", 33),
        ("python", 38),
    ]
    assert blocks[0].code.startswith(".venv/bin/python tools/train_net.py")


def test_shell_checker_reports_wrong_flags_targets_late_options_and_foreign_commands() -> None:
    listed, commands = [
        check_shell_block(b.code) for b in code_blocks(FAKE_MARKDOWN, Path("fake.md"))[:2]
    ]
    assert len(listed) == 1 and "unrecognized arguments: --no-such-flag" in listed[0]
    assert len(commands) == 4, commands
    assert "no target no-such-target" in commands[0]
    assert "option --resume must come before the KEY=VALUE config overrides" in commands[1]
    assert commands[2].startswith("curl https://example.com: not a detkit command")
    assert commands[3].startswith("sh: not a detkit command")


def test_python_runner_shares_a_namespace_reports_failures_and_forgets_registrations(
    tmp_path: Path,
) -> None:
    cwd = os.getcwd()
    blocks = [b for b in code_blocks(FAKE_MARKDOWN, Path("fake.md")) if b.lang == "python"]
    failures = run_python_blocks(blocks, tmp_path)
    assert list(failures) == [33]
    assert failures[33].startswith("fake.md:33: ValueError: this block fails")
    assert "fake.md:35" in failures[33]  # the failing line, numbered as in the Markdown file
    assert "DocBlockTestBackbone" not in BACKBONE_REGISTRY
    assert (tmp_path / "written.txt").read_text() == "here"
    assert os.getcwd() == cwd
