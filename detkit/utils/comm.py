"""Helpers for code that runs in one process per GPU (or per CPU worker) under torch.distributed.

Every helper also works without an initialised process group, as a world of one process, so the
same code serves single-process and distributed runs.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import distributed as dist

# This process's index among those on its machine (its GPU); set by detkit.engine.launch.
_LOCAL_RANK = 0


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_local_rank() -> int:
    """The rank of this process among those on its machine (its GPU index)."""
    return _LOCAL_RANK


def is_main_process() -> bool:
    """True in rank 0, the process that writes logs, checkpoints and results."""
    return get_rank() == 0


def synchronize() -> None:
    """Waits until every process reaches this point."""
    if get_world_size() > 1:
        dist.barrier()


@functools.lru_cache
def _object_group() -> dist.ProcessGroup | None:
    """A gloo group for gathering Python objects: NCCL would move their bytes through the GPU."""
    if dist.get_backend() == "nccl":
        return dist.new_group(backend="gloo")
    return None


def all_gather(data: Any) -> list[Any]:
    """``data`` (any picklable object) from every process, in rank order, in every process."""
    if get_world_size() == 1:
        return [data]
    gathered: list[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, data, group=_object_group())
    return gathered


def gather(data: Any, dst: int = 0) -> list[Any]:
    """``data`` from every process, in rank order, in process ``dst``; ``[]`` elsewhere."""
    if get_world_size() == 1:
        return [data]
    gathered: list[Any] | None = [None] * get_world_size() if get_rank() == dst else None
    dist.gather_object(data, gathered, dst=dst, group=_object_group())
    return gathered if gathered is not None else []


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """Runs the block in the main process first, then in the first process of each other
    machine, then in the others.

    Work that caches its result on first use (generating a dataset, computing proposals,
    converting a file, :mod:`detkit.data.cache`) is then done once per machine: by rank 0 when
    the machines share a file system (the others find its result), by each machine's first
    process when each has disks of its own; the other processes read what was written. The
    waits are bounded by the process group's timeout (``DETKIT_DIST_TIMEOUT_S``).
    """
    stage = 0 if is_main_process() else 1 if get_local_rank() == 0 else 2
    for _ in range(stage):
        synchronize()
    yield
    for _ in range(2 - stage):
        synchronize()


def shared_random_seed() -> int:
    """A random seed drawn in rank 0 and the same in every process."""
    seed = int(np.random.SeedSequence().entropy % 2**31)
    return all_gather(seed)[0]


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copies ``module``'s buffers (e.g. BatchNorm statistics) from process ``src`` to all.

    DistributedDataParallel keeps parameters equal, but each process's last forward pass
    updates its buffers from its own images; evaluating or saving needs one model.
    """
    if get_world_size() == 1:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src)


def reduce_dict(values: dict[str, torch.Tensor], average: bool = True) -> dict[str, torch.Tensor]:
    """Scalar tensors summed (or averaged) over all processes, the result in every process."""
    world_size = get_world_size()
    if world_size == 1:
        return values
    names = sorted(values)
    stacked = torch.stack([values[name].detach() for name in names])
    dist.all_reduce(stacked)
    if average:
        stacked /= world_size
    return dict(zip(names, stacked, strict=True))
