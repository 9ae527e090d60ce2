"""The code blocks of Markdown files, and running a file's Python blocks the way a reader would:
in order, in one namespace, in a fresh working directory, without leaking what they register
into the rest of the test session."""

from __future__ import annotations

import contextlib
import importlib
import os
import pkgutil
import re
import sys
import traceback
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fvcore.common.registry import Registry

import detkit
from detkit.data import DatasetCatalog, MetadataCatalog

REPO = Path(__file__).resolve().parents[2]
MARKDOWN_FILES = (
    "README.md",
    "configs/README.md",
    "docs/*.md",
    "projects/README.md",
    "projects/*/README.md",
)
# What a doc block may read by a path relative to the repository root, as its commands do.
LINKED_INTO_SANDBOX = ("configs", "projects", "tools")

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,})\s*(?P<lang>[\w+-]*)")


@dataclass(frozen=True)
class Block:
    """A fenced code block: its file, the line of its opening fence (1-based), its language
    (``""`` when none is given) and its text, de-indented as far as its fence is."""

    path: Path
    line: int
    lang: str
    code: str

    @property
    def where(self) -> str:
        """``file:line`` of the opening fence, the file relative to the repository."""
        inside = self.path.is_relative_to(REPO)
        return f"{self.path.relative_to(REPO) if inside else self.path}:{self.line}"


def markdown_files() -> list[Path]:
    """Every Markdown file whose code blocks are checked, in a stable order."""
    return sorted({p for pattern in MARKDOWN_FILES for p in REPO.glob(pattern)})


def code_blocks(text: str, path: Path) -> list[Block]:
    """The fenced (```) blocks of Markdown ``text``, including those indented in lists."""
    blocks, lines, index = [], text.splitlines(), 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        index += 1
        if not opening:
            continue
        start, indent, fence = index, len(opening["indent"]), opening["fence"]
        while index < len(lines) and not re.fullmatch(rf" *{fence}`*\s*", lines[index]):
            index += 1
        body = [line[indent:] if line[:indent].isspace() else line for line in lines[start:index]]
        blocks.append(Block(path, start, opening["lang"].lower(), "\n".join(body) + "\n"))
        index += 1
    return blocks


def blocks_of(path: Path, langs: tuple[str, ...]) -> list[Block]:
    return [b for b in code_blocks(path.read_text(), path) if b.lang in langs]


# A block whose first line is "# excerpt of <path>" shows part of a file of the repository
# (a project's train_net.py, say): it is checked to be a verbatim excerpt of that file, which
# its own tests run, instead of being run itself.
_EXCERPT = re.compile(r"# excerpt of (?P<path>\S+)\n")


def excerpt_source(block: Block) -> Path | None:
    """The repository file an excerpt block quotes, or None for other blocks."""
    match = _EXCERPT.match(block.code)
    return REPO / match["path"] if match else None


def excerpt_problem(block: Block) -> str | None:
    """Why an excerpt block is not a verbatim excerpt of its file, or None when it is."""
    source = excerpt_source(block)
    if source is None or not source.is_file():
        return f"{block.where}: the excerpt's file {source} does not exist"
    quoted = block.code.split("\n", 1)[1].rstrip("\n")
    if quoted not in source.read_text():
        return (
            f"{block.where}: the block is not a verbatim excerpt of "
            f"{source.relative_to(REPO)}; copy the file's lines again"
        )
    return None


def _import_all_of_detkit() -> None:
    """Imports every public detkit module, so each registry holds its built-in entries before
    a snapshot (restoring a snapshot taken earlier would drop entries registered later)."""
    for module in pkgutil.walk_packages(detkit.__path__, "detkit."):
        if not any(part.startswith("_") for part in module.name.split(".")):
            importlib.import_module(module.name)


def _registries() -> list[Registry]:
    """Every registry of an imported detkit module."""
    found = {}
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] == "detkit":
            for value in vars(module).values():
                if isinstance(value, Registry):
                    found[id(value)] = value
    return list(found.values())


@contextlib.contextmanager
def isolated(cwd: Path, modules_from: Path) -> Iterator[None]:
    """Runs the body in ``cwd`` and afterwards undoes what it did to the session: registry
    entries (each registry's ``_obj_map``), registered datasets and their metadata, modules
    imported from the folder ``modules_from`` or from ``projects/`` (so that a project's own
    tests import, and register, them afresh), ``sys.path``, the environment and the working
    directory."""
    _import_all_of_detkit()
    registries = {id(r): (r, dict(r._obj_map)) for r in _registries()}
    datasets, modules = set(DatasetCatalog.list()), set(sys.modules)
    path, environ, old_cwd = list(sys.path), dict(os.environ), os.getcwd()
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(old_cwd)
        sys.path[:] = path
        os.environ.clear()
        os.environ.update(environ)
        for registry, entries in registries.values():
            registry._obj_map.clear()
            registry._obj_map.update(entries)
        for name in set(DatasetCatalog.list()) - datasets:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        roots = (modules_from.resolve(), REPO / "projects")
        for name in set(sys.modules) - modules:
            file = getattr(sys.modules[name], "__file__", None)
            if file and any(Path(file).resolve().is_relative_to(root) for root in roots):
                del sys.modules[name]


def make_sandbox(folder: Path) -> Path:
    """``folder`` as a working directory for doc blocks: the repository's ``configs``,
    ``projects`` and ``tools`` linked in, everything else (datasets, outputs) made there."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in LINKED_INTO_SANDBOX:
        (folder / name).symlink_to(REPO / name, target_is_directory=True)
    return folder


def run_python_blocks(blocks: list[Block], cwd: Path) -> dict[int, str]:
    """Runs ``blocks`` (one file's, in order) in one namespace in ``cwd``, isolated; returns
    the failures by block line, each with the traceback's lines inside the Markdown file."""
    failures: dict[int, str] = {}
    module = types.ModuleType("detkit_doc_blocks")  # classes defined in blocks live here
    with isolated(cwd, modules_from=cwd):
        sys.modules[module.__name__] = module
        try:
            for block in blocks:
                if excerpt_source(block) is not None:  # checked against its file instead
                    continue
                # padding keeps line numbers those of the Markdown file
                source = "\n" * block.line + block.code
                try:
                    exec(compile(source, str(block.path), "exec"), module.__dict__)
                except (Exception, SystemExit) as error:  # a block may even call sys.exit
                    failures[block.line] = _describe(error, block)
        finally:
            del sys.modules[module.__name__]
    return failures


def _describe(error: BaseException, block: Block) -> str:
    frames = [
        f"{block.path.name}:{frame.lineno}: {frame.line}"
        for frame in traceback.extract_tb(error.__traceback__)
        if frame.filename == str(block.path)
    ]
    return "\n".join([f"{block.where}: {type(error).__name__}: {error}", *frames])
