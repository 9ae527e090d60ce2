"""Paths a config names (dataset files and folders, proposal files, weights, ``OUTPUT_DIR``): a
relative one is read from the working directory, as detectron2 reads it; only ``_BASE_`` is
relative to the file that names it. A problem with a path names the path it resolved to."""

from __future__ import annotations

import os
from pathlib import Path

RELATIVE_PATHS = "relative paths are read from the working directory"


def path_problem(path: str | Path, folder: bool = False) -> str | None:
    """What keeps ``path`` from being read as a file (a folder when ``folder``), in words
    ("no such file (looked for /abs/path; relative paths are ...)"), or None when it can be."""
    resolved = Path(path).absolute()
    kind = "folder" if folder else "file"
    if not resolved.exists():
        link = " (a link to nothing)" if resolved.is_symlink() else ""
        problem = f"no such {kind}{link}"
    elif folder and not resolved.is_dir():
        problem = "is a file, not a folder"
    elif not folder and resolved.is_dir():
        problem = "is a folder, not a file"
    elif not folder and not resolved.is_file():
        problem = "is not a regular file"
    elif not os.access(resolved, os.R_OK | (os.X_OK if folder else 0)):
        problem = "cannot be read (permission denied)"
    else:
        return None
    if Path(path).is_absolute():
        return problem
    return f"{problem} (looked for {resolved}; {RELATIVE_PATHS})"
