"""Starting a job as one process per GPU (or per CPU worker) on one or several machines."""

from __future__ import annotations

import datetime
import logging
import os
import socket
from collections.abc import Callable, Sequence

import torch
from torch import distributed as dist
from torch import multiprocessing

from ..utils import comm

logger = logging.getLogger("detkit.engine")

DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)


def _find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(
    main_func: Callable[..., object],
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str | None = "auto",
    args: Sequence = (),
    backend: str = "auto",
    timeout: datetime.timedelta = DEFAULT_TIMEOUT,
) -> None:
    """Runs ``main_func(*args)`` in ``num_gpus_per_machine`` processes on each of ``num_machines``.

    One process needs no process group and runs ``main_func`` here. Otherwise this machine
    spawns its processes, which join one torch.distributed group at ``dist_url``
    (``tcp://HOST:PORT`` of machine 0; ``auto`` picks a free local port, one machine only).
    ``backend`` ``auto`` is NCCL, one process per GPU, when CUDA is available and gloo on a
    CPU-only machine, where the processes are CPU workers sharing its cores. If any process
    fails, the others are stopped and its error is raised here, so the job exits non-zero
    instead of hanging.
    """
    world_size = num_machines * num_gpus_per_machine
    if world_size < 1 or not 0 <= machine_rank < num_machines:
        raise ValueError(
            f"launch: need num_gpus_per_machine >= 1 and 0 <= machine_rank < num_machines, got "
            f"{num_gpus_per_machine}, {machine_rank}, {num_machines}"
        )
    if world_size == 1:
        main_func(*args)
        return
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl" and num_gpus_per_machine > torch.cuda.device_count():
        raise ValueError(
            f"launch: {num_gpus_per_machine} processes per machine but only "
            f"{torch.cuda.device_count()} GPUs here"
        )
    if dist_url in (None, "auto"):
        if num_machines > 1:
            raise ValueError("launch: with several machines, --dist-url must name machine 0")
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    multiprocessing.start_processes(
        _worker,
        nprocs=num_gpus_per_machine,
        args=(
            main_func,
            world_size,
            num_gpus_per_machine,
            machine_rank,
            backend,
            dist_url,
            tuple(args),
            timeout,
        ),
        daemon=False,
        start_method="spawn",
    )


def _worker(
    local_rank: int,
    main_func: Callable[..., object],
    world_size: int,
    num_gpus_per_machine: int,
    machine_rank: int,
    backend: str,
    dist_url: str,
    args: tuple,
    timeout: datetime.timedelta,
) -> None:
    rank = machine_rank * num_gpus_per_machine + local_rank
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    else:  # CPU workers share the machine's cores instead of each taking all of them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // num_gpus_per_machine))
    dist.init_process_group(
        backend, init_method=dist_url, world_size=world_size, rank=rank, timeout=timeout
    )
    num_machines = world_size // num_gpus_per_machine
    for machine in range(num_machines):  # every process must create every group
        ranks = list(range(machine * num_gpus_per_machine, (machine + 1) * num_gpus_per_machine))
        group = dist.new_group(ranks)
        if machine == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group
    comm.synchronize()
    try:
        main_func(*args)
    finally:
        dist.destroy_process_group()
