"""Distributed runs: a failing rank is named, a dead machine ends the job, torchrun works.

A process whose code raises hands its traceback to rank 0, which logs it in log.txt as `Rank R
of W failed:`; the command exits non-zero naming the rank (`rank R of W exited with an error`,
or `rank F of W failed first` when another rank's error caused this one). `tools/train_net.py`
runs under torchrun (`RANK`, `LOCAL_RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT` set: it
joins their group through env:// and spawns nothing; `--num-gpus`, `--num-machines`,
`--machine-rank` and `--dist-url` must stay at their defaults, and a partial set of the
variables, or a rank not below its count such as `RANK` ≥ `WORLD_SIZE`, is refused with one
line) and as several machines over `--dist-url tcp://HOST:PORT`. SIGTERM to the launcher of
`--num-gpus 2`, or to its whole process group, reaches each process once: during training all
stop after the same iteration with its checkpoint saved, one log line, exit 143, no failure
report; during the evaluation they end at once and the launcher says so in one line. Every wait for
the other processes, to join or in a collective, is bounded by `DETKIT_DIST_TIMEOUT_S` (default
600 s rather than torch's 30 minutes; a value that is not a positive number exits 2): a killed
machine ends the others within seconds (its connections close), a frozen one or one that never
starts after the timeout. The real-process cases start train_net (or a tiny launch script) in a
session of its own, so that one "machine" can be killed or frozen whole.
"""

from __future__ import annotations

import datetime
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from reliability_helpers import REPO, SHAPES_CONFIG, TRAIN_NET, TinyRun, run_tool, tool_env
from signalled_train_net import run_signalled

from detkit.config import ConfigError
from detkit.engine import run_train_net
from detkit.engine.launch import DEFAULT_TIMEOUT, TIMEOUT_VARIABLE, dist_timeout, launch

TORCHRUN_ENV = {
    "RANK": "0",
    "LOCAL_RANK": "0",
    "WORLD_SIZE": "2",
    "LOCAL_WORLD_SIZE": "2",
    "MASTER_ADDR": "127.0.0.1",
    "MASTER_PORT": "29500",
}

FAILING_JOB = """
import sys

from detkit.engine.launch import launch
from detkit.utils import comm
from detkit.utils.logger import setup_logger


def main(output):
    setup_logger(output, comm.get_rank())
    if comm.get_rank() == 1:
        raise ValueError("rank 1 gave up on purpose")
    comm.synchronize()  # rank 0 waits here for a rank that never comes


if __name__ == "__main__":
    launch(main, 2, args=(sys.argv[1],), backend="gloo")
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Machines:
    """``tools/train_net.py`` launches as the machines of one job over 127.0.0.1, each in its
    own session (so it can be signalled whole), its output in ``machine<R>.txt``."""

    def __init__(self, tiny_run: TinyRun, folder: Path, max_iter: int = 4, **env: str) -> None:
        self.tiny_run, self.folder, self.max_iter, self.env = tiny_run, folder, max_iter, env
        self.output = folder / "output"
        self.url = f"tcp://127.0.0.1:{free_port()}"
        self.processes: list[subprocess.Popen] = []

    def start(self, machine_rank: int, num_machines: int = 2) -> subprocess.Popen:
        command = [
            sys.executable,
            str(TRAIN_NET),
            "--config-file",
            str(SHAPES_CONFIG),
            "--num-machines",
            str(num_machines),
            "--machine-rank",
            str(machine_rank),
            "--dist-url",
            self.url,
            *self.tiny_run.overrides(self.output, self.max_iter, SOLVER__CHECKPOINT_PERIOD=1000),
        ]
        with open(self.folder / f"machine{machine_rank}.txt", "w") as log:
            process = subprocess.Popen(
                command,
                cwd=REPO,
                env=tool_env(self.tiny_run.root, **self.env),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def console(self, machine_rank: int) -> str:
        return (self.folder / f"machine{machine_rank}.txt").read_text()

    def log(self) -> str:
        path = self.output / "log.txt"
        return path.read_text() if path.exists() else ""

    def wait_for_training(self, timeout: float = 120) -> None:
        """Returns once rank 0 has logged its second iteration."""
        deadline = time.monotonic() + timeout
        while f"iter: 2/{self.max_iter}" not in self.log():
            assert time.monotonic() < deadline, f"training did not start:\n{self.console(0)}"
            assert all(p.poll() is None for p in self.processes), self.console(0)
            time.sleep(0.2)

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture
def machines(tiny_run: TinyRun, tmp_path: Path) -> Iterator[Callable[..., Machines]]:
    made: list[Machines] = []

    def make(max_iter: int = 4, **env: str) -> Machines:
        made.append(Machines(tiny_run, tmp_path, max_iter, **env))
        return made[-1]

    yield make
    for job in made:
        job.stop_all()


def test_failing_rank_error_in_rank0_log_and_exit_status(tmp_path: Path) -> None:
    """A rank raising in a 2-process launch → exit non-zero naming it; its error in rank 0's log"""
    script = tmp_path / "failing_job.py"
    script.write_text(FAILING_JOB)
    start = time.monotonic()
    result = run_tool(script, str(tmp_path / "output"), timeout=120)
    assert result.returncode != 0
    named = ("rank 1 of 2 exited with an error", "rank 1 of 2 failed first")
    assert any(words in result.stderr for words in named), result.stderr
    assert "rank 1 gave up on purpose" in result.stderr
    log = (tmp_path / "output" / "log.txt").read_text()
    assert "Rank 1 of 2 failed" in log
    assert "ValueError: rank 1 gave up on purpose" in log
    assert time.monotonic() - start < 90  # rank 0 did not wait at its barrier for the timeout


def test_two_machines_over_localhost_train_and_evaluate(machines) -> None:
    """Two train_net launches as 2 machines over 127.0.0.1 → both exit 0; one job of 2 ranks"""
    job = machines(max_iter=4)
    first, second = job.start(0), job.start(1)
    assert first.wait(timeout=180) == 0, job.console(0)
    assert second.wait(timeout=60) == 0, job.console(1)
    log = job.log()
    assert "Rank 0 of 2" in log
    assert "iter: 4/4" in log
    assert (job.output / "model_final.pth").is_file()
    assert (job.output / "inference" / "shapes_val" / "coco_instances_results.json").is_file()


def test_killed_machine_ends_the_other_quickly(machines) -> None:
    """One of two machines killed mid-training → the other exits non-zero in seconds, no hang"""
    job = machines(max_iter=2000)
    first, second = job.start(0), job.start(1)
    job.wait_for_training()
    os.killpg(second.pid, signal.SIGKILL)
    killed = time.monotonic()
    status = first.wait(timeout=120)
    assert status != 0
    assert time.monotonic() - killed < 60
    assert "Rank 0 of 2 failed" in job.log()


def test_frozen_machine_ends_the_other_after_the_timeout(machines) -> None:
    """One of two machines frozen, DETKIT_DIST_TIMEOUT_S=4 → the other exits non-zero after ~4 s"""
    timeout = 4.0
    job = machines(max_iter=2000, **{TIMEOUT_VARIABLE: str(timeout)})
    first, second = job.start(0), job.start(1)
    job.wait_for_training()
    os.killpg(second.pid, signal.SIGSTOP)
    frozen = time.monotonic()
    status = first.wait(timeout=timeout + 90)
    waited = time.monotonic() - frozen
    assert status != 0
    assert timeout * 0.8 <= waited < timeout + 60
    log = job.log()
    assert "Rank 0 of 2 failed" in log
    # gloo says "Timed out waiting" or, when the other side's wait ends first, "Application
    # timeout caused pair closure"
    assert "timed out" in log.lower() or "application timeout" in log.lower()


def test_machine_that_never_joins_ends_the_wait(machines) -> None:
    """Only machine 0 of 2 started, DETKIT_DIST_TIMEOUT_S=3 → it ends after ~3 s naming the URL"""
    job = machines(**{TIMEOUT_VARIABLE: "3"})
    start = time.monotonic()
    status = job.start(0).wait(timeout=120)
    assert status != 0
    assert time.monotonic() - start < 60
    console = job.console(0)
    assert f"could not join the others at {job.url}" in console
    assert f"waited up to 3 s, {TIMEOUT_VARIABLE}" in console


def test_torchrun_starts_the_processes(tiny_run: TinyRun, tmp_path: Path) -> None:
    """Under torchrun --nproc-per-node 2 → one 2-rank job via env://, no extra processes, exit 0"""
    output = tmp_path / "output"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            str(TRAIN_NET),
            "--config-file",
            str(SHAPES_CONFIG),
            *tiny_run.overrides(output, 4),
        ],
        cwd=REPO,
        env=tool_env(tiny_run.root),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    log = (output / "log.txt").read_text()
    assert "Rank 0 of 2" in log and "of 4" not in log
    assert "iter: 4/4" in log
    assert (output / "model_final.pth").is_file()


def test_bad_timeout_variable_exits_2(
    tiny_run: TinyRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """DETKIT_DIST_TIMEOUT_S=soon → exit 2, one line naming the variable and value, nothing run"""
    monkeypatch.setenv(TIMEOUT_VARIABLE, "soon")
    argv = ["--config-file", str(SHAPES_CONFIG), "--num-gpus", "2"]
    status = run_train_net([*argv, *tiny_run.overrides(tmp_path / "output")])
    error = capsys.readouterr().err
    assert status == 2
    assert f"{TIMEOUT_VARIABLE}='soon' is not a positive number of seconds" in error
    assert len(error.strip().splitlines()) == 1
    assert not (tmp_path / "output" / "log.txt").exists()


@pytest.mark.parametrize("value", ["0", "-5", "inf", "nan"])
def test_timeout_not_positive_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """DETKIT_DIST_TIMEOUT_S 0, negative, inf or nan → refused naming it and the value"""
    monkeypatch.setenv(TIMEOUT_VARIABLE, value)
    ran = []
    with pytest.raises(ConfigError, match=f"{TIMEOUT_VARIABLE}='{value}' is not a positive"):
        launch(lambda: ran.append(1), 1)
    assert not ran


def test_timeout_default_and_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """DETKIT_DIST_TIMEOUT_S unset → 10 minutes (not torch's 30); set to 90 → 90 s"""
    monkeypatch.delenv(TIMEOUT_VARIABLE, raising=False)
    assert dist_timeout() == DEFAULT_TIMEOUT == datetime.timedelta(minutes=10)
    monkeypatch.setenv(TIMEOUT_VARIABLE, "90")
    assert dist_timeout() == datetime.timedelta(seconds=90)


def test_sigterm_to_the_process_group_of_a_two_process_run(
    tiny_run: TinyRun, tmp_path: Path
) -> None:
    """SIGTERM to the process group of a --num-gpus 2 run → passed on once to each rank, both
    stop after the iteration, its checkpoint saved, one line, exit 143"""
    output = tmp_path / "output"
    keys = {"DATASETS__TEST": "[]", "DATASETS__PROPOSAL_FILES_TEST": "[]"}
    overrides = tiny_run.overrides(output, 6, SOLVER__CHECKPOINT_PERIOD=2, **keys)
    argv = ["--config-file", str(SHAPES_CONFIG), "--num-gpus", "2", *overrides]
    # the launcher's group holds only the launcher: its processes have sessions of their own
    result = run_signalled(argv, tool_env(tiny_run.root), "SIGTERM", 2, "launcher-group")
    console = result.stdout + result.stderr
    assert result.returncode == 143, console[-3000:]
    assert "Traceback" not in console and "failed" not in console
    stop = "Received SIGTERM: stopped after iteration 2 with its checkpoint saved; exit status 143"
    assert console.count(stop) == 1
    log = (output / "log.txt").read_text()
    assert stop in log and "failed" not in log
    assert (output / "last_checkpoint").read_text() == "model_0000002.pth"
    assert not (output / "model_0000003.pth").exists()


def test_sigterm_during_the_evaluation_of_a_two_process_run(
    tiny_run: TinyRun, tmp_path: Path
) -> None:
    """SIGTERM to the launcher of --num-gpus 2 during the final evaluation → one line, exit 143,
    the training's checkpoints intact"""
    output = tmp_path / "output"
    argv = ["--config-file", str(SHAPES_CONFIG), "--num-gpus", "2", *tiny_run.overrides(output, 2)]
    result = run_signalled(argv, tool_env(tiny_run.root), "SIGTERM", "evaluation", "launcher")
    assert result.returncode == 143, result.stderr[-3000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("train_net: interrupted (SIGTERM) where no checkpoint is saved")
    assert (output / "last_checkpoint").read_text() == "model_final.pth"
    assert torch.load(output / "model_final.pth", weights_only=True)["iteration"] == 1


def test_torchrun_with_num_gpus_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchrun's variables and --num-gpus 2 → refused naming both; no process spawned"""
    for name, value in TORCHRUN_ENV.items():
        monkeypatch.setenv(name, value)
    ran = []
    with pytest.raises(ConfigError, match=r"under torchrun.*WORLD_SIZE=2.*--num-gpus"):
        launch(lambda: ran.append(1), 2)
    assert not ran


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"RANK": "2"}, "RANK=2 is not below WORLD_SIZE=2"),
        ({"RANK": "-1"}, "RANK=-1 is not below WORLD_SIZE=2"),
        ({"LOCAL_RANK": "2"}, "LOCAL_RANK=2 is not below LOCAL_WORLD_SIZE=2"),
        ({"WORLD_SIZE": "0", "LOCAL_WORLD_SIZE": "0"}, "WORLD_SIZE=0"),
    ],
)
def test_torchrun_rank_outside_the_world(
    tiny_run: TinyRun, tmp_path: Path, monkeypatch, capsys, variables: dict, named: str
) -> None:
    """RANK ≥ WORLD_SIZE (or LOCAL_RANK ≥ LOCAL_WORLD_SIZE) → exit 2, one line naming both,
    nothing run"""
    for name, value in {**TORCHRUN_ENV, **variables, TIMEOUT_VARIABLE: "5"}.items():
        monkeypatch.setenv(name, value)  # the timeout: no wait for a group that cannot form
    argv = ["--config-file", str(SHAPES_CONFIG), *tiny_run.overrides(tmp_path / "output")]
    status = run_train_net(argv)
    error = capsys.readouterr().err
    assert status == 2
    assert named in error and "Traceback" not in error
    assert len(error.strip().splitlines()) == 1
    assert not (tmp_path / "output").exists()


def test_partial_torchrun_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """RANK and WORLD_SIZE set, MASTER_ADDR/PORT not → refused naming them, not run alone"""
    for name, value in TORCHRUN_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MASTER_ADDR")
    monkeypatch.delenv("MASTER_PORT")
    ran = []
    with pytest.raises(ConfigError, match="MASTER_ADDR, MASTER_PORT is not"):
        launch(lambda: ran.append(1), 1)
    assert not ran


def test_torchrun_world_of_one_runs_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchrun with WORLD_SIZE=1 → the job runs in this process, without a process group"""
    for name, value in {**TORCHRUN_ENV, "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(name, value)
    from detkit.utils import comm

    ran = []
    launch(lambda: ran.append(comm.get_world_size()), 1)
    assert ran == [1]
