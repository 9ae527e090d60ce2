"""tools/train_net.py end to end: a few iterations on shapes_val, its outputs, --eval-only, and a
config typo that ends in one line on stderr.

The script runs as a subprocess with ``DETKIT_DATASETS`` pointing at a temporary folder where
shapes_val is generated beforehand (the same seed the script would use) with a proposal file of
jittered ground-truth boxes, so no selective search runs.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from detkit.config import ConfigError, load_config, parse_overrides
from detkit.data.datasets.shapes import ensure_shapes
from detkit.engine import default_argument_parser
from detkit.evaluation import format_results_table

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "shapes" / "fast_rcnn.yaml"
MAX_ITER = 6


@pytest.fixture(scope="module")
def datasets_root(
    tmp_path_factory: pytest.TempPathFactory, write_proposal_file: Callable[..., Path]
) -> Path:
    root = tmp_path_factory.mktemp("datasets")
    folder = ensure_shapes(root, "val")  # what the script would generate under this root
    write_proposal_file(folder / "annotations.json", root / "shapes_val_proposals.pkl")
    return root


def overrides(root: Path, output: Path) -> list[str]:
    proposals = root / "shapes_val_proposals.pkl"
    return [
        "DATASETS.TRAIN=[shapes_val]",
        "DATASETS.TEST=[shapes_val]",
        f"DATASETS.PROPOSAL_FILES_TRAIN=[{proposals}]",
        f"DATASETS.PROPOSAL_FILES_TEST=[{proposals}]",
        "DATASETS.PROPOSAL_LOADER=auto",
        "MODEL.SMALL_CONVNET.CHANNELS=[8, 16]",
        "MODEL.ROI_BOX_HEAD.FC_DIM=32",
        "INPUT.MIN_SIZE_TRAIN=[96, 112]",
        "INPUT.MAX_SIZE_TRAIN=160",
        "INPUT.MIN_SIZE_TEST=96",
        "INPUT.MAX_SIZE_TEST=160",
        "DATALOADER.NUM_WORKERS=0",
        # detectron2-style KEY VALUE pairs, mixed with KEY=VALUE
        "SOLVER.MAX_ITER",
        str(MAX_ITER),
        "SOLVER.CHECKPOINT_PERIOD",
        "3",
        "SOLVER.LOG_PERIOD=2",
        "SOLVER.BASE_LR=0.02",
        "SOLVER.WARMUP_ITERS=2",
        "SOLVER.STEPS=[4]",
        "TEST.VAL_LOSS_PERIOD=2",
        f"OUTPUT_DIR={output}",
    ]


def train_net(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DETKIT_DATASETS": str(root), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / "train_net.py"), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def trained(datasets_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("train_net") / "output"
    result = train_net(
        datasets_root, "--config-file", str(CONFIG), *overrides(datasets_root, output)
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return output


def test_outputs_of_a_training_run(trained: Path) -> None:
    names = {p.name for p in trained.iterdir()}
    checkpoints = {"model_0000002.pth", "model_0000005.pth", "model_final.pth", "last_checkpoint"}
    assert checkpoints | {"config.yaml", "log.txt", "metrics.json", "inference"} <= names
    assert any(name.startswith("events.out.tfevents.") for name in names)
    assert (trained / "last_checkpoint").read_text().strip() == "model_final.pth"
    final = torch.load(trained / "model_final.pth", weights_only=True)
    assert final["iteration"] == MAX_ITER - 1 and "optimizer" in final and "scheduler" in final

    cfg = load_config(trained / "config.yaml")  # the resolved config loads back
    assert cfg.SOLVER.MAX_ITER == MAX_ITER and cfg.SOLVER.CHECKPOINT_PERIOD == 3
    assert Path(cfg.OUTPUT_DIR) == trained and cfg.SEED == 2015
    assert list(cfg.MODEL.SMALL_CONVNET.CHANNELS) == [8, 16]
    assert list(cfg.DATASETS.TRAIN) == ["shapes_val"]

    log = (trained / "log.txt").read_text()
    assert "Starting training from iteration 0" in log and "shapes_val" in log


def test_metrics_json(trained: Path) -> None:
    lines = [json.loads(line) for line in (trained / "metrics.json").read_text().splitlines()]
    # LOG_PERIOD 2: after iterations 1, 3, 5; then the final evaluation at iteration 6
    assert [line["iteration"] for line in lines] == [1, 3, 5, 6]
    for line in lines[:3]:
        assert {"total_loss", "loss_cls", "loss_box_reg", "lr", "time", "data_time"} <= set(line)
        assert {"fast_rcnn/cls_accuracy", "roi_head/num_fg_samples"} <= set(line)
        assert all(math.isfinite(v) for v in line.values())
    # TEST.VAL_LOSS_PERIOD 2: validation losses after iterations 2, 4 and 6 (indices 1, 3, 5)
    for line in lines[:3]:
        validation = {k: v for k, v in line.items() if k.startswith("validation/")}
        assert set(validation) == {
            "validation/loss_cls",
            "validation/loss_box_reg",
            "validation/total_loss",
        }
        assert validation["validation/total_loss"] == pytest.approx(
            validation["validation/loss_cls"] + validation["validation/loss_box_reg"]
        )
    # BASE_LR 0.02, warmup from 0.01 x over 2 iterations, x0.1 from iteration 4
    assert [line["lr"] for line in lines[:3]] == pytest.approx([0.02 * 0.505, 0.02, 0.002])
    evaluation = json.loads((trained / "inference" / "shapes_val" / "evaluation.json").read_text())
    assert lines[3]["shapes_val/bbox/AP"] == pytest.approx(evaluation["bbox"]["AP"], nan_ok=True)


def test_evaluation_files(trained: Path) -> None:
    folder = trained / "inference" / "shapes_val"
    predictions = json.loads((folder / "coco_instances_results.json").read_text())
    assert predictions and {"image_id", "category_id", "bbox", "score"} <= set(predictions[0])
    assert {p["category_id"] for p in predictions} <= {1, 2, 3}
    results = json.loads((folder / "evaluation.json").read_text())
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl"} <= set(results["bbox"])
    assert {"AP", "AP50", "AP75"} <= set(results["bbox_voc"])
    assert 0 <= results["bbox"]["AP50"] <= 100


def test_the_log_names_the_device_and_holds_each_results_table_once(trained: Path) -> None:
    """One process, MODEL.DEVICE at its default (auto): the log says what auto chose; the
    final evaluation's table is printed once, not again as a summary."""
    log = (trained / "log.txt").read_text()
    assert "MODEL.DEVICE=auto: running on cpu" in log or "MODEL.DEVICE=auto: running on cuda" in log
    evaluation = json.loads((trained / "inference" / "shapes_val" / "evaluation.json").read_text())
    assert log.count(format_results_table(evaluation)) == 1


def same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b or (math.isnan(a) and math.isnan(b))


def test_eval_only_reproduces_the_final_evaluation(
    trained: Path, datasets_root: Path, tmp_path: Path
) -> None:
    output = tmp_path / "eval"
    result = train_net(
        datasets_root,
        "--config-file",
        str(CONFIG),
        "--eval-only",
        *overrides(datasets_root, output),
        f"MODEL.WEIGHTS={trained / 'model_final.pth'}",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert not list(output.glob("model_*.pth")) and not (output / "metrics.json").exists()
    during_training = json.loads((trained / "inference/shapes_val/evaluation.json").read_text())
    eval_only = json.loads((output / "inference/shapes_val/evaluation.json").read_text())
    assert same(eval_only, during_training)
    # its config and log go to inference/, never over a training run's
    assert (output / "inference" / "config.yaml").is_file()
    assert (output / "inference" / "log.txt").is_file()
    assert not (output / "config.yaml").exists() and not (output / "log.txt").exists()


def test_eval_only_in_the_training_folder_leaves_its_files_alone(
    trained: Path, datasets_root: Path
) -> None:
    """--eval-only --resume in the training run's own folder: config.yaml (with the seed the
    run drew), log.txt and the checkpoints stay as training wrote them."""
    before = {p.name: p.read_bytes() for p in trained.iterdir() if p.is_file()}
    result = train_net(
        datasets_root,
        "--config-file",
        str(CONFIG),
        "--eval-only",
        "--resume",
        *overrides(datasets_root, trained),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    after = {p.name: p.read_bytes() for p in trained.iterdir() if p.is_file()}
    assert after == before
    assert (trained / "inference" / "config.yaml").is_file()


def test_config_typo_is_one_message_not_a_traceback(datasets_root: Path) -> None:
    result = train_net(datasets_root, "--config-file", str(CONFIG), "SOLVER.BASE_RL=0.1")
    assert result.returncode != 0
    assert "did you mean SOLVER.BASE_LR" in result.stderr
    assert "Traceback" not in result.stderr


def test_detectron2_style_pairs_and_key_value_overrides() -> None:
    opts = ["SOLVER.MAX_ITER", "6", "SOLVER.BASE_LR=0.1", "--", "MODEL.WEIGHTS", "a.pth"]
    parsed = parse_overrides(opts)
    assert parsed == ["SOLVER.MAX_ITER=6", "SOLVER.BASE_LR=0.1", "MODEL.WEIGHTS=a.pth"]
    cfg = load_config(CONFIG, parsed)
    assert cfg.SOLVER.MAX_ITER == 6 and cfg.SOLVER.BASE_LR == 0.1 and cfg.MODEL.WEIGHTS == "a.pth"
    with pytest.raises(ConfigError, match=r"SOLVER\.MAX_ITER"):
        parse_overrides(["SOLVER.BASE_LR=0.1", "SOLVER.MAX_ITER"])
    args = default_argument_parser().parse_args(
        ["--config-file", "x.yaml", "--resume", "--num-gpus", "2", "SOLVER.MAX_ITER", "6"]
    )
    assert args.resume and args.num_gpus == 2 and not args.eval_only
    assert parse_overrides(args.opts) == ["SOLVER.MAX_ITER=6"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["SOLVER.MAX_ITER=5", "SOLVER.STEPS=[4, 2]"], "SOLVER.STEPS"),
        (["--num-gpus", "3"], "do not divide among 3 processes"),
        (
            ["TEST.EVALUATORS=[cocoo]"],
            "TEST.EVALUATORS: no 'cocoo' in the EVALUATOR registry; registered: coco, "
            "pascal_voc; did you mean 'coco'?",
        ),
        (["SOLVER.BASE_LR=0.1", "--num-gpus", "2"], "must come before"),
    ],
)
def test_settings_that_do_not_fit_together_stop_before_training(
    datasets_root: Path, arguments: list[str], message: str
) -> None:
    result = train_net(datasets_root, "--config-file", str(CONFIG), *arguments)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert "Starting training" not in result.stdout


@pytest.mark.parametrize("processes", ["1", "2"])
def test_eval_only_without_weights_is_refused_before_any_set_up(
    datasets_root: Path, tmp_path: Path, processes: str
) -> None:
    result = train_net(
        datasets_root,
        "--config-file",
        str(CONFIG),
        "--eval-only",
        "--num-gpus",
        processes,
        *overrides(datasets_root, tmp_path / "eval"),
    )
    assert result.returncode == 2
    assert "--eval-only needs trained weights" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "eval").exists()


def test_values_with_equal_signs_and_lower_case_keys() -> None:
    assert parse_overrides(["MODEL.WEIGHTS", "runs/lr=0.1/model.pth", "SEED", "3"]) == [
        "MODEL.WEIGHTS=runs/lr=0.1/model.pth",
        "SEED=3",
    ]
    (lower,) = parse_overrides(["solver.base_lr=0.1"])  # passed on: load_config names the key
    with pytest.raises(ConfigError, match=r"unknown config key solver\.base_lr"):
        load_config(CONFIG, [lower])
