"""Selective-search proposals and tools/compute_proposals.py, on a few generated shapes images."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from detkit.data import attach_proposals, load_proposals, selective_search
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


def test_resumes_from_the_images_an_interrupted_run_finished(
    shapes_dicts: list[dict], tmp_path: Path, monkeypatch
) -> None:
    out = tmp_path / "ss.pkl"
    last = shapes_dicts[-1]["file_name"]
    read_image = selective_search.read_image

    def stop_at_the_last_image(file_name, *args):
        if file_name == last:
            raise KeyboardInterrupt  # the run is stopped before its last image
        return read_image(file_name, *args)

    monkeypatch.setattr(selective_search, "read_image", stop_at_the_last_image)
    with pytest.raises(KeyboardInterrupt):
        compute_proposal_file(shapes_dicts, out, workers=1)
    monkeypatch.undo()
    searched = []
    search = selective_search.selective_search_boxes

    def counted_search(image, *args):
        searched.append(image.shape)
        return search(image, *args)

    monkeypatch.setattr(selective_search, "selective_search_boxes", counted_search)
    path = compute_proposal_file(shapes_dicts, out, workers=1)
    assert len(searched) == 1  # the finished images were not searched again
    fresh = load_proposals(compute_proposal_file(shapes_dicts, tmp_path / "fresh.pkl"))
    resumed = load_proposals(path)
    assert all(np.array_equal(resumed[key][0], fresh[key][0]) for key in fresh)
    monkeypatch.setattr("detkit.data.selective_search.compute_proposal_file", pytest.fail)
    assert ensure_proposal_file(shapes_dicts, path) == path  # cached: not computed again


def test_non_positive_counts_are_refused(shapes_dicts: list[dict], tmp_path: Path) -> None:
    for count in (0, -5):
        with pytest.raises(ValueError, match=f"max_proposals must be a positive .* got {count}"):
            compute_proposal_file(shapes_dicts, tmp_path / "ss.pkl", max_proposals=count)
    assert list(tmp_path.iterdir()) == []


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
