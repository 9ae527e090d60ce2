"""What SIGTERM, SIGINT and SIGHUP do to a detkit command: stop it, with one line saying so and
exit status 128 + the signal.

During training :class:`~detkit.engine.hooks.StopOnSignal` takes them: the iteration under way
finishes, its checkpoint is saved and training ends with :class:`TrainingInterruptedError`.
Elsewhere (setting up, evaluating) they act at once:

- in a process alone (:func:`raising_on_signals`), SIGTERM and SIGHUP raise
  :class:`StoppedBySignal` where the program is, as SIGINT raises ``KeyboardInterrupt``, so
  that ``finally`` blocks run and a file being written is removed, not left behind;
- in a process of a group (:func:`ending_on_signals`), they end it as their default action
  does: it may be blocked in native code waiting for another process, and a Python handler
  would run only once that wait ends, at the distributed timeout.

A launcher that spawned its workers forwards every stop signal it receives to them
(:class:`SignalForwarder`) and reports how they ended; the workers run in sessions of their own
(:func:`start_worker_session`), so that a signal sent to the launcher's process group (Ctrl-C
in a terminal, a scheduler) reaches each of them once, through the launcher.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.process import BaseProcess

from ..utils.stop_signals import STOP_SIGNALS


class TrainingInterruptedError(Exception):
    """Training stopped on a signal after a complete iteration, once that iteration's
    checkpoint was saved: a command ends with ``exit_status``, 128 + the signal's number (143,
    130, 129) as the shell reports a process ended by it."""

    def __init__(self, signum: int, iteration: int) -> None:
        self.signum, self.iteration = signum, iteration
        self.exit_status = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name} after iteration {iteration}")


class StoppedBySignal(BaseException):
    """A signal stopped a command where no checkpoint is saved (setting up, evaluating, or a
    second signal). A ``BaseException``, as ``KeyboardInterrupt``, so that no ``except
    Exception`` takes it for an error of the code it interrupted."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_status = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


def stop_signal(error: BaseException) -> int | None:
    """The signal that ``error`` reports (``KeyboardInterrupt`` is SIGINT's), else None."""
    if isinstance(error, StoppedBySignal):
        return error.signum
    return signal.SIGINT if isinstance(error, KeyboardInterrupt) else None


def _raise_stopped(signum: int, frame: object) -> None:
    raise StoppedBySignal(signum)


_RAISING = {
    signal.SIGTERM: _raise_stopped,
    signal.SIGHUP: _raise_stopped,
    signal.SIGINT: signal.default_int_handler,
}
_ENDING = dict.fromkeys(STOP_SIGNALS, signal.SIG_DFL)


@contextlib.contextmanager
def raising_on_signals() -> Iterator[None]:
    """Within the block SIGTERM and SIGHUP raise :class:`StoppedBySignal` and SIGINT
    ``KeyboardInterrupt``: for a process alone."""
    with _handling(_RAISING):
        yield


@contextlib.contextmanager
def ending_on_signals() -> Iterator[None]:
    """Within the block the stop signals end the process (their default action): for a
    process of a group, which native waits for the others could keep from a Python handler."""
    with _handling(_ENDING):
        yield


@contextlib.contextmanager
def _handling(handlers: dict[int, Callable | int]) -> Iterator[None]:
    """Sets ``handlers`` within the block, then restores those before. Handlers belong to the
    main thread: elsewhere the block changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    try:
        yield
    finally:
        restore_handlers(previous)


def restore_handlers(previous: dict[int, object]) -> None:
    """Puts back the handlers ``signal.signal`` returned (None, set outside Python: the
    default)."""
    for signum, handler in previous.items():
        signal.signal(signum, signal.SIG_DFL if handler is None else handler)


class SignalForwarder:
    """Within its ``with`` block, sends every stop signal this process receives on to the
    processes given to :meth:`forward_to` that are still running, instead of acting on it.

    Until then the stop signals are blocked, and processes started meanwhile inherit that: a
    signal that reaches the launcher's group while a worker starts stays pending in the worker,
    merges with the copy the launcher forwards (a signal is pending once) and is delivered when
    the worker, in its own session, unblocks it (:func:`start_worker_session`).
    """

    def __init__(self) -> None:
        self._processes: list[BaseProcess] = []
        self._previous: dict[int, object] = {}
        self._mask: set[int] = set()
        self._active = threading.current_thread() is threading.main_thread()

    def __enter__(self) -> SignalForwarder:
        if self._active:
            self._mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            self._previous = {s: signal.signal(s, self._forward) for s in STOP_SIGNALS}
        return self

    def forward_to(self, processes: Sequence[BaseProcess]) -> None:
        """Forwards from now on to ``processes`` (and delivers a signal that waited)."""
        self._processes = list(processes)
        if self._active:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._mask)

    def _forward(self, signum: int, frame: object) -> None:
        for process in self._processes:
            if process.exitcode is None:  # running, so its pid is still its own
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signum)

    def __exit__(self, *exc_info: object) -> None:
        if self._active:
            restore_handlers(self._previous)
            signal.pthread_sigmask(signal.SIG_SETMASK, self._mask)


def start_worker_session() -> None:
    """In a worker started under a :class:`SignalForwarder`: leaves the launcher's session, so
    that a signal to the launcher's group reaches this process only once, through the
    launcher; lets the stop signals end it (:func:`ending_on_signals`) and unblocks them."""
    os.setsid()
    for signum, handler in _ENDING.items():
        signal.signal(signum, handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def ended_by(exit_code: int | None) -> int | None:
    """The stop signal that ended a process with ``exit_code`` (``multiprocessing``'s: minus
    the signal), else None."""
    if exit_code is not None and exit_code < 0 and -exit_code in STOP_SIGNALS:
        return -exit_code
    return None
