"""The safe way to load an exported program: the archive checked first, then read by torch."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import torch
from torch.export import ExportedProgram

from .archive import ExportedProgramError, check_archive


def load(path: str | Path) -> ExportedProgram:
    """The exported program in the ``.pt2`` file ``path`` (``load(path).module()(image,
    boxes)`` runs it), after :func:`~detkit.export.archive.check_archive` found nothing in
    it that torch would unpickle, run or evaluate, and with the libraries of its operators
    imported. Refused with :class:`ExportedProgramError` naming the file (and the entry at
    fault): a missing or non-regular file, any archive but what ``detkit.export.save``
    writes, one torch cannot read. Unlike ``torch.export.load``, never runs code from the
    file."""
    data = _read_regular_file(Path(path))
    check_archive(data, str(path))
    try:  # torch reads the very bytes that were checked
        return torch.export.load(io.BytesIO(data))
    except Exception as error:  # torch's reader raises many types; the file is at fault
        reason = f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0]}"
        raise ExportedProgramError(f"{path}: torch cannot read the program ({reason})") from error


def _read_regular_file(path: Path) -> bytes:
    """The bytes of ``path``; a FIFO or device would hang or never end, so only a regular
    file is read."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ExportedProgramError(f"{path}: not a regular file, so not an exported program")
        return path.read_bytes()
    except OSError as error:
        raise ExportedProgramError(f"{path}: cannot read it: {error.strerror}") from error
