"""Writing files so that a crash never leaves a half-written one behind; detkit's iopath
``PathManager``, through which checkpoints and weights are read."""

from __future__ import annotations

import errno
import fnmatch
import json
import math
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from iopath.common.file_io import HTTPURLHandler, PathManagerFactory

from .errors import UserError

# A path handler registered here (PathManager.register_handler(handler)) makes its paths usable
# wherever detkit reads a checkpoint or weights (MODEL.WEIGHTS), as in detectron2.
PathManager = PathManagerFactory.get("detkit")
PathManager.register_handler(HTTPURLHandler())


# write_atomically's temporary file beside its target: ".<name>.<12 hex digits>.detkit-tmp",
# a name no other program writes, so that clean-up removes only what detkit left behind
_TEMPORARY_SUFFIX = ".detkit-tmp"
_TEMPORARY_NAME = re.compile(r"\.(?P<target>.+)\.[0-9a-f]{12}" + re.escape(_TEMPORARY_SUFFIX))
# errors that mean the disk has no room for the file: reported as such, not as a broken writer
_FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(UserError, OSError):
    """A file that could not be written for lack of space (a full disk or quota)."""


def write_atomically(path: str | Path, write: Callable[[IO[bytes]], object]) -> None:
    """Creates or replaces ``path`` with what ``write(file)`` writes to a binary file.

    The bytes go to a temporary file in the same folder, are flushed to disk, and the file is
    renamed over ``path``: readers see the old file or the complete new one, never a part. A
    full disk raises :class:`DiskFullError` naming ``path`` (torch's writer buries the cause
    under an error of its own), the old file still in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary, descriptor = _create_temporary(path)
    try:
        with os.fdopen(descriptor, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)  # gone if the error came just after the rename
        reason = _full_disk(error)
        if reason is None:
            raise
        raise DiskFullError(
            f"{path}: not written, {reason}; the files already there are unchanged: free some "
            "space and run again"
        ) from error


def _create_temporary(path: Path) -> tuple[Path, int]:
    """A new temporary file for ``path`` (named by :data:`_TEMPORARY_NAME`), opened for
    writing, with the permissions the umask gives a new file."""
    while True:
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}{_TEMPORARY_SUFFIX}")
        try:
            return temporary, os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue


def _full_disk(error: BaseException | None) -> str | None:
    """How the disk was full (``"no space left on device"``) when ``error`` or an error it was
    raised from or while handling is a full disk's ``OSError``; None otherwise."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in _FULL_DISK:
            return os.strerror(error.errno).lower()
        error = error.__cause__ or error.__context__
    return None


def interrupted_writes(folder: str | Path, pattern: str = "*") -> list[Path]:
    """The temporary files :func:`write_atomically` left in ``folder`` when it was killed
    (SIGKILL, power loss) while writing a file whose name matches ``pattern``: only names it
    gives its temporary files, never another file that merely looks alike."""
    found = []
    for path in Path(folder).glob(f".*{_TEMPORARY_SUFFIX}"):
        match = _TEMPORARY_NAME.fullmatch(path.name)
        if match and fnmatch.fnmatchcase(match["target"], pattern) and path.is_file():
            found.append(path)
    return sorted(found)


def strict_json(data: Any, indent: int | None = None) -> str:
    """``data`` as standard JSON: NaN and infinities, which Python's ``json`` would write as
    bare ``NaN`` that other parsers reject, become ``null`` (an AP that cannot be measured)."""
    return json.dumps(_finite_or_none(data), indent=indent, allow_nan=False)


def _finite_or_none(data: Any) -> Any:
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: _finite_or_none(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_finite_or_none(value) for value in data]
    return data


def write_bytes_atomically(path: str | Path, data: bytes | str) -> None:
    """``path`` holds ``data`` (text is UTF-8 encoded), written with :func:`write_atomically`."""
    payload = data.encode() if isinstance(data, str) else data
    write_atomically(path, lambda file: file.write(payload))
