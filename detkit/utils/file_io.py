"""Writing files so that a crash never leaves a half-written one behind; detkit's iopath
``PathManager``, through which checkpoints and weights are read."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from iopath.common.file_io import HTTPURLHandler, PathManagerFactory

# A path handler registered here (PathManager.register_handler(handler)) makes its paths usable
# wherever detkit reads a checkpoint or weights (MODEL.WEIGHTS), as in detectron2.
PathManager = PathManagerFactory.get("detkit")
PathManager.register_handler(HTTPURLHandler())


def write_atomically(path: str | Path, write: Callable[[IO[bytes]], object]) -> None:
    """Creates or replaces ``path`` with what ``write(file)`` writes to a binary file.

    The bytes go to a temporary file in the same folder, are flushed to disk, and the file is
    renamed over ``path``: readers see the old file or the complete new one, never a part.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp's 0600 would hide the file from others
        with os.fdopen(descriptor, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def interrupted_writes(folder: str | Path, pattern: str = "*") -> list[Path]:
    """The temporary files :func:`write_atomically` left in ``folder`` when it was killed
    (SIGKILL, power loss) while writing a file whose name matches ``pattern``."""
    return sorted(Path(folder).glob(f".{pattern}.*"))


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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomically(path: str | Path, data: bytes | str) -> None:
    """``path`` holds ``data`` (text is UTF-8 encoded), written with :func:`write_atomically`."""
    payload = data.encode() if isinstance(data, str) else data
    write_atomically(path, lambda file: file.write(payload))
