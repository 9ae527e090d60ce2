"""The worked example of docs/datasets.md ("Your own data, without Python"), run as written: its
config and its commands, on a generated folder of images with COCO files. Register by config,
compute proposals, train a few iterations, evaluate, demo: all from the command line."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SECTION = "## Your own data, without Python"
# Extra settings for a test-sized run, appended to the training command of the docs.
TINY = ["SOLVER.MAX_ITER", "4", "MODEL.SMALL_CONVNET.CHANNELS", "[8, 16]",
        "MODEL.ROI_BOX_HEAD.FC_DIM", "32", "DATALOADER.NUM_WORKERS", "0",
        "INPUT.MIN_SIZE_TRAIN", "[96]", "INPUT.MIN_SIZE_TEST", "96"]  # fmt: skip


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    assert command[0] == ".venv/bin/python" and command[1].startswith("tools/")
    argv = [sys.executable, str(REPO / command[1]), *command[2:]]
    if command[1] == "tools/train_net.py":
        argv += TINY
    if command[1] == "tools/demo.py":
        argv += ["INPUT.MIN_SIZE_TEST", "96"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_the_worked_example_runs_as_documented(
    tmp_path: Path, docs_example: Callable, write_my_data: Callable
) -> None:
    config, commands = docs_example("datasets.md", SECTION)
    write_my_data(tmp_path)
    (tmp_path / "configs").symlink_to(REPO / "configs")
    (tmp_path / "my_data.yaml").write_text(config)
    assert [c[1] for c in commands] == [
        "tools/compute_proposals.py",
        "tools/compute_proposals.py",
        "tools/train_net.py",
        "tools/train_net.py",
        "tools/demo.py",
    ]
    for command in commands:
        result = run(command, tmp_path)
        assert result.returncode == 0, shlex.join(command) + "\n" + result.stderr[-3000:]
    output = tmp_path / "output" / "my_data"
    assert (tmp_path / "my_data" / "proposals_train.pkl").is_file()
    # the classes came from train.json's categories and travel in the run's config
    # read as YAML: loading it as a config here would register its datasets in this process
    heads = yaml.safe_load((output / "config.yaml").read_text())["MODEL"]["ROI_HEADS"]
    assert heads["CLASS_NAMES"] == ["circle", "square", "triangle"]
    assert heads["NUM_CLASSES"] == 3
    evaluation = json.loads((output / "inference" / "my_val" / "evaluation.json").read_text())
    assert "AP" in evaluation["bbox"]
    assert (output / "inference" / "config.yaml").is_file()  # eval-only wrote its own
    demos = sorted(p.name for p in (output / "demo").iterdir())
    assert demos == [f"{i:05d}.png" for i in range(12)]
