"""Logging set-up: the console for every process, ``log.txt`` for the main one."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

_FORMAT = "[%(asctime)s %(name)s %(levelname)s] %(message)s"
_DATE_FORMAT = "%m/%d %H:%M:%S"


def setup_logger(output_dir: str | Path | None = None, rank: int = 0) -> logging.Logger:
    """Configures the ``detkit`` and ``fvcore`` loggers and returns ``detkit``'s.

    Rank 0 logs INFO to the console and, when ``output_dir`` is given, DEBUG too (the model,
    pycocotools' report) to ``output_dir/log.txt``, appended so a resumed run keeps one log.
    Another rank writes what it logs to ``output_dir/log.txt.rank<R>`` (as detectron2 does),
    and to the console only errors, prefixed with its rank: the warnings every rank would give
    (a fitted schedule, a device choice) are printed once, by rank 0. Calling it again
    replaces the handlers it added before.
    """
    prefix = "" if rank == 0 else f"[rank {rank}] "
    formatter = logging.Formatter(prefix + _FORMAT, _DATE_FORMAT)
    console = logging.StreamHandler(sys.stdout)
    console.setLevel(logging.INFO if rank == 0 else logging.ERROR)
    handlers: list[logging.Handler] = [console]
    if output_dir is not None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        file_name = "log.txt" if rank == 0 else f"log.txt.rank{rank}"
        handlers.append(logging.FileHandler(Path(output_dir) / file_name))
        handlers[-1].setLevel(logging.DEBUG)
    for handler in handlers:
        handler.setFormatter(formatter)
    for name in ("detkit", "fvcore"):
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if getattr(h, "_detkit", False)]:
            logger.removeHandler(old)
            old.close()
        for handler in handlers:
            handler._detkit = True  # type: ignore[attr-defined]
            logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
    return logging.getLogger("detkit")


@contextlib.contextmanager
def restored_logging() -> Iterator[None]:
    """Undoes, on leaving, what :func:`setup_logger` did inside (handlers added, propagation,
    levels of the ``detkit`` and ``fvcore`` loggers): for running training several times in
    one process, as notebooks and tests do."""
    loggers = [logging.getLogger(name) for name in ("detkit", "fvcore")]
    saved = [(list(log.handlers), log.propagate, log.level) for log in loggers]
    try:
        yield
    finally:
        for log, (handlers, propagate, level) in zip(loggers, saved, strict=True):
            for handler in [h for h in log.handlers if h not in handlers]:
                log.removeHandler(handler)
                handler.close()
            log.propagate, log.level = propagate, level
