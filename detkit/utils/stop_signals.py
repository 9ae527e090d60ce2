"""The signals that stop a detkit run, SIGTERM, SIGINT and SIGHUP (what a run does on them:
:mod:`detkit.engine.signals`), and how a data-loading worker keeps out of their way."""

from __future__ import annotations

import os
import signal

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def leave_stop_signals_to_the_main_process(worker_id: int = 0) -> None:
    """In a data-loading worker (a ``DataLoader``'s ``worker_init_fn``): leaves the process
    group, so that a stop signal sent to the group (Ctrl-C, a scheduler) reaches only the main
    process, which stops after the iteration, instead of also killing the worker mid-batch and
    failing that iteration. A stop signal sent to the worker itself (the loader ending it, or
    the main process exiting) ends it with status 0, which the loader does not report as a
    crash, instead of the handlers inherited from the main process."""
    os.setpgid(0, 0)
    for signum in STOP_SIGNALS:
        signal.signal(signum, _exit_quietly)


def _exit_quietly(signum: int, frame: object) -> None:
    raise SystemExit(0)
