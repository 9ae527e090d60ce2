"""Proposal files: both layouts round-trip to the right boxes for the right image ids."""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from detkit.data import (
    DatasetCatalog,
    attach_proposals,
    get_detection_dataset_dicts,
    load_proposals,
)
from detkit.data.proposal_store import record_proposals


def records() -> list[dict]:
    return [
        {
            "file_name": "/x/img_a.jpg",
            "image_id": 11,
            "height": 100,
            "width": 200,
            "annotations": [],
        },
        {"file_name": "/x/img_b.jpg", "image_id": 22, "height": 50, "width": 60, "annotations": []},
        {"file_name": "/x/img_c.jpg", "image_id": 33, "height": 50, "width": 60, "annotations": []},
    ]


def write_pickle(path: Path, **data) -> Path:
    with open(path, "wb") as file:
        pickle.dump(data, file)
    return path


def test_pickle_proposals_paired_by_id_not_position(tmp_path: Path, caplog) -> None:
    path = write_pickle(
        tmp_path / "p.pkl",
        ids=[22, 11, 99],  # a different order than the dataset, and one unknown id
        boxes=[
            np.array([[1, 2, 30, 40], [5, 5, 80, 70]], dtype=np.float32),
            np.array([[0, 0, 10, 10]], dtype=np.float32),
            np.array([[0, 0, 1, 1]], dtype=np.float32),
        ],
        objectness_logits=[np.array([0.1, 0.9]), np.array([2.0]), np.array([0.0])],
        bbox_mode=0,
    )
    with caplog.at_level(logging.WARNING):
        dicts = attach_proposals(records(), load_proposals(path), "p.pkl")
    a, b, c = dicts
    assert a["proposal_boxes"].tolist() == [[0, 0, 10, 10]]
    # sorted by objectness, clipped to the 60 x 50 image
    assert b["proposal_boxes"].tolist() == [[5, 5, 60, 50], [1, 2, 30, 40]]
    assert b["proposal_objectness_logits"].tolist() == pytest.approx([0.9, 0.1])
    assert c["proposal_boxes"].shape == (0, 4)
    assert "1 images have no proposals, e.g. '33'" in caplog.text
    assert "1 proposal ids match no image, e.g. '99'" in caplog.text


def test_xywh_pickles_topk_and_min_size_keep_grid_duplicates(tmp_path: Path) -> None:
    boxes = np.array(
        [[0, 0, 40, 40], [1, 1, 39, 39], [0, 0, 2, 2], [50, 20, 80, 30], [0, 0, 40, 40]],
        np.float32,
    )
    path = write_pickle(
        tmp_path / "p.pkl",
        ids=[11],
        boxes=[boxes],
        objectness_logits=[np.array([4.0, 3, 2, 1, 0])],
        bbox_mode=1,
    )
    (record,) = attach_proposals(records()[:1], load_proposals(path), "p.pkl", topk=3, min_size=3)
    # XYWH -> XYXY; box 2 is too small; box 1 (a duplicate of box 0 on a 1/16 grid) is kept,
    # since duplicates are the model's business (on its own grid); topk then cuts box 4
    assert record["proposal_boxes"].tolist() == [
        [0, 0, 40, 40],
        [1, 1, 40, 40],
        [50, 20, 130, 50],
    ]


def test_mat_proposals_are_converted_and_matched_by_file_stem(tmp_path: Path) -> None:
    boxes = np.empty((1, 2), dtype=object)
    boxes[0, 0] = np.array([[3, 2, 20, 10]], dtype=np.float64)  # 1-based y1, x1, y2, x2
    boxes[0, 1] = np.array([[1, 1, 50, 60], [10, 10, 12, 12]], dtype=np.float64)
    images = np.empty((1, 2), dtype=object)
    images[0, 0], images[0, 1] = "img_c", "img_a"
    savemat(tmp_path / "ss.mat", {"boxes": boxes, "images": images})
    dicts = attach_proposals(records(), load_proposals(tmp_path / "ss.mat"), "ss.mat")
    assert dicts[2]["proposal_boxes"].tolist() == [[1, 2, 10, 20]]
    assert dicts[0]["proposal_boxes"].tolist() == [[0, 0, 60, 50], [9, 9, 12, 12]]
    assert dicts[1]["proposal_boxes"].shape == (0, 4)


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_booby_trapped_pickle_is_refused(tmp_path: Path) -> None:
    path = write_pickle(tmp_path / "evil.pkl", ids=[11], boxes=[Exploit()])
    with pytest.raises(ValueError, match=r"refusing to load (posix|os)\.system"):
        load_proposals(path)


def test_proposal_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"gone\.pkl"):
        load_proposals(tmp_path / "gone.pkl")
    bad = write_pickle(tmp_path / "bad.pkl", ids=[11, 22], boxes=[np.zeros((1, 4))])
    with pytest.raises(ValueError, match="differ in length"):
        load_proposals(bad)
    shape = write_pickle(tmp_path / "shape.pkl", ids=[11], boxes=[np.zeros((2, 5))])
    with pytest.raises(ValueError, match=r"image 11 have shape \(2, 5\)"):
        load_proposals(shape)
    nothing = write_pickle(tmp_path / "n.pkl", ids=[5], boxes=[np.zeros((1, 4))])
    with pytest.raises(ValueError, match="no proposal matches any of the 3 images"):
        attach_proposals(records(), load_proposals(nothing), "n.pkl")


def test_dataset_dicts_joined_with_proposals_and_difficult_dropped(tmp_path: Path) -> None:
    def one():
        return [
            {
                "file_name": "/x/img_a.jpg", "image_id": 11, "height": 100, "width": 200,
                "annotations": [
                    {"bbox": [0, 0, 5, 5], "category_id": 0, "difficult": 1},
                    {"bbox": [1, 1, 9, 9], "category_id": 1, "difficult": 0},
                ],
            }
        ]  # fmt: skip

    DatasetCatalog.register("tiny_props", one)
    try:
        path = write_pickle(tmp_path / "p.pkl", ids=[11], boxes=[np.array([[0, 0, 10, 10]])])
        (record,) = get_detection_dataset_dicts(["tiny_props"], [str(path)])
        assert [a["category_id"] for a in record["annotations"]] == [1]
        assert record_proposals(record)[0].tolist() == [[0, 0, 10, 10]]
        with pytest.raises(ValueError, match="1 datasets but 2 proposal files"):
            get_detection_dataset_dicts(["tiny_props"], [str(path), str(path)])
    finally:
        DatasetCatalog.remove("tiny_props")


def test_each_reading_fits_as_the_boxes_read_that_way_fit() -> None:
    """The box-order check's column formulas equal reading the rows in each order and testing
    the boxes, in float32."""
    from detkit.data.proposals import FIT_SLACK, READINGS, _fits

    rng = np.random.default_rng(3)
    rows = rng.uniform(-30, 330, (5000, 4)).astype(np.float32)
    rows[:100, 2] = rows[:100, 0]  # zero widths
    sides = rng.choice([[200, 100], [100, 300], [320, 240]], 5000).astype(np.float32)
    got = _fits(rows, sides)
    slack = np.float32(FIT_SLACK) * sides
    for name, read in READINGS.items():
        boxes = read(rows)
        want = (
            (boxes[:, 2] >= boxes[:, 0])
            & (boxes[:, 3] >= boxes[:, 1])
            & (boxes[:, :2] >= -slack).all(axis=1)
            & (boxes[:, 2:] <= sides + slack).all(axis=1)
        )
        np.testing.assert_array_equal(got[name], want, err_msg=name)
        assert 0.05 < want.mean() < 0.95  # both outcomes occur
