"""RPN project: its commands refuse bad weights, images and proposal files in one line.

`projects/RPN/compute_proposals.py` reads a config, the RPN's weights (`MODEL.WEIGHTS`) and a
dataset's images; `projects/RPN/evaluate_proposals.py` reads a proposal file and a dataset.
Each refusal is one line naming the file, ending the command with exit status 2 and no
traceback, and `compute_proposals.py` leaves no proposal file behind (the file appears only when
every image is done). Proposal files are read by detkit's own loaders, with their checks: a
missing file, one that is not a pickle, one that is not of detectron2's layout and one whose
boxes fit the images only in another order are refused before anything is scored.
"""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import torch
from reliability_helpers import REPO, SHAPES_CONFIG, TinyRun, run_tool

from detkit.config import get_default_config, load_config
from detkit.modeling import build_model

PROJECT = REPO / "projects" / "RPN"
RPN_CONFIG = PROJECT / "configs" / "shapes_rpn.yaml"
TINY = ["MODEL.SMALL_CONVNET.CHANNELS=[8, 16]", "INPUT.MIN_SIZE_TEST=96", "INPUT.MAX_SIZE_TEST=160"]


def compute_proposals(tiny_run: TinyRun, weights: Path, out: Path):
    return run_tool(
        PROJECT / "compute_proposals.py",
        *("--config-file", RPN_CONFIG, "--dataset", "shapes_val", "--out", out),
        *TINY,
        f"MODEL.WEIGHTS={weights}",
        root=tiny_run.root,
    )


def evaluate_proposals(tiny_run: TinyRun, proposals: Path):
    return run_tool(
        PROJECT / "evaluate_proposals.py",
        *("--dataset", "shapes_val", "--proposals", proposals),
        root=tiny_run.root,
    )


def assert_one_line(result, tool: str, *words: str) -> None:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"{tool}: ")
    for word in words:
        assert word in line


def saved_model(path: Path, config: Path, *overrides: str) -> Path:
    """The initial weights of ``config``'s tiny model, as detkit saves a checkpoint."""
    if str(PROJECT) not in sys.path:
        sys.path.insert(0, str(PROJECT))
    import rpn

    cfg = load_config(
        config, [*TINY, *overrides], defaults=rpn.add_rpn_config(get_default_config())
    )
    torch.save({"model": build_model(cfg).state_dict()}, path)
    return path


def test_weights_file_of_random_bytes(tiny_run: TinyRun, tmp_path: Path) -> None:
    """compute_proposals.py, MODEL.WEIGHTS a file of random bytes → one line naming the file,
    exit 2, no proposal file."""
    weights = tmp_path / "model.pth"
    weights.write_bytes(np.random.default_rng(0).bytes(4096))
    out = tmp_path / "proposals.pkl"
    assert_one_line(compute_proposals(tiny_run, weights, out), "compute_proposals", str(weights))
    assert not out.exists()


def test_weights_of_a_fast_rcnn_model(tiny_run: TinyRun, tmp_path: Path) -> None:
    """compute_proposals.py, MODEL.WEIGHTS a Fast R-CNN checkpoint (no RPN in it) → one line
    naming the file, exit 2, no proposal file."""
    weights = saved_model(tmp_path / "fast_rcnn.pth", SHAPES_CONFIG, "MODEL.ROI_BOX_HEAD.FC_DIM=32")
    out = tmp_path / "proposals.pkl"
    assert_one_line(compute_proposals(tiny_run, weights, out), "compute_proposals", str(weights))
    assert not out.exists()


def test_an_image_of_the_dataset_is_missing(tiny_run: TinyRun, tmp_path: Path) -> None:
    """compute_proposals.py over a dataset one of whose images is gone → one line naming the
    image, exit 2, no proposal file."""
    weights = saved_model(tmp_path / "rpn.pth", RPN_CONFIG)
    annotations = json.loads((tiny_run.root / "shapes/val/annotations.json").read_text())
    image = Path(annotations["images"][0]["file_name"]).name
    root = tmp_path / "datasets"
    split = root / "shapes" / "val"
    (split / "images").mkdir(parents=True)
    source = tiny_run.root / "shapes" / "val"
    for item in source.iterdir():
        if item.name != "images":
            (split / item.name).symlink_to(item)
    for item in (source / "images").iterdir():
        if item.name != image:
            (split / "images" / item.name).symlink_to(item)
    out = tmp_path / "proposals.pkl"
    result = compute_proposals(TinyRun(root, tiny_run.proposals), weights, out)
    assert_one_line(result, "compute_proposals", image)
    assert not out.exists()


def test_proposal_file_that_is_missing(tiny_run: TinyRun, tmp_path: Path) -> None:
    """evaluate_proposals.py, a proposal file that does not exist → one line naming it, exit 2."""
    missing = tmp_path / "nowhere.pkl"
    assert_one_line(evaluate_proposals(tiny_run, missing), "evaluate_proposals", str(missing))


def test_proposal_file_that_is_not_a_pickle(tiny_run: TinyRun, tmp_path: Path) -> None:
    """evaluate_proposals.py, a proposal file of text → one line naming it, exit 2."""
    text = tmp_path / "proposals.pkl"
    text.write_text("ids,boxes\n1,2\n")
    assert_one_line(evaluate_proposals(tiny_run, text), "evaluate_proposals", str(text))


def test_proposal_file_of_another_layout(tiny_run: TinyRun, tmp_path: Path) -> None:
    """evaluate_proposals.py, a pickle holding a list of arrays, not detectron2's dict → one
    line naming it, exit 2."""
    other = tmp_path / "proposals.pkl"
    other.write_bytes(pickle.dumps([np.zeros((3, 4), np.float32)]))
    assert_one_line(evaluate_proposals(tiny_run, other), "evaluate_proposals", str(other))


def test_proposal_boxes_written_as_xywh_but_labelled_xyxy(
    tiny_run: TinyRun, tmp_path: Path
) -> None:
    """evaluate_proposals.py, the ground truth as (x, y, w, h) rows in a file saying bbox_mode 0
    → refused naming the order that fits and the fix, exit 2; never scored as boxes."""
    coco = json.loads((tiny_run.root / "shapes/val/annotations.json").read_text())
    ids = [image["id"] for image in coco["images"]]
    by_image: dict[int, list] = {i: [] for i in ids}
    for annotation in coco["annotations"]:
        by_image[annotation["image_id"]].append(annotation["bbox"])  # COCO's (x, y, w, h)
    boxes = [np.array(by_image[i], np.float32).reshape(-1, 4) for i in ids]
    wrong = tmp_path / "proposals.pkl"
    data = {"ids": ids, "boxes": boxes, "bbox_mode": 0}
    wrong.write_bytes(pickle.dumps(data))
    result = evaluate_proposals(tiny_run, wrong)
    assert_one_line(result, "evaluate_proposals", str(wrong), "(x, y, w, h)", "bbox_mode 1")
