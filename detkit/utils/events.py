"""Training metrics: the per-iteration event storage and the writers that report it.

The trainer and its hooks record scalars into the current :class:`EventStorage`; every
``period`` iterations a writer turns what is new into console lines (:class:`ConsoleWriter`),
``metrics.json`` lines (:class:`JSONWriter`) or TensorBoard events (:class:`TensorboardWriter`).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import resource
from pathlib import Path
from typing import IO, Any

import torch
from fvcore.common.history_buffer import HistoryBuffer

from .file_io import strict_json

_STORAGE_STACK: list[EventStorage] = []
logger = logging.getLogger(__name__)


def get_event_storage() -> EventStorage:
    """The storage of the innermost ``with EventStorage(...)`` block (the running trainer's)."""
    if not _STORAGE_STACK:
        raise RuntimeError("get_event_storage() is only available inside `with EventStorage()`")
    return _STORAGE_STACK[-1]


def current_event_storage() -> EventStorage | None:
    """The innermost storage, or ``None`` outside any (a model run without a trainer)."""
    return _STORAGE_STACK[-1] if _STORAGE_STACK else None


class EventStorage:
    """Named scalar histories indexed by iteration.

    A scalar recorded with ``smoothing_hint=True`` (losses, times) is reported as its median over
    the writer's window; one with ``smoothing_hint=False`` (lr, AP) as recorded.
    """

    def __init__(self, start_iter: int = 0) -> None:
        self.iter = start_iter
        self._histories: dict[str, HistoryBuffer] = {}
        self._smoothing_hints: dict[str, bool] = {}
        self._latest: dict[str, tuple[float, int]] = {}

    def put_scalar(self, name: str, value: float, smoothing_hint: bool = True) -> None:
        value = float(value)
        self._histories.setdefault(name, HistoryBuffer()).update(value, self.iter)
        self._latest[name] = (value, self.iter)
        previous = self._smoothing_hints.setdefault(name, smoothing_hint)
        if previous != smoothing_hint:
            raise ValueError(f"scalar {name!r} was recorded with a different smoothing_hint")

    def put_scalars(self, *, smoothing_hint: bool = True, **values: float) -> None:
        for name, value in values.items():
            self.put_scalar(name, value, smoothing_hint)

    def history(self, name: str) -> HistoryBuffer:
        if name not in self._histories:
            raise KeyError(f"no scalar named {name!r} was recorded")
        return self._histories[name]

    def latest(self) -> dict[str, tuple[float, int]]:
        """``{name: (value, iteration)}`` of the most recent record of every scalar."""
        return dict(self._latest)

    def latest_with_smoothing(self, window: int) -> dict[str, tuple[float, int]]:
        """Like :meth:`latest`, smoothed scalars as their median over the last ``window``."""
        return {
            name: (
                self._histories[name].median(window) if self._smoothing_hints[name] else value,
                iteration,
            )
            for name, (value, iteration) in self._latest.items()
        }

    def __enter__(self) -> EventStorage:
        _STORAGE_STACK.append(self)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        assert _STORAGE_STACK[-1] is self
        _STORAGE_STACK.pop()


class EventWriter:
    """Reports the current storage; ``write`` is called periodically, ``close`` once at the end."""

    def write(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Releases files; nothing to release by default."""


class JSONWriter(EventWriter):
    """Appends one JSON object per iteration (``{"iteration": i, name: value, …}``) to a file.

    Appending lets a resumed run continue the same ``metrics.json``; each line is flushed as it
    is written, so a crash loses at most the iterations since the last write. A last line that
    a run killed while writing it left cut short is dropped first (with a warning): the next
    line would run into it, spoiling both. :func:`read_metrics` reads the file.
    """

    def __init__(self, json_file: str | Path, window: int = 20) -> None:
        self._file = open(json_file, "a+b")  # noqa: SIM115  (kept open across writes)
        _drop_cut_line(self._file, json_file)
        self._window = window
        self._last_written = -1

    def write(self) -> None:
        storage = get_event_storage()
        by_iteration: dict[int, dict[str, float]] = {}
        for name, (value, iteration) in storage.latest_with_smoothing(self._window).items():
            if iteration > self._last_written:
                by_iteration.setdefault(iteration, {})[name] = value
        for iteration in sorted(by_iteration):
            line = strict_json({"iteration": iteration, **by_iteration[iteration]})
            self._file.write(f"{line}\n".encode())
        self._file.flush()
        if by_iteration:
            self._last_written = max(by_iteration)

    def close(self) -> None:
        self._file.close()


# how much of metrics.json is read at a time, back from its end, to find its last newline
_BLOCK_BYTES = 1 << 16


def _drop_cut_line(file: IO[bytes], name: str | Path) -> None:
    """Truncates ``file`` (opened for appending) after its last complete line."""
    size = file.seek(0, os.SEEK_END)
    end = size
    while end > 0:  # back from the end, a block at a time, to the last newline
        start = max(end - _BLOCK_BYTES, 0)
        file.seek(start)
        newline = file.read(end - start).rfind(b"\n")
        if newline >= 0:
            end = start + newline + 1
            break
        end = start
    if end == size:
        return
    file.seek(end)
    cut = file.read(200).decode(errors="replace")
    logger.warning(
        f"{name}: its last line is cut short (a run stopped while writing it) and is dropped "
        f"({size - end} bytes: {cut!r})"
    )
    file.truncate(end)


def read_metrics(json_file: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.json`` that :class:`JSONWriter` wrote, one per line. A line
    that is not a JSON object (cut short by a killed run, in a file an older detkit appended
    to) is skipped with a warning naming the file and the line."""
    records = []
    text = Path(json_file).read_text(errors="replace")
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            logger.warning(
                f"{json_file}:{number}: not a JSON object, skipped (cut short by a run stopped "
                f"while writing it?): {line[:80]!r}"
            )
    return records


class TensorboardWriter(EventWriter):
    """Writes every new scalar as a TensorBoard event under ``log_dir``."""

    def __init__(self, log_dir: str | Path, window: int = 20) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(str(log_dir))
        self._window = window
        self._last_written = -1

    def write(self) -> None:
        newest = self._last_written
        for name, (value, iteration) in (
            get_event_storage().latest_with_smoothing(self._window).items()
        ):
            if iteration > self._last_written:
                self._writer.add_scalar(name, value, iteration)
                newest = max(newest, iteration)
        self._writer.flush()
        self._last_written = newest

    def close(self) -> None:
        self._writer.close()


class ConsoleWriter(EventWriter):
    """Logs one line: ETA, iteration, every loss, the box head's accuracies, lr, time per
    iteration, data time, memory."""

    def __init__(self, max_iter: int, window: int = 20) -> None:
        self._max_iter = max_iter
        self._window = window
        self._logger = logging.getLogger("detkit.engine")
        self._last_written = -1

    def write(self) -> None:
        storage = get_event_storage()
        iteration = storage.iter
        if iteration <= self._last_written or iteration >= self._max_iter:
            return  # nothing new: e.g. the call after the last iteration
        self._last_written = iteration
        latest = storage.latest()
        losses = "  ".join(
            f"{name}: {storage.history(name).median(self._window):.4g}"
            for name in sorted(latest)
            if "loss" in name or name.startswith("fast_rcnn/")
        )
        parts = [f"iter: {iteration + 1}/{self._max_iter}", losses]
        if "time" in latest:
            seconds = storage.history("time").median(self._window)
            remaining = seconds * (self._max_iter - iteration - 1)
            parts.insert(0, f"eta: {datetime.timedelta(seconds=round(remaining))}")
            parts.append(f"time: {seconds:.4f} s/it")
        if "data_time" in latest:
            parts.append(f"data_time: {storage.history('data_time').median(self._window):.4f}")
        if "lr" in latest:
            parts.append(f"lr: {latest['lr'][0]:.5g}")
        parts.append(f"max_mem: {_max_memory_mb():.0f}M")
        self._logger.info("  ".join(part for part in parts if part))


def _max_memory_mb() -> float:
    """Peak GPU memory allocated by torch, or without a GPU the process's peak resident size."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
