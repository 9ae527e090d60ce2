"""Checks of the paths a command will write, made before its work: a long run must not end in an
error about where to put its result, with the result lost."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import UserError


class OutputPathError(UserError, ValueError):
    """A path a command cannot write its output to; the message names it and says why."""


def check_output_file(path: str | Path) -> Path:
    """``path`` as a :class:`Path` when a file can be written there: it is not a directory, and
    its folder exists and is writable or can be created (the missing part of the folder is
    created when the file is written). Raises :class:`OutputPathError` otherwise."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{path} is a directory; name the file to write")
    _check_writable_folder(path.parent, path)
    return path


def check_output_folder(path: str | Path) -> Path:
    """``path`` as a :class:`Path` when files can be written into it: an existing writable
    folder, or one that can be created. Raises :class:`OutputPathError` otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{path} is a file, not a folder; name a folder to write into")
    _check_writable_folder(path, path)
    return path


def _check_writable_folder(folder: Path, target: Path) -> None:
    """Raises :class:`OutputPathError` unless ``folder`` is, or can be created as, a folder in
    which files can be created: its nearest existing ancestor must be a writable folder."""
    existing = folder
    while not existing.exists() and not existing.is_symlink():
        existing = existing.parent
    if existing.is_symlink() and not existing.exists():
        raise OutputPathError(f"cannot write {target}: {existing} is a link to nothing")
    if not existing.is_dir():
        raise OutputPathError(f"cannot write {target}: {existing} is a file, not a folder")
    try:  # permissions, read-only file systems and special folders alike: try it
        descriptor, probe = tempfile.mkstemp(dir=existing, prefix=".detkit-write-check-")
    except OSError as error:
        raise OutputPathError(
            f"cannot write {target}: no file can be created in {existing} ({error.strerror})"
        ) from None
    os.close(descriptor)
    os.unlink(probe)
