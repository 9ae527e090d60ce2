"""docs/datasets.md's RPN route ("Your own data, proposals from a network"), run as written
after the example before it ("Your own data, without Python") sets up its folder and config:
train the RPN, write proposals of both splits, score them, train Fast R-CNN on them."""

from __future__ import annotations

import json
import os
import pickle
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
SECTION = "## Your own data, proposals from a network"
BASE_SECTION = "## Your own data, without Python"
# Test-sized settings: every command that builds the model gets the small backbone (so the
# weights fit), the training ones a few iterations.
MODEL = ["MODEL.SMALL_CONVNET.CHANNELS", "[8, 16]", "INPUT.MIN_SIZE_TEST", "96",
         "DATALOADER.NUM_WORKERS", "0"]  # fmt: skip
TRAINING = ["SOLVER.MAX_ITER", "4", "INPUT.MIN_SIZE_TRAIN", "[96]", "MODEL.ROI_BOX_HEAD.FC_DIM",
            "32"]  # fmt: skip
SCRIPTS = [
    "projects/RPN/train_net.py",
    "projects/RPN/compute_proposals.py",
    "projects/RPN/compute_proposals.py",
    "projects/RPN/evaluate_proposals.py",
    "tools/train_net.py",
]


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    assert command[0] == ".venv/bin/python"
    argv = [sys.executable, str(REPO / command[1]), *command[2:]]
    if command[1] != "projects/RPN/evaluate_proposals.py":
        argv += MODEL
    if command[1].endswith("train_net.py"):
        argv += TRAINING
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_the_rpn_route_runs_as_documented(
    tmp_path: Path, docs_example: Callable, write_my_data: Callable
) -> None:
    base_config, _ = docs_example("datasets.md", BASE_SECTION)
    config, commands = docs_example("datasets.md", SECTION)
    write_my_data(tmp_path)
    (tmp_path / "configs").symlink_to(REPO / "configs")
    (tmp_path / "my_data.yaml").write_text(base_config)
    (tmp_path / "my_data_rpn.yaml").write_text(config)
    assert [c[1] for c in commands] == SCRIPTS
    outputs = []
    for command in commands:
        result = run(command, tmp_path)
        assert result.returncode == 0, shlex.join(command) + "\n" + result.stderr[-3000:]
        outputs.append(result.stdout)
    rpn_run = tmp_path / "output" / "my_data_rpn"
    recall = json.loads((rpn_run / "inference" / "my_val" / "evaluation.json").read_text())
    assert "AR@1000" in recall["box_proposals"]
    for split, count in (("train", 8), ("val", 4)):
        with open(tmp_path / "my_data" / f"rpn_{split}.pkl", "rb") as file:
            assert len(pickle.load(file)["ids"]) == count
    assert "AR@1000" in outputs[3]  # evaluate_proposals' table
    detector = tmp_path / "output" / "my_data_on_rpn"
    resolved = (detector / "config.yaml").read_text()
    assert "my_data/rpn_train.pkl" in resolved and "my_data/rpn_val.pkl" in resolved
    evaluation = json.loads((detector / "inference" / "my_val" / "evaluation.json").read_text())
    assert "AP" in evaluation["bbox"]
