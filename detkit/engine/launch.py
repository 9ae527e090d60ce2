"""Starting a job as one process per GPU (or per CPU worker) on one or several machines, or
joining the processes that ``torchrun`` started.

Two rules keep a distributed job from failing silently or hanging: a process's uncaught error is
logged by rank 0, into its ``log.txt``, and fails the launch; and every process waits at most
:func:`dist_timeout` for the others (to join, or in a collective), so a job whose machine died
or froze ends instead of waiting for torch's 30-minute default.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import math
import os
import socket
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.queues import SimpleQueue

import torch
from torch import distributed as dist
from torch import multiprocessing
from torch.multiprocessing.spawn import ProcessException

from ..config import ConfigError
from ..utils import comm
from . import signals
from .signals import StoppedBySignal, TrainingInterruptedError

logger = logging.getLogger("detkit.engine")

DEFAULT_TIMEOUT = datetime.timedelta(minutes=10)
TIMEOUT_VARIABLE = "DETKIT_DIST_TIMEOUT_S"
TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
_REPORT_WAIT = datetime.timedelta(seconds=10)  # a failing rank waits this long for rank 0's log
_POLL_S = 0.2
# when a spawned process ends in error, the others' time to end by themselves (a signal the
# launcher forwarded ends them all at once) before it terminates them
_GRACE_S = 5.0


class ProcessFailedError(RuntimeError):
    """A process of a launch failed; the message names its rank and carries its error."""


@dataclass(frozen=True)
class ProcessRanks:
    """A process's place in a job: its rank, its index on its machine, and their counts."""

    rank: int
    local_rank: int
    world_size: int
    local_world_size: int


def dist_timeout() -> datetime.timedelta:
    """How long a process waits for the others, to join or in a collective, before failing:
    ``DETKIT_DIST_TIMEOUT_S`` seconds, or 10 minutes when it is unset."""
    value = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    if not value:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(
            f"{TIMEOUT_VARIABLE}={value!r} is not a positive number of seconds; set it to how "
            f"long a process waits for the others, or unset it for "
            f"{DEFAULT_TIMEOUT.total_seconds():g}"
        )
    return datetime.timedelta(seconds=seconds)


def torchrun_process() -> ProcessRanks | None:
    """This process's ranks when torchrun started it (``RANK`` or ``WORLD_SIZE`` set), else
    None; refuses an environment that names some of torchrun's variables but not all, or ranks
    outside the job (``RANK`` ≥ ``WORLD_SIZE``), before any work."""
    if "RANK" not in os.environ and "WORLD_SIZE" not in os.environ:
        return None
    missing = [name for name in TORCHRUN_VARIABLES if not os.environ.get(name)]
    if missing:
        raise ConfigError(
            f"RANK or WORLD_SIZE is set, as torchrun sets them, but {', '.join(missing)} is not: "
            f"start the job with torchrun, or unset RANK and WORLD_SIZE to use --num-gpus"
        )
    try:
        ranks = [int(os.environ[name]) for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE")]
        local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", ranks[2]))
    except ValueError as error:
        raise ConfigError(f"torchrun's variables must be integers: {error}") from None
    process = ProcessRanks(*ranks, local_world_size)
    _check_ranks(process)
    return process


def _check_ranks(process: ProcessRanks) -> None:
    """Refuses ranks that name no process of the job: it could never form."""
    problems = []
    if process.world_size < 1:
        problems.append(f"WORLD_SIZE={process.world_size} is not a number of processes")
    elif not 0 <= process.rank < process.world_size:
        problems.append(
            f"RANK={process.rank} is not below WORLD_SIZE={process.world_size} (ranks count from 0)"
        )
    if not 0 <= process.local_rank < process.local_world_size:
        problems.append(
            f"LOCAL_RANK={process.local_rank} is not below "
            f"LOCAL_WORLD_SIZE={process.local_world_size}"
        )
    if problems:
        raise ConfigError(
            "; ".join(problems) + ": torchrun's variables do not describe a process of the job"
        )


def launch(
    main_func: Callable[..., object],
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str | None = "auto",
    args: Sequence = (),
    backend: str = "auto",
    timeout: datetime.timedelta | None = None,
) -> None:
    """Runs ``main_func(*args)`` in ``num_gpus_per_machine`` processes on each of ``num_machines``.

    One process needs no process group and runs ``main_func`` here. Otherwise this machine's
    processes join one torch.distributed group at ``dist_url`` (``tcp://HOST:PORT`` of machine
    0; ``auto`` picks a free local port, one machine only): with one process per machine that
    is this one, else this machine spawns them.
    Under torchrun (:func:`torchrun_process`) the processes exist already: this one joins
    theirs through ``env://`` and runs ``main_func``, and the process-count arguments must be
    left at their defaults. ``backend`` ``auto`` is NCCL, one process per GPU, when CUDA is
    available and gloo on a CPU-only machine, where the processes are CPU workers sharing its
    cores. ``timeout`` (default :func:`dist_timeout`) bounds every wait for the other
    processes. If any process fails, rank 0 logs its error, the others are stopped and
    :class:`ProcessFailedError` names its rank here, so the job exits non-zero.
    """
    timeout = timeout or dist_timeout()
    torchrun = torchrun_process()
    if torchrun is not None:
        _check_torchrun_options(num_gpus_per_machine, num_machines, machine_rank, dist_url)
        if torchrun.world_size == 1:
            main_func(*args)
            return
        _run_in_group(main_func, tuple(args), "env://", torchrun, _backend(backend), timeout)
        return
    world_size = num_machines * num_gpus_per_machine
    if num_gpus_per_machine < 1 or num_machines < 1 or not 0 <= machine_rank < num_machines:
        raise ValueError(
            f"launch: need num_gpus_per_machine >= 1 and 0 <= machine_rank < num_machines, got "
            f"{num_gpus_per_machine}, {machine_rank}, {num_machines}"
        )
    if world_size == 1:
        main_func(*args)
        return
    backend = _backend(backend)
    if backend == "nccl" and num_gpus_per_machine > torch.cuda.device_count():
        raise ValueError(
            f"launch: {num_gpus_per_machine} processes per machine but only "
            f"{torch.cuda.device_count()} GPUs here"
        )
    if dist_url in (None, "auto"):
        if num_machines > 1:
            raise ValueError("launch: with several machines, --dist-url must name machine 0")
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    _start_machine(
        main_func,
        tuple(args),
        dist_url,
        machine_rank,
        num_gpus_per_machine,
        world_size,
        backend,
        timeout,
    )


def _start_machine(
    main_func: Callable[..., object],
    args: tuple,
    dist_url: str,
    machine_rank: int,
    num_gpus_per_machine: int,
    world_size: int,
    backend: str,
    timeout: datetime.timedelta,
) -> None:
    """Runs this machine's processes: this one when it has one, else spawned ones."""
    worker_args = (
        main_func,
        args,
        dist_url,
        machine_rank,
        num_gpus_per_machine,
        world_size,
        backend,
        timeout,
    )
    if num_gpus_per_machine == 1:
        _worker(0, *worker_args)
        return
    stops = multiprocessing.get_context("spawn").SimpleQueue()
    try:
        with signals.SignalForwarder() as forwarder:
            context = multiprocessing.start_processes(
                _spawned_worker,
                nprocs=num_gpus_per_machine,
                args=(stops, *worker_args),
                daemon=False,
                start_method="spawn",
                join=False,
            )
            forwarder.forward_to(context.processes)
            while not context.join(grace_period=_GRACE_S):
                pass
    except ProcessException as error:
        signum = signals.ended_by(getattr(error, "exit_code", None))
        if signum is not None:  # where no checkpoint is saved (see detkit.engine.signals)
            raise StoppedBySignal(signum) from None
        rank = machine_rank * num_gpus_per_machine + error.error_index
        raise ProcessFailedError(
            f"rank {rank} of {world_size} exited with an error: {error}"
        ) from None
    if not stops.empty():  # every process stopped after the same iteration, rank 0 saved it
        raise TrainingInterruptedError(*stops.get())


def _find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _backend(backend: str) -> str:
    if backend == "auto":
        return "nccl" if torch.cuda.is_available() else "gloo"
    return backend


def _check_torchrun_options(
    num_gpus_per_machine: int, num_machines: int, machine_rank: int, dist_url: str | None
) -> None:
    given = (num_gpus_per_machine, num_machines, machine_rank, dist_url or "auto")
    if given != (1, 1, 0, "auto"):
        raise ConfigError(
            f"under torchrun, which starts the processes (RANK={os.environ['RANK']}, "
            f"WORLD_SIZE={os.environ['WORLD_SIZE']}), leave --num-gpus, --num-machines, "
            f"--machine-rank and --dist-url at their defaults; got {given[0]}, {given[1]}, "
            f"{given[2]}, {given[3]}: give torchrun --nproc-per-node and --nnodes instead"
        )


def _spawned_worker(local_rank: int, stops: SimpleQueue, *worker_args: object) -> None:
    """A process :func:`_start_machine` spawned, in a session of its own, whose signals its
    launcher forwards (:mod:`detkit.engine.signals`). Training stopped on a signal is no error:
    the worker tells ``stops`` (the signal and the iteration) and exits 0, so that the
    launcher waits for the others instead of terminating them."""
    signals.start_worker_session()
    try:
        _worker(local_rank, *worker_args)
    except TrainingInterruptedError as stop:
        stops.put((stop.signum, stop.iteration))


def _worker(
    local_rank: int,
    main_func: Callable[..., object],
    args: tuple,
    dist_url: str,
    machine_rank: int,
    num_gpus_per_machine: int,
    world_size: int,
    backend: str,
    timeout: datetime.timedelta,
) -> None:
    rank = machine_rank * num_gpus_per_machine + local_rank
    process = ProcessRanks(rank, local_rank, world_size, num_gpus_per_machine)
    _run_in_group(main_func, args, dist_url, process, backend, timeout)


def _run_in_group(
    main_func: Callable[..., object],
    args: tuple,
    url: str,
    process: ProcessRanks,
    backend: str,
    timeout: datetime.timedelta,
) -> None:
    """Joins the process group at ``url`` as ``process``, runs ``main_func``, leaves. Outside
    training a stop signal ends the process at once (:func:`signals.ending_on_signals`)."""
    if backend == "nccl":
        torch.cuda.set_device(process.local_rank)
    else:  # CPU workers share the machine's cores instead of each taking all of them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // process.local_world_size))
    with signals.ending_on_signals():
        _run_joined(main_func, args, _join_group(url, process, backend, timeout), process)


def _run_joined(
    main_func: Callable[..., object], args: tuple, store: dist.Store, process: ProcessRanks
) -> None:
    """Runs ``main_func`` in the group just joined; an error it raises goes to rank 0's log."""
    comm._LOCAL_RANK = process.local_rank
    reports = _FailureReports(store, process.rank, process.world_size)
    try:
        comm.synchronize()
        with reports.watching():
            main_func(*args)
    except TrainingInterruptedError:
        raise  # a requested stop, not a failure: every rank stopped after the same iteration
    except Exception as error:
        first = reports.report(error)
        if first is None:
            raise
        raise ProcessFailedError(
            f"rank {first[0]} of {process.world_size} failed first, and rank {process.rank} "
            f"stopped with it; rank {first[0]}'s error:\n{first[1]}"
        ) from error
    finally:
        dist.destroy_process_group()


def _join_group(
    url: str, process: ProcessRanks, backend: str, timeout: datetime.timedelta
) -> dist.Store:
    """Meets the other processes at ``url`` and starts the default group; returns the store."""
    try:
        store, _, _ = next(dist.rendezvous(url, process.rank, process.world_size, timeout=timeout))
    except (RuntimeError, ValueError) as error:  # torch's store errors are RuntimeErrors
        raise ProcessFailedError(
            f"rank {process.rank} of {process.world_size} could not join the others at {url} "
            f"(waited up to {timeout.total_seconds():g} s, {TIMEOUT_VARIABLE}): {error}. Start "
            "every machine with the same --dist-url and --num-machines, each with its own "
            "--machine-rank"
        ) from error
    dist.init_process_group(
        backend,
        store=dist.PrefixStore("default_pg", store),
        rank=process.rank,
        world_size=process.world_size,
        timeout=timeout,
    )
    return store


class _FailureReports:
    """Carries a process's uncaught error to rank 0, which logs it, into its ``log.txt``: the
    other ranks' consoles and ``log.txt.rank<R>`` may be on another machine, or not kept by a
    cluster.

    A failing rank puts its traceback in the group's store and waits (briefly) until rank 0
    has logged it, so that stopping the job cannot lose it; rank 0 polls the store from a
    thread, because its main thread may be blocked in a collective with the failed rank. The
    store also says which rank failed first: the others' errors are usually its consequence
    (a connection closed by the failed process).
    """

    def __init__(self, store: dist.Store, rank: int, world_size: int) -> None:
        self.store = dist.PrefixStore("detkit_failures", store)
        self.rank, self.world_size = rank, world_size
        self._logged: set[int] = set()
        self._stop = threading.Event()

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """In rank 0, logs the other ranks' reports as they come while the block runs."""
        thread = threading.Thread(target=self._watch, name="detkit-failure-reports", daemon=True)
        if self.rank == 0:
            thread.start()
        try:
            yield
        finally:
            self._stop.set()
            if thread.is_alive():
                thread.join()

    def report(self, error: BaseException) -> tuple[int, str] | None:
        """Logs ``error`` (in rank 0) or hands it to rank 0 to log; returns the rank that failed
        first and its traceback when that is another rank."""
        text = "".join(traceback.format_exception(error)).rstrip()
        try:
            self.store.set(f"rank{self.rank}", text)
            first = int(self.store.compare_set("first", "", str(self.rank)))
            if self.rank == 0:
                self._log_reports()
            else:
                self.store.add("count", 1)
                self.store.wait([f"logged{self.rank}"], _REPORT_WAIT)
            if first != self.rank:
                return first, self.store.get(f"rank{first}").decode(errors="replace")
        except RuntimeError:  # rank 0 (the store) is gone: only this console has the error
            pass
        finally:
            if self.rank == 0:
                logger.error(f"Rank 0 of {self.world_size} failed:\n{text}")
        return None

    def _watch(self) -> None:
        while not self._stop.wait(_POLL_S):
            try:
                self._log_reports()
            except RuntimeError:  # the store went away: the job is ending
                return

    def _log_reports(self) -> None:
        if self.store.add("count", 0) == len(self._logged):
            return
        for rank in range(1, self.world_size):
            if rank not in self._logged and self.store.check([f"rank{rank}"]):
                text = self.store.get(f"rank{rank}").decode(errors="replace")
                logger.error(f"Rank {rank} of {self.world_size} failed:\n{text}")
                self._logged.add(rank)
                self.store.set(f"logged{rank}", "1")
