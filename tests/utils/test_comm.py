"""detkit.utils.comm.main_process_first: rank 0, then each other machine's first process, then
the rest, so that files made on first use are made once per machine."""

from __future__ import annotations

import threading
import time

import pytest

from detkit.utils import comm


def test_each_stage_waits_for_the_one_before(monkeypatch: pytest.MonkeyPatch) -> None:
    # four processes on two machines, as threads: (rank, local rank)
    processes = [(0, 0), (1, 1), (2, 0), (3, 1)]
    barrier = threading.Barrier(len(processes), timeout=10)
    who = threading.local()
    order: list[int] = []
    lock = threading.Lock()
    monkeypatch.setattr(comm, "get_rank", lambda: who.rank)
    monkeypatch.setattr(comm, "get_local_rank", lambda: who.local_rank)
    monkeypatch.setattr(comm, "synchronize", barrier.wait)

    def process(rank: int, local_rank: int) -> None:
        who.rank, who.local_rank = rank, local_rank
        with comm.main_process_first():
            if local_rank == 0:
                time.sleep(0.3)  # a slow conversion: the machine's others must wait for it
            with lock:
                order.append(rank)

    threads = [threading.Thread(target=process, args=p) for p in processes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert order[:2] == [0, 2] and sorted(order[2:]) == [1, 3]


def test_alone_it_just_runs_the_block() -> None:
    ran = []
    with comm.main_process_first():
        ran.append(1)
    assert ran == [1]
