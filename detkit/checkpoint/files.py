"""Checkpoint files: reading one safely, and finding a run's checkpoints and the newest intact
one, which ``--resume`` continues, read once (:class:`ResumePoint`)."""

from __future__ import annotations

import logging
import os
import pickle
import re
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils.errors import UserError
from ..utils.file_io import interrupted_writes
from ..utils.plain_pickle import PlainDataUnpickler, RefusedGlobalError

logger = logging.getLogger("detkit.checkpoint")

# model_0000199.pth: the checkpoint written after iteration 199 (its 0-based index)
PERIODIC_NAME = re.compile(r"model_\d{7}\.pth")
# the name of a checkpoint detkit writes (model_0000199.pth, model_final.pth, …): a plain name
# in its folder, neither a path nor hidden
CHECKPOINT_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*\.pth")
# the start of torch's legacy (not zip) format: its magic number, pickled with protocol 2
_TORCH_LEGACY_START = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
# the pickle protocols (2-5) whose files start with PROTO <n>
_PICKLE_STARTS = tuple(bytes([0x80, protocol]) for protocol in range(2, 6))
# torch's wording when weights_only=True refuses a pickled object, as opposed to a broken file
_UNSAFE_PICKLE = re.compile(r"was not an allowed global|is blocked|must be \S+ to load")


class CheckpointFileError(UserError, ValueError):
    """A file that is not a usable checkpoint: a directory, empty, truncated or corrupt, or
    holding weights that are not finite. The message is ``"<path>: <problem>; <fix>"``."""

    def __init__(self, path: str, problem: str, fix: str) -> None:
        super().__init__(f"{path}: {problem}; {fix}")
        self.path, self.problem = path, problem


class CheckpointNotFoundError(UserError, FileNotFoundError):
    """A checkpoint path that names no file."""


class UnsafeCheckpointError(UserError, RuntimeError):
    """A file that only arbitrary unpickling, which can run code, would load."""


def load_checkpoint_file(path: str, *, weights_only: bool = True, mmap: bool = False) -> Any:
    """``torch.load`` of the local file ``path`` on the CPU, its problems as one-line errors:
    :class:`CheckpointNotFoundError`, :class:`CheckpointFileError` (a directory, an empty,
    truncated or corrupt file), :class:`UnsafeCheckpointError` (it needs arbitrary unpickling
    and ``weights_only``).

    A plain pickle (protocol 2-5, as detectron2's model zoo ``.pkl`` files), which torch cannot
    read, is read by :func:`load_plain_pickle` instead."""
    if os.path.isdir(path):
        raise CheckpointFileError(path, "is a directory, not a checkpoint file", _name_a_file(path))
    if not os.path.isfile(path):
        raise CheckpointNotFoundError(f"checkpoint not found: {path}")
    if os.path.getsize(path) == 0:
        raise CheckpointFileError(
            path,
            "is empty (0 bytes), not a checkpoint",
            "was its copy interrupted? use another one",
        )
    if _is_plain_pickle(path):
        return load_plain_pickle(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=mmap)
    except pickle.UnpicklingError as error:
        if _UNSAFE_PICKLE.search(str(error)):
            raise UnsafeCheckpointError(
                f"{path} needs arbitrary unpickling to load, which can run code; if you trust "
                "it, load it with DetectionCheckpointer(model, allow_unsafe_pickle=True)"
            ) from error
        raise _unreadable(path, error) from None
    except MemoryError:
        raise
    except Exception as error:  # a broken file makes the unpickler fail in any way
        if isinstance(error, RuntimeError) and "alloc" in str(error).lower():
            raise  # out of memory, not a broken file
        raise _unreadable(path, error) from None


def _is_plain_pickle(path: str) -> bool:
    """Whether ``path`` is a pickle (protocol 2-5) rather than one of torch's formats."""
    with open(path, "rb") as file:
        start = file.read(len(_TORCH_LEGACY_START))
    return start.startswith(_PICKLE_STARTS) and not start.startswith(_TORCH_LEGACY_START)


def load_plain_pickle(path: str) -> Any:
    """The plain data pickled in ``path`` (detectron2's ``.pkl`` weights: ``{"model": {name:
    array}, "__author__": …}``), read without running code (:class:`PlainDataUnpickler`), its
    numeric numpy arrays as tensors. A pickle naming anything else is refused
    (:class:`UnsafeCheckpointError`), a broken one reported (:class:`CheckpointFileError`)."""
    try:
        with open(path, "rb") as file:
            data = PlainDataUnpickler(file).load()
    except RefusedGlobalError as error:
        raise UnsafeCheckpointError(
            f"{path}: {error}: a pickled weights file may hold only plain data (containers, "
            "numbers, strings, numpy arrays); unpickling this one could run code"
        ) from None
    except MemoryError:
        raise
    except Exception as error:  # a broken file makes the unpickler fail in any way
        raise _unreadable(path, error) from None
    return _arrays_as_tensors(data)


def _arrays_as_tensors(data: Any) -> Any:
    """``data`` with the numeric numpy arrays of its (nested) dicts as tensors."""
    if isinstance(data, dict):
        return {key: _arrays_as_tensors(value) for key, value in data.items()}
    if isinstance(data, np.ndarray) and data.dtype.kind in "biufc":
        return torch.tensor(data)
    return data


def _unreadable(path: str, error: Exception) -> CheckpointFileError:
    return CheckpointFileError(
        path,
        f"is not a readable checkpoint: truncated or corrupt ({_reason(error)})",
        "use another checkpoint",
    )


def _reason(error: Exception) -> str:
    """The gist of torch's error, in a few words: its first sentence, without the advice on
    ``weights_only`` torch wraps around it."""
    message = str(error).split("WeightsUnpickler error:", 1)[-1]
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(("Weights only", "Check the doc"))]
    gist = lines[0].split(". ")[0][:100] if lines else ""
    return f"{type(error).__name__}: {gist}" if gist else type(error).__name__


def _name_a_file(folder: str) -> str:
    try:
        tagged = last_checkpoint(folder)
    except CheckpointFileError:  # a tag naming no checkpoint of its folder names no example
        tagged = None
    if tagged is not None:
        return f"name a file in it, e.g. its newest checkpoint {tagged}"
    return "name a .pth file in it, e.g. model_final.pth"


def read_training_state(path: str) -> dict[str, Any]:
    """The ``iteration`` and ``seed`` a checkpoint records (those it has), read cheaply.

    The file is memory-mapped, so only its small pickled index is read, not its tensors: a run
    can settle where it starts before it builds anything.
    """
    data = load_checkpoint_file(path, mmap=os.path.isfile(path) and zipfile.is_zipfile(path))
    return _training_state(data)


def _training_state(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        return {}
    return {key: data[key] for key in ("iteration", "seed") if key in data}


def read_intact_checkpoint(path: str) -> Any:
    """The content of the local checkpoint file ``path`` (:func:`load_checkpoint_file`), once
    every record of it has passed its checksum: torch does not check them, so a flipped byte in
    a tensor would load silently. One read to check, one to load; the errors of
    :func:`load_checkpoint_file`, and :class:`CheckpointFileError` naming a record that fails."""
    _check_checksums(path)
    return load_checkpoint_file(path)


def _check_checksums(path: str) -> None:
    """Raises :class:`CheckpointFileError` when a record of the zip file ``path`` fails its
    checksum (reads the whole file); a file that is not a zip file is left to the loader."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
    except zipfile.BadZipFile as error:
        raise _unreadable(path, error) from None
    if broken is not None:
        raise CheckpointFileError(
            path, f"is corrupt (its record {broken} fails its checksum)", "use another checkpoint"
        )


class ResumePoint:
    """The checkpoint ``--resume`` continues, as :func:`read_resume_point` read it: its
    ``path``, the ``iteration`` and ``seed`` it records (``training_state``), the newer
    checkpoints skipped as broken (``skipped``) and, when it was read in full, its content.

    The checkpointer takes that content once (:meth:`take_content`), so that the file settling
    where a run starts is the file loaded, read once, and its tensors are not kept for the
    length of the run.
    """

    def __init__(
        self,
        path: str,
        training_state: dict[str, Any] | None = None,
        skipped: Sequence[str] = (),
        content: Any = None,
    ) -> None:
        self.path = path
        self.training_state = dict(training_state or {})
        self.skipped = tuple(skipped)
        self._content = content

    def take_content(self) -> Any:
        """The checkpoint's content: the one read with this point, handed over once; read in
        full again (:func:`read_intact_checkpoint`) when it was taken before or never read."""
        content, self._content = self._content, None
        return read_intact_checkpoint(self.path) if content is None else content

    def warn_skipped(self) -> None:
        """Logs the newer checkpoints skipped as broken, if any (a warning)."""
        if self.skipped:
            logger.warning(_skipped_message(self.skipped, self.path))


def read_resume_point(save_dir: str, *, full: bool = True) -> ResumePoint | None:
    """The checkpoint ``--resume`` continues (the one :func:`resumable_checkpoint` names), read
    once; None when ``save_dir`` holds no checkpoint.

    ``full``: read in full (:func:`read_intact_checkpoint`), every record's checksum verified,
    the content kept in the point for the checkpointer. Otherwise only its index is read (the
    zip directory and the pickled iteration and seed, :func:`read_training_state`): a cheap look
    that finds a missing, empty, truncated or unreadable checkpoint, not a record failing its
    checksum. The newer checkpoints skipped are not logged here, as this may run before logging
    is set up, but kept in the point (:meth:`ResumePoint.warn_skipped`).
    """
    found = _newest_readable(save_dir, read_intact_checkpoint if full else read_training_state)
    if found is None:
        return None
    path, data, skipped = found
    if full:
        return ResumePoint(path, _training_state(data), skipped, data)
    return ResumePoint(path, data, skipped)


def last_checkpoint(save_dir: str) -> str | None:
    """The checkpoint ``save_dir/last_checkpoint`` names (the newest one), or None without one.

    detkit writes there the plain name of a checkpoint it saved in ``save_dir``
    (:data:`CHECKPOINT_NAME`). Anything else is refused (:class:`CheckpointFileError` naming
    the tag and what it holds): a path elsewhere would silently continue another run's state.
    """
    tag = os.path.join(save_dir, "last_checkpoint")
    if not os.path.isfile(tag):
        return None
    with open(tag, "rb") as file:
        data = file.read(_TAG_BYTES)
    try:
        name = data.decode().strip()
    except UnicodeDecodeError:
        raise CheckpointFileError(
            tag, f"is not text (it starts {data[:12]!r})", _retag(save_dir)
        ) from None
    if not CHECKPOINT_NAME.fullmatch(name):
        shown = name if len(name) <= 200 else f"{name[:200]}…"
        raise CheckpointFileError(
            tag,
            f"names {shown!r}, not a checkpoint detkit wrote in {save_dir} (a plain name such "
            "as model_0000199.pth)",
            _retag(save_dir),
        )
    return os.path.join(save_dir, name)


# more than any name detkit writes into last_checkpoint
_TAG_BYTES = 4096


def _retag(save_dir: str) -> str:
    """How to repair ``save_dir``'s tag: the checkpoints it could name."""
    names = [name for name in saved_checkpoints(save_dir) if CHECKPOINT_NAME.fullmatch(name)]
    if not names:
        return "delete it, or start a new run in another OUTPUT_DIR"
    shown = ", ".join(names[-4:])
    return f"write the name of one of its checkpoints into it ({shown}) or delete it"


def saved_checkpoints(save_dir: str) -> list[str]:
    """The names of the checkpoint files in ``save_dir`` (``model_*.pth``, ``last_checkpoint``):
    what a new run would overwrite."""
    folder = Path(save_dir)
    if not folder.is_dir():
        return []
    names = [p.name for p in folder.glob("model_*.pth")] + [
        p.name for p in folder.glob("last_checkpoint")
    ]
    return sorted(names)


def resumable_checkpoint(save_dir: str, *, warn: bool = True) -> str | None:
    """The checkpoint ``--resume`` continues: the one ``last_checkpoint`` names or, when that
    one is missing, empty, truncated or corrupt, the newest intact ``model_XXXXXXX.pth`` (with a
    warning naming what was skipped); None when ``save_dir`` holds no checkpoint. Checks each
    candidate as :func:`checkpoint_problem` does; :func:`read_resume_point` also loads it.

    Raises :class:`CheckpointFileError` when it holds checkpoints but none is intact: starting
    afresh instead would silently throw the run away.
    """
    found = _newest_readable(save_dir, _check_intact)
    if found is None:
        return None
    path, _, skipped = found
    if skipped and warn:
        logger.warning(_skipped_message(skipped, path))
    return path


def _newest_readable(
    save_dir: str, read: Callable[[str], Any]
) -> tuple[str, Any, list[str]] | None:
    """The newest checkpoint of ``save_dir`` that ``read`` reads without a problem: its path,
    what ``read`` returned, and why each newer one was skipped; None when there is none to
    resume. Raises :class:`CheckpointFileError` when there are some but none can be read."""
    skipped = []
    for path in _resume_candidates(save_dir):
        try:
            return path, read(path), skipped
        except _UNUSABLE as error:
            skipped.append(f"skipped {path}, which {_problem(error)}")
    if skipped:
        raise CheckpointFileError(
            save_dir,
            f"--resume finds no intact checkpoint ({'; '.join(skipped)})",
            "put an intact one back, or start a new run in another OUTPUT_DIR",
        )
    return None


# what makes a checkpoint file unusable (as opposed to, say, memory running out)
_UNUSABLE = (CheckpointFileError, UnsafeCheckpointError, zipfile.BadZipFile, OSError)


def _problem(error: Exception) -> str:
    if isinstance(error, CheckpointNotFoundError):
        return "does not exist"
    return getattr(error, "problem", str(error))


def _skipped_message(skipped: Sequence[str], path: str) -> str:
    return f"--resume: {'; '.join(skipped)}; resuming from {path}, the newest intact checkpoint"


def _resume_candidates(save_dir: str) -> list[str]:
    """The tagged checkpoint, then the periodic ones, newest first (their names sort by
    iteration)."""
    tagged = last_checkpoint(save_dir)
    folder = Path(save_dir)
    periodic = [p.name for p in folder.glob("model_*.pth") if PERIODIC_NAME.fullmatch(p.name)]
    candidates = [os.path.join(save_dir, name) for name in sorted(periodic, reverse=True)]
    if tagged is None:
        return candidates
    return [tagged, *(path for path in candidates if path != tagged)]


def checkpoint_problem(path: str) -> str | None:
    """Why the checkpoint ``path`` cannot be resumed (missing, empty, truncated, a record whose
    checksum fails), or None when it is intact. Reads the whole file once, loads no tensor."""
    try:
        _check_intact(path)
    except _UNUSABLE as error:
        return f"which {_problem(error)}"
    return None


def _check_intact(path: str) -> None:
    _check_checksums(path)
    read_training_state(path)


def remove_interrupted_saves(save_dir: str) -> list[Path]:
    """Deletes the temporary files a save killed mid-write left in ``save_dir`` (SIGKILL gives
    it no time to clean up); returns them. Call it only where no save is under way."""
    removed = interrupted_writes(save_dir, "model_*.pth") + interrupted_writes(
        save_dir, "last_checkpoint"
    )
    for path in removed:
        path.unlink(missing_ok=True)
    if removed:
        logger.info(
            f"Removed {len(removed)} temporary file(s) of interrupted saves in {save_dir}: "
            + ", ".join(p.name for p in removed)
        )
    return removed
