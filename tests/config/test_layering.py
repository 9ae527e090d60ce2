"""detkit.config sits below the packages that use it (docs/DESIGN: layers depend downwards
only): no module of it imports anything of detkit but itself and detkit.utils, not even inside
a function, so detkit.data, detkit.evaluation and detkit.modeling contribute their config checks
instead of detkit.config reaching up for them."""

from __future__ import annotations

import ast
from pathlib import Path

import detkit.config

CONFIG = Path(detkit.config.__file__).parent
ALLOWED = ("detkit.config", "detkit.utils")


def imported_modules(source: str, module: str) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in ``source``, the text of the module
    named ``module``: ``import`` and ``from … import`` statements anywhere (at the top, inside
    functions, under ``if``), relative ones resolved, ``from pkg import sub`` counted as
    ``pkg.sub``; and ``importlib.import_module("…")`` / ``__import__("…")`` of a literal."""
    package = module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            parts = package[: len(package) - node.level + 1] if node.level else []
            base = ".".join([*parts, *([node.module] if node.module else [])])
            if node.module:
                found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None))
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return sorted(found)


def outside_the_layer(name: str) -> bool:
    inside = any(name == allowed or name.startswith(allowed + ".") for allowed in ALLOWED)
    return (name == "detkit" or name.startswith("detkit.")) and not inside


def test_the_import_reader_sees_imports_inside_functions_and_relative_ones() -> None:
    source = (
        "from __future__ import annotations\n"
        "from .errors import ConfigError\n"
        "def check(cfg):\n"
        "    from ..data import DatasetCatalog\n"
        "    from .. import modeling\n"
        "    import detkit.evaluation.build\n"
        "    importlib.import_module('detkit.engine')\n"
    )
    edges = [
        (line, name)
        for line, name in imported_modules(source, "detkit.config.checks")
        if outside_the_layer(name)
    ]
    assert edges == [
        (4, "detkit.data"),
        (4, "detkit.data.DatasetCatalog"),
        (5, "detkit.modeling"),
        (6, "detkit.evaluation.build"),
        (7, "detkit.engine"),
    ]


def test_detkit_config_imports_nothing_above_it() -> None:
    modules = sorted(CONFIG.rglob("*.py"))
    assert CONFIG / "checks.py" in modules
    edges = [
        f"detkit/config/{path.relative_to(CONFIG)}:{line} imports {name}"
        for path in modules
        for line, name in imported_modules(
            path.read_text(), ".".join(("detkit", "config", *path.relative_to(CONFIG).parts))[:-3]
        )
        if outside_the_layer(name)
    ]
    assert edges == [], "\n".join(edges)
