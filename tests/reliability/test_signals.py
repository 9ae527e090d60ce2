"""Signals, restarts and exit statuses of `tools/train_net.py`.

SIGTERM (what cluster schedulers send), SIGINT (Ctrl-C) and SIGHUP (the terminal closed) during
training finish the iteration under way, save its checkpoint `model_XXXXXXX.pth` and
`last_checkpoint` (also when a periodic checkpoint came before), log why in log.txt and exit
with 128 + the signal (143, 130, 129), without a traceback; a second signal acts at once.
`--resume` then continues bit-exactly, as after SIGKILL from the last periodic checkpoint.
A signal while the run is set up or evaluates ends it at once with one line on stderr and
128 + the signal; the training's checkpoints stay intact and no temporary file is left.
A training run without `--resume` into an OUTPUT_DIR that holds checkpoints stops with exit 2
(pass `--resume`, or choose another OUTPUT_DIR): nothing is overwritten. `--resume` on a
finished run says there is nothing left to train, runs only the final evaluation and exits 0;
`--eval-only` works on a finished run's folder. A user error (config, process counts,
checkpoints, data) ends the command with one line on stderr and exit 2; `--debug` or
`DETKIT_DEBUG=1` shows its traceback instead.

The interrupted runs are real `train_net` processes on shapes_val with a tiny model. Most send
themselves the signal at a set point (`signalled_train_net.py`: before iteration 4, or when the
evaluation starts), so each stops where the case says; SIGINT and SIGKILL come from outside,
once metrics.json shows the third (fifth) iteration.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from reliability_helpers import REPO, SHAPES_CONFIG, TRAIN_NET, TinyRun, run_tool, tool_env
from signalled_train_net import run_signalled
from training_helpers import (
    file_states,
    final_weights,
    same_weights,
    tiny_overrides,
    train_net_here,
)

from detkit.config import ConfigError
from detkit.engine import DefaultTrainer

MAX_ITER = 40
# no evaluation, no lr step, a checkpoint every 2 iterations, a fixed seed
KEYS = {
    "DATASETS__TEST": "[]",
    "DATASETS__PROPOSAL_FILES_TEST": "[]",
    "SOLVER__STEPS": "[]",
    "SOLVER__CHECKPOINT_PERIOD": 2,
    "SEED": 3,
}


def overrides(tiny_run: TinyRun, output: Path) -> list[str]:
    return tiny_run.overrides(output, MAX_ITER, **KEYS)


def start(tiny_run: TinyRun, output: Path, *options: str) -> subprocess.Popen:
    command = [sys.executable, str(TRAIN_NET), "--config-file", str(SHAPES_CONFIG), *options]
    return subprocess.Popen(
        [*command, *overrides(tiny_run, output)],
        cwd=REPO,
        env=tool_env(tiny_run.root),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def logged_iterations(output: Path) -> list[int]:
    metrics = output / "metrics.json"
    if not metrics.exists():
        return []
    lines = metrics.read_text().splitlines()
    return [json.loads(line)["iteration"] for line in lines if line.endswith("}")]


def wait_for_iteration(process: subprocess.Popen, output: Path, iteration: int) -> None:
    deadline = time.monotonic() + 120
    while max(logged_iterations(output), default=-1) < iteration:
        if process.poll() is not None:
            _, stderr = process.communicate()
            raise AssertionError(f"train_net ended early ({process.returncode}): {stderr[-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("train_net did not reach the iteration in time")
        time.sleep(0.02)


def signalled(
    tiny_run: TinyRun,
    output: Path,
    signal_name: str,
    at: int | str,
    max_iter: int = MAX_ITER,
    to: str = "self",
    **keys: object,
) -> subprocess.CompletedProcess:
    """A run whose ``train_net`` sends ``signal_name`` to ``to`` at ``at`` (an iteration, or
    ``evaluation``); ``keys`` adds overrides."""
    overrides = tiny_run.overrides(output, max_iter, **{**KEYS, **keys})
    args = ["--config-file", str(SHAPES_CONFIG), *overrides]
    return run_signalled(args, tool_env(tiny_run.root), signal_name, at, to)


def interrupt(tiny_run: TinyRun, output: Path, signum: int) -> tuple[subprocess.Popen, str]:
    """A run signalled after its third iteration; the process (ended) and its stderr."""
    process = start(tiny_run, output)
    wait_for_iteration(process, output, 2)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    return process, stderr


def resume(tiny_run: TinyRun, output: Path) -> subprocess.CompletedProcess:
    return run_tool(
        TRAIN_NET,
        "--config-file",
        SHAPES_CONFIG,
        "--resume",
        *overrides(tiny_run, output),
        root=tiny_run.root,
    )


def stopped_iteration(output: Path, signal_name: str) -> int:
    """The iteration after which log.txt says the run stopped on ``signal_name``."""
    (line,) = [
        line
        for line in (output / "log.txt").read_text().splitlines()
        if f"Received {signal_name}: stopped after iteration" in line
    ]
    return int(line.split("stopped after iteration ")[1].split()[0])


def final_loss(output: Path) -> float:
    lines = [json.loads(line) for line in (output / "metrics.json").read_text().splitlines()]
    return [line for line in lines if line["iteration"] == MAX_ITER - 1][-1]["total_loss"]


@pytest.fixture(scope="module")
def straight(tiny_run: TinyRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run never stopped."""
    output = tmp_path_factory.mktemp("straight") / "run"
    result = run_tool(
        TRAIN_NET, "--config-file", SHAPES_CONFIG, *overrides(tiny_run, output), root=tiny_run.root
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return output


@pytest.fixture(scope="module")
def terminated(tiny_run: TinyRun, tmp_path_factory: pytest.TempPathFactory):
    """A run sent SIGTERM before iteration 4, after the periodic checkpoint of iteration 3."""
    output = tmp_path_factory.mktemp("sigterm") / "run"
    result = signalled(tiny_run, output, "SIGTERM", 4)
    return output, result.returncode, result.stderr


def test_sigterm_saves_a_checkpoint_and_exits_143(terminated) -> None:
    """SIGTERM after a periodic checkpoint → iteration finished and saved, logged, exit 143."""
    output, status, stderr = terminated
    assert status == 128 + signal.SIGTERM == 143, stderr[-3000:]
    assert "Traceback" not in stderr
    assert stopped_iteration(output, "SIGTERM") == 4
    # a periodic checkpoint came before (iteration 3), yet iteration 4's is saved and tagged
    assert torch.load(output / "model_0000003.pth", weights_only=True)["iteration"] == 3
    assert (output / "last_checkpoint").read_text() == "model_0000004.pth"
    assert torch.load(output / "model_0000004.pth", weights_only=True)["iteration"] == 4
    assert not (output / "model_0000005.pth").exists()
    assert not (output / "model_final.pth").exists()
    assert "exit status 143; continue with --resume" in (output / "log.txt").read_text()


def test_sigterm_to_the_process_group_with_loader_workers(tiny_run, tmp_path) -> None:
    """SIGTERM to the run's process group (loader workers too) → checkpoint saved, exit 143."""
    output = tmp_path / "run"
    result = signalled(tiny_run, output, "SIGTERM", 4, to="group", DATALOADER__NUM_WORKERS=1)
    assert result.returncode == 143, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "DataLoader worker" not in result.stderr
    assert stopped_iteration(output, "SIGTERM") == 4
    assert (output / "last_checkpoint").read_text() == "model_0000004.pth"


def test_sighup_saves_a_checkpoint_and_exits_129(tiny_run, tmp_path) -> None:
    """SIGHUP mid-training (terminal closed) → checkpoint saved, logged, exit 129, no temp file."""
    output = tmp_path / "run"
    result = signalled(tiny_run, output, "SIGHUP", 4)
    assert result.returncode == 128 + signal.SIGHUP == 129, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert stopped_iteration(output, "SIGHUP") == 4
    assert (output / "last_checkpoint").read_text() == "model_0000004.pth"
    assert torch.load(output / "model_0000004.pth", weights_only=True)["iteration"] == 4
    assert "exit status 129; continue with --resume" in (output / "log.txt").read_text()
    assert not list(output.glob(".*"))


def test_sigterm_during_the_final_evaluation(tiny_run, tmp_path) -> None:
    """SIGTERM during the final evaluation → one line, exit 143; training's checkpoints intact."""
    output = tmp_path / "run"
    test_set = {
        "DATASETS__TEST": "[shapes_val]",
        "DATASETS__PROPOSAL_FILES_TEST": f"[{tiny_run.proposals}]",
    }
    result = signalled(tiny_run, output, "SIGTERM", "evaluation", max_iter=2, **test_set)
    assert result.returncode == 143, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("train_net: interrupted (SIGTERM) where no checkpoint is saved")
    assert "--resume" in line
    assert (output / "last_checkpoint").read_text() == "model_final.pth"
    assert torch.load(output / "model_final.pth", weights_only=True)["iteration"] == 1
    assert not list(output.rglob(".*"))
    assert not (output / "inference" / "shapes_val" / "evaluation.json").exists()


def test_resume_after_sigterm_is_bit_exact(tiny_run, terminated, straight) -> None:
    """--resume after SIGTERM → same final weights and loss as a run never stopped."""
    output, _, _ = terminated
    result = resume(tiny_run, output)
    assert result.returncode == 0, result.stderr[-3000:]
    iteration = stopped_iteration(output, "SIGTERM")
    assert f"Resuming at iteration {iteration + 1}" in (output / "log.txt").read_text()
    assert same_weights(final_weights(output), final_weights(straight))
    assert final_loss(output) == final_loss(straight)


def test_sigint_saves_a_checkpoint_and_exits_130(tiny_run, tmp_path) -> None:
    """Ctrl-C (SIGINT) mid-training → checkpoint saved, logged, exit 130, no traceback."""
    output = tmp_path / "run"
    process, stderr = interrupt(tiny_run, output, signal.SIGINT)
    assert process.returncode == 128 + signal.SIGINT == 130
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    iteration = stopped_iteration(output, "SIGINT")
    assert (output / "last_checkpoint").read_text() == f"model_{iteration:07d}.pth"
    assert torch.load(output / f"model_{iteration:07d}.pth", weights_only=True)["seed"] == 3


def test_sigkill_then_resume_is_bit_exact(tiny_run, straight, tmp_path) -> None:
    """SIGKILL mid-run, then --resume → bit-exact final weights, no temporary file left."""
    output = tmp_path / "run"
    process = start(tiny_run, output)
    wait_for_iteration(process, output, 4)
    process.kill()
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert not (output / "model_final.pth").exists()
    tagged = (output / "last_checkpoint").read_text()
    result = resume(tiny_run, output)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed_at = torch.load(output / tagged, weights_only=True)["iteration"] + 1
    assert f"Resuming at iteration {resumed_at}" in (output / "log.txt").read_text()
    assert same_weights(final_weights(output), final_weights(straight))
    assert not list(output.glob(".*"))


def test_new_run_into_a_folder_with_checkpoints(tiny_run, straight, capsys) -> None:
    """New run without --resume into a folder with checkpoints → exit 2; nothing overwritten."""
    before = file_states(straight)
    assert train_net_here(*overrides(tiny_run, straight)) == 2
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    (line,) = [line for line in stderr.splitlines() if line.startswith("train_net:")]
    assert f"OUTPUT_DIR={straight} holds the checkpoints of an earlier run" in line
    assert "last_checkpoint" in line and "pass --resume" in line and "another OUTPUT_DIR" in line
    assert file_states(straight) == before


def test_resume_of_a_finished_run(tiny_run, straight, tmp_path) -> None:
    """--resume on a finished run → 'Nothing left to train', exit 0, no checkpoint written."""
    output = Path(shutil.copytree(straight, tmp_path / "run"))
    checkpoints = {p.name: p.stat().st_mtime_ns for p in output.glob("model_*.pth")}
    assert train_net_here("--resume", *overrides(tiny_run, output)) == 0
    log = (output / "log.txt").read_text()
    assert f"Nothing left to train: the run is at iteration {MAX_ITER}" in log
    assert log.count("Starting training from iteration") == 2  # the run, then this one
    assert {p.name: p.stat().st_mtime_ns for p in output.glob("model_*.pth")} == checkpoints


def test_eval_only_in_a_finished_runs_folder(tiny_shapes, straight, tmp_path) -> None:
    """--eval-only in a finished run's folder → evaluated (exit 0), checkpoints untouched."""
    output = Path(shutil.copytree(straight, tmp_path / "run"))
    checkpoints = {p.name: p.stat().st_mtime_ns for p in output.glob("model_*.pth")}
    test_sets = [
        f"DATASETS.TEST=[{tiny_shapes.name}]",
        f"DATASETS.PROPOSAL_FILES_TEST=[{tiny_shapes.proposal_file}]",
        f"MODEL.WEIGHTS={output / 'model_final.pth'}",
    ]
    assert train_net_here("--eval-only", *tiny_overrides(tiny_shapes, output, 6, *test_sets)) == 0
    assert (output / "inference" / tiny_shapes.name / "evaluation.json").is_file()
    assert {p.name: p.stat().st_mtime_ns for p in output.glob("model_*.pth")} == checkpoints


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--num-gpus", "0"], "--num-gpus 0: give at least 1 process per machine"),
        (["--num-machines", "0"], "--num-machines 0: give at least 1 machine"),
        (["--num-machines", "2", "--machine-rank", "2"], "--machine-rank 2: must be in [0, 2)"),
    ],
)
def test_process_counts_that_describe_no_process(
    tiny_run, tmp_path, capsys, options, named
) -> None:
    """--num-gpus 0 and other process counts for no process → exit 2 naming the option."""
    assert train_net_here(*options, *overrides(tiny_run, tmp_path / "out")) == 2
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr and named in stderr
    assert not (tmp_path / "out").exists()


def test_debug_shows_the_traceback_of_a_user_error(tiny_run, straight) -> None:
    """--debug with a user error → the error is raised with its traceback."""
    with pytest.raises(ConfigError, match="holds the checkpoints of an earlier run"):
        train_net_here("--debug", *overrides(tiny_run, straight))


def test_detkit_debug_variable_shows_the_traceback(tiny_run, tmp_path, monkeypatch) -> None:
    """DETKIT_DEBUG=1 with a user error → the error is raised with its traceback."""
    monkeypatch.setenv("DETKIT_DEBUG", "1")
    with pytest.raises(ConfigError, match="--num-gpus 0"):
        train_net_here("--num-gpus", "0", *overrides(tiny_run, tmp_path / "out"))


class InterruptedWhileBuilding(DefaultTrainer):
    def __init__(self, *args, **kwargs) -> None:
        raise KeyboardInterrupt


def test_ctrl_c_before_training_starts(tiny_shapes, tmp_path, capsys) -> None:
    """Ctrl-C while the run is set up → exit 130, one line, no traceback."""
    argv = tiny_overrides(tiny_shapes, tmp_path / "out")
    assert train_net_here(*argv, trainer_class=InterruptedWhileBuilding) == 130
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr and "interrupted (SIGINT)" in stderr
    assert not list((tmp_path / "out").glob("model_*.pth"))
