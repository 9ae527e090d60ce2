"""The project's commands on tiny shapes sets: train_net.py trains the RPN and evaluates its
recall; compute_proposals.py writes a file in detectron2's layout that detkit reads back, the
same from one process or two; its refusals are one line each."""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from detkit.data import load_proposals
from detkit.data.datasets.shapes import ensure_shapes

PROJECT = Path(__file__).resolve().parents[1]
REPO = PROJECT.parents[1]
SHAPES_RPN = PROJECT / "configs" / "shapes_rpn.yaml"
TINY = [
    "MODEL.SMALL_CONVNET.CHANNELS=[8, 16]",
    "MODEL.CHANNELS_LAST=false",
    "INPUT.MIN_SIZE_TRAIN=[96, 112]",
    "INPUT.MAX_SIZE_TRAIN=160",
    "INPUT.MIN_SIZE_TEST=96",
    "INPUT.MAX_SIZE_TEST=160",
    "DATALOADER.NUM_WORKERS=0",
]


@pytest.fixture(scope="module")
def datasets_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """shapes_train (8 images) and shapes_val (6) of their own: a complete split of the
    current generator version is reused whatever its size."""
    root = tmp_path_factory.mktemp("rpn_datasets")
    ensure_shapes(root, "train", num_images=8, seed=3)
    ensure_shapes(root, "val", num_images=6, seed=4)
    return root


def run(root: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DETKIT_DATASETS": str(root), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(PROJECT / script), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def trained(datasets_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output folder of a four-iteration run of train_net.py, evaluated on shapes_val."""
    output = tmp_path_factory.mktemp("rpn_run")
    result = run(
        datasets_root,
        "train_net.py",
        "--config-file",
        str(SHAPES_RPN),
        *TINY,
        *("SOLVER.MAX_ITER=4", "SOLVER.WARMUP_ITERS=2", "SOLVER.STEPS=[3]"),
        *("SOLVER.LOG_PERIOD=1", f"OUTPUT_DIR={output}"),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return output


def compute_proposals(
    root: Path, weights: Path, out: Path, options: tuple = (), overrides: tuple = ()
) -> subprocess.CompletedProcess:
    return run(
        root,
        "compute_proposals.py",
        *("--config-file", str(SHAPES_RPN), "--dataset", "shapes_val", "--out", str(out)),
        *options,
        *TINY,
        f"MODEL.WEIGHTS={weights}",
        *overrides,
    )


def test_train_net_trains_the_rpn_and_evaluates_its_recall(trained: Path) -> None:
    lines = [json.loads(line) for line in (trained / "metrics.json").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [0, 1, 2, 3, 4]
    for line in lines[:4]:
        assert all(math.isfinite(line[k]) for k in ("total_loss", "loss_rpn_cls", "loss_rpn_loc"))
    evaluation = json.loads((trained / "inference/shapes_val/evaluation.json").read_text())
    recall = evaluation["box_proposals"]
    assert {"AR@100", "AR@1000", "ARs@1000", "ARm@1000", "ARl@1000"} <= set(recall)
    assert 0 <= recall["AR@100"] <= recall["AR@1000"] <= 100


def test_compute_proposals_writes_detectron2s_layout_which_detkit_reads_back(
    datasets_root: Path, trained: Path, tmp_path: Path
) -> None:
    out = tmp_path / "proposals" / "shapes_val.pkl"
    result = compute_proposals(datasets_root, trained / "model_final.pth", out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"wrote the proposals of shapes_val to {out}" in result.stdout
    assert "inference" in result.stderr  # the progress bar
    with open(out, "rb") as file:
        data = pickle.load(file)
    assert set(data) == {"ids", "boxes", "objectness_logits", "bbox_mode"}
    assert data["bbox_mode"] == 0 and type(data["bbox_mode"]) is int
    dicts = json.loads((datasets_root / "shapes" / "val" / "annotations.json").read_text())
    assert data["ids"] == [image["id"] for image in dicts["images"]]
    for image, boxes, logits in zip(
        dicts["images"], data["boxes"], data["objectness_logits"], strict=True
    ):
        assert boxes.dtype == np.float32 and boxes.shape == (len(logits), 4)
        assert 0 < len(boxes) <= 1000 and np.all(np.diff(logits) <= 0)  # best first
        assert np.all(boxes[:, 2:] <= [image["width"], image["height"]])  # original pixels
        assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2:] > boxes[:, :2])
    records = [{"image_id": i["id"], **i} for i in dicts["images"]]
    read_back = load_proposals(out, "auto", records)
    assert len(read_back) == len(records)


def test_two_processes_write_the_same_file_as_one(
    datasets_root: Path, trained: Path, tmp_path: Path
) -> None:
    weights = trained / "model_final.pth"
    one, two = tmp_path / "one.pkl", tmp_path / "two.pkl"
    assert compute_proposals(datasets_root, weights, one).returncode == 0
    result = compute_proposals(datasets_root, weights, two, ("--num-processes", "2"))
    assert result.returncode == 0, result.stderr[-3000:]
    with open(one, "rb") as a, open(two, "rb") as b:
        first, second = pickle.load(a), pickle.load(b)
    assert first["ids"] == second["ids"]
    for key in ("boxes", "objectness_logits"):
        for x, y in zip(first[key], second[key], strict=True):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["MODEL.META_ARCHITECTURE=FastRCNN"], "MODEL.META_ARCHITECTURE=FastRCNN is not Proposal"),
        (["MODEL.WEIGHTS="], "give the trained RPN's weights"),
        (["MODEL.WEIGHTS=nowhere/model.pth"], "checkpoint not found: nowhere/model.pth"),
    ],
)
def test_compute_proposals_refuses_in_one_line(
    datasets_root: Path, trained: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "refused.pkl"
    result = compute_proposals(datasets_root, trained / "model_final.pth", out, overrides=args)
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"compute_proposals: {message}" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


def test_compute_proposals_refuses_an_unknown_dataset(datasets_root: Path, trained: Path) -> None:
    result = run(
        datasets_root,
        "compute_proposals.py",
        *("--config-file", str(SHAPES_RPN), "--dataset", "shapes_vall", "--out", "x.pkl"),
        f"MODEL.WEIGHTS={trained / 'model_final.pth'}",
    )
    assert result.returncode == 2
    assert (
        "compute_proposals: dataset 'shapes_vall' is not registered; did you mean 'shapes_val'?"
        in result.stderr
    )
