"""Projects extend detkit through its public API only: no project imports a private name (one
starting with ``_``) from detkit, and each has the files a project is made of."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROJECTS = sorted(p for p in (REPO / "projects").iterdir() if p.is_dir())


def private_detkit_imports(source: str, filename: str = "<source>") -> list[str]:
    """``module.name`` of every private detkit name ``source`` imports: a module path with a
    part starting with ``_`` (``detkit.layers._roi_utils``, ``detkit._C``) or an imported
    name starting with ``_``."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
            found += [m for m in modules if _is_detkit(m) and _has_private_part(m)]
        elif isinstance(node, ast.ImportFrom) and node.module and _is_detkit(node.module):
            if _has_private_part(node.module):
                found.append(node.module)
            found += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    return found


def _is_detkit(module: str) -> bool:
    return module == "detkit" or module.startswith("detkit.")


def _has_private_part(module: str) -> bool:
    return any(part.startswith("_") for part in module.split("."))


def test_the_checker_finds_every_form_of_private_import() -> None:
    source = (
        "import detkit._C\n"
        "import detkit.modeling, torch._dynamo\n"
        "from detkit.layers._roi_utils import boxes_to_rois\n"
        "from detkit.modeling.poolers import _box_tensors, ROIPooler\n"
        "from detkit import modeling\n"
        "from .private import _helper\n"  # the project's own private names are its business
    )
    assert private_detkit_imports(source) == [
        "detkit._C",
        "detkit.layers._roi_utils",
        "detkit.modeling.poolers._box_tensors",
    ]


def test_there_are_projects() -> None:
    assert {p.name for p in PROJECTS} >= {"OHEM", "DoubleHead"}


@pytest.mark.parametrize("project", PROJECTS, ids=lambda p: p.name)
def test_a_project_imports_only_public_detkit_names(project: Path) -> None:
    offending = {
        str(file.relative_to(REPO)): names
        for file in sorted(project.rglob("*.py"))
        if (names := private_detkit_imports(file.read_text(), str(file)))
    }
    assert not offending, f"private detkit names imported: {offending}"


@pytest.mark.parametrize("project", PROJECTS, ids=lambda p: p.name)
def test_a_project_has_a_readme_train_net_configs_and_tests(project: Path) -> None:
    assert (project / "README.md").is_file()
    assert (project / "train_net.py").is_file()
    assert list((project / "configs").glob("*.yaml"))
    assert list((project / "tests").glob("test_*.py"))
