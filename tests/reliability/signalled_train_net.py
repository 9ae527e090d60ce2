"""``tools/train_net.py`` whose rank 0 sends a signal at a set point of the run: the signal
tests' deterministic trigger (a signal sent from outside lands at whatever point the run has
reached). Set in the environment, so that spawned workers see them too:

- ``SIGNAL``: the signal's name (``SIGTERM``, ``SIGHUP``, ...);
- ``SIGNAL_AT``: an iteration (sent before it runs) or ``evaluation`` (when it starts);
- ``SIGNAL_TO``: ``self``; ``group``, this process's group (its loader workers too), as Ctrl-C
  or a scheduler sends it; ``launcher``, the process that spawned this one (``--num-gpus 2``);
  or ``launcher-group``, the launcher's whole process group.

Rank 0 then waits (at most a minute) until its own handler for the signal has run, so a run
stops after that very iteration even when the signal reaches it through the launcher.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from detkit.engine import DefaultTrainer, HookBase, run_train_net
from detkit.utils import comm

SCRIPT = Path(__file__).resolve()


def send_and_wait() -> None:
    """Sends ``SIGNAL`` to ``SIGNAL_TO`` and returns once this process's handler has run (its
    handler changed, as detkit's do on their first signal) or raised."""
    signum = signal.Signals[os.environ["SIGNAL"]]
    before = signal.getsignal(signum)
    target = os.environ["SIGNAL_TO"]
    if target == "self":
        os.kill(os.getpid(), signum)
    elif target == "group":
        os.killpg(os.getpgid(0), signum)
    elif target == "launcher":
        os.kill(os.getppid(), signum)
    else:
        os.killpg(os.getpgid(os.getppid()), signum)
    deadline = time.monotonic() + 60
    while signal.getsignal(signum) is before and time.monotonic() < deadline:
        time.sleep(0.01)


class SignalBeforeIteration(HookBase):
    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def before_step(self) -> None:
        if self.trainer.iter == self.iteration and comm.is_main_process():
            send_and_wait()


class SignalledTrainer(DefaultTrainer):
    def build_hooks(self) -> list:
        at = os.environ["SIGNAL_AT"]
        trigger = SignalBeforeIteration(int(at)) if at != "evaluation" else None
        return [trigger, *super().build_hooks()]

    @classmethod
    def test(cls, *args, **kwargs):
        if os.environ["SIGNAL_AT"] == "evaluation" and comm.is_main_process():
            send_and_wait()
        return super().test(*args, **kwargs)


def run_signalled(
    args: list[str], env: dict[str, str], signal_name: str, at: int | str, to: str = "self"
) -> subprocess.CompletedProcess:
    """Runs this script with ``args`` in a session of its own (so that ``launcher-group``
    reaches nothing else), sending ``signal_name`` at ``at`` to ``to``; kills whatever of the
    session is left when it ends or after 3 minutes, so no test hangs or leaves workers."""
    trigger = {"SIGNAL": signal_name, "SIGNAL_AT": str(at), "SIGNAL_TO": to}
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        cwd=SCRIPT.parents[2],
        env={**env, **trigger},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=180)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


if __name__ == "__main__":
    sys.exit(run_train_net(trainer_class=SignalledTrainer))
