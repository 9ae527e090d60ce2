"""Selective-search proposals and tools/compute_proposals.py, on a few generated shapes images."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from detkit.data import attach_proposals, load_proposals
from detkit.data.datasets.coco import load_coco_json
from detkit.data.datasets.shapes import ensure_shapes
from detkit.data.selective_search import (
    compute_proposal_file,
    ensure_proposal_file,
    selective_search_boxes,
)
from detkit.structures import Boxes, pairwise_iou

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shapes_dicts(tmp_path_factory) -> list[dict]:
    folder = ensure_shapes(tmp_path_factory.mktemp("data"), "val", num_images=3, seed=11)
    return load_coco_json(folder / "annotations.json", folder)


def test_proposals_cover_the_objects(shapes_dicts: list[dict], tmp_path: Path) -> None:
    path = compute_proposal_file(shapes_dicts, tmp_path / "ss.pkl", workers=1)
    assert not (tmp_path / "ss.pkl.parts").exists()
    dicts = attach_proposals(shapes_dicts, load_proposals(path), "ss.pkl")
    for record in dicts:
        boxes = record["proposal_boxes"]
        assert len(boxes) > 10 and (boxes[:, 2] <= record["width"]).all()
        gt = Boxes(np.array([a["bbox"] for a in record["annotations"]], np.float32))
        best = pairwise_iou(gt, Boxes(boxes)).max(dim=1).values
        assert (best >= 0.5).float().mean() >= 0.5  # most objects have a good proposal


def test_resumes_from_finished_images(
    shapes_dicts: list[dict], tmp_path: Path, monkeypatch
) -> None:
    parts = tmp_path / "ss.pkl.parts"
    parts.mkdir()
    planted = np.array([[1, 2, 3, 4]], np.float32)
    np.save(parts / "0000000.npy", planted)  # image 0 counts as already done
    path = compute_proposal_file(shapes_dicts, tmp_path / "ss.pkl", workers=1)
    proposals = load_proposals(path)
    assert proposals[str(shapes_dicts[0]["image_id"])][0].tolist() == planted.tolist()
    monkeypatch.setattr("detkit.data.selective_search.compute_proposal_file", pytest.fail)
    assert ensure_proposal_file(shapes_dicts, path) == path  # cached: not computed again


def test_selective_search_rejects_unknown_mode() -> None:
    with pytest.raises(ValueError, match="fast"):
        selective_search_boxes(np.zeros((8, 8, 3), np.uint8), mode="slow")


def test_compute_proposals_tool(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "compute_proposals.py"),
            "--dataset",
            "nope",
            "--out",
            "x.pkl",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2 and "dataset 'nope' is not registered" in result.stderr


def test_worker_processes_give_the_same_file(shapes_dicts: list[dict], tmp_path: Path) -> None:
    one = load_proposals(compute_proposal_file(shapes_dicts, tmp_path / "one.pkl", workers=1))
    two = load_proposals(compute_proposal_file(shapes_dicts, tmp_path / "two.pkl", workers=2))
    assert one.keys() == two.keys()
    for key in one:
        assert np.array_equal(one[key][0], two[key][0])
