"""Datasets registered in Python (``DatasetCatalog.register(name, func)``): their records get the
rules COCO and VOC files get, and detectron2's box modes, when the catalog fetches them."""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from detkit.data import DatasetCatalog, MetadataCatalog, get_detection_dataset_dicts
from detkit.data.validation import DatasetError
from detkit.structures import BoxMode

NAME = "registered_in_python"


@pytest.fixture
def register() -> Iterator[Callable[[list[dict]], list[dict]]]:
    """``register(records)``: registers a function returning ``records`` as ``NAME`` and
    returns what ``DatasetCatalog.get(NAME)`` gives."""

    def fetch(records: list[dict]) -> list[dict]:
        DatasetCatalog.register(NAME, lambda: records)
        return DatasetCatalog.get(NAME)

    yield fetch
    if NAME in DatasetCatalog:
        DatasetCatalog.remove(NAME)
    MetadataCatalog.remove(NAME)


def record(*annotations: dict, image_id: int = 1, file_name: str = "a.jpg") -> dict:
    """A record of a 100x80 image."""
    return {
        "file_name": file_name,
        "height": 80,
        "width": 100,
        "image_id": image_id,
        "annotations": list(annotations),
    }


class Detectron2BoxMode(enum.IntEnum):  # detectron2.structures.BoxMode's values
    XYXY_ABS = 0
    XYWH_ABS = 1
    XYXY_REL = 2


def test_xywh_boxes_are_converted_to_xyxy(register) -> None:
    given = [
        record(
            {"bbox": [50, 40, 20, 10], "bbox_mode": 1, "category_id": 0},
            {"bbox": [5, 6, 10, 20], "bbox_mode": Detectron2BoxMode.XYWH_ABS, "category_id": 2},
            {"bbox": [1, 2, 30, 40], "bbox_mode": Detectron2BoxMode.XYXY_ABS, "category_id": 1},
            {"bbox": [1, 2, 30, 40], "category_id": 1, "iscrowd": 1},  # no mode: XYXY_ABS
        )
    ]
    (got,) = register(given)
    assert [a["bbox"] for a in got["annotations"]] == [
        [50, 40, 70, 50],
        [5, 6, 15, 26],
        [1, 2, 30, 40],
        [1, 2, 30, 40],
    ]
    assert [a.get("bbox_mode") for a in got["annotations"]] == [0, 0, 0, None]
    assert got["annotations"][3]["iscrowd"] == 1
    assert given[0]["annotations"][0] == {
        "bbox": [50, 40, 20, 10],
        "bbox_mode": 1,
        "category_id": 0,
    }


def test_training_records_hold_the_converted_boxes(register) -> None:
    """get_detection_dataset_dicts (what training reads) → the XYWH box in XYXY, not dropped."""
    register([record({"bbox": [50, 40, 20, 10], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0})])
    (got,) = get_detection_dataset_dicts([NAME])
    assert got["annotations"][0]["bbox"] == [50, 40, 70, 50]


def test_proposal_boxes_follow_their_mode(register) -> None:
    given = record()
    given["proposal_boxes"] = np.array([[10, 20, 30, 40]], np.float32)
    given["proposal_bbox_mode"] = 1
    (got,) = register([given])
    assert got["proposal_boxes"].tolist() == [[10, 20, 40, 60]]
    assert got["proposal_bbox_mode"] == BoxMode.XYXY_ABS


@pytest.mark.parametrize(
    ("annotation", "message"),
    [
        ({"bbox": [0, 0, 1, 1], "bbox_mode": 2, "category_id": 0}, r"bbox_mode 2 \(XYXY_REL\)"),
        ({"bbox": [0, 0, 1, 1], "bbox_mode": 4, "category_id": 0}, r"bbox_mode 4 \(XYWHA_ABS\)"),
        ({"bbox": [0, 0, 1, 1], "bbox_mode": "xywh", "category_id": 0}, "bbox_mode 'xywh'"),
        ({"bbox": [0, 0, float("nan"), 1], "category_id": 0}, "not a finite number"),
        ({"bbox": [30, 30, 10, 40], "category_id": 0}, "negative width or height"),
        ({"bbox": [0, 0, 500, 40], "category_id": 0}, "extends past the 100x80 image"),
        ({"bbox": [0, 0, 5], "category_id": 0}, "is not four numbers"),
        ({"bbox": [0, 0, 5, 5], "category_id": -1}, "category_id -1 is not a class index"),
        ({"bbox": [0, 0, 5, 5], "category_id": "cat"}, "category_id 'cat' is not a class index"),
        ({"bbox": [0, 0, 5, 5]}, "needs a 'bbox' and a 'category_id'"),
    ],
)
def test_a_bad_annotation_is_refused_naming_dataset_record_and_annotation(
    register, annotation: dict, message: str
) -> None:
    good = {"bbox": [0, 0, 5, 5], "category_id": 0}
    records = [record(good), record(good, annotation, image_id=2, file_name="b.jpg")]
    with pytest.raises(
        DatasetError, match=rf"dataset '{NAME}': record 1 \(b\.jpg\), annotation 1\b.*{message}"
    ):
        register(records)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("not a dict", r"record 1 is a str, not a dict"),
        ({"image_id": 2, "height": 80, "width": 100}, r"record 1 needs a 'file_name'"),
        ({"file_name": "b.jpg", "height": 80, "width": 100}, r"record 1 \(b\.jpg\) has image_id"),
        (record(file_name="a.jpg", image_id=2), r"file 'a\.jpg' is listed twice"),
        (record(file_name="b.jpg", image_id=1), r"image id 1 is given twice"),
        ({**record(image_id=2, file_name="b.jpg"), "height": 0}, r"height 0 is not positive"),
        ({**record(image_id=2, file_name="b.jpg"), "annotations": {}}, r"not a list of dicts"),
    ],
)
def test_a_bad_record_is_refused_naming_dataset_and_record(register, bad, message) -> None:
    with pytest.raises(DatasetError, match=rf"dataset '{NAME}': .*{message}"):
        register([record(), bad])


def test_a_loader_that_returns_no_list(register) -> None:
    with pytest.raises(DatasetError, match=rf"dataset '{NAME}': its loader returned a tuple"):
        register((record(),))


def test_drops_and_clips_are_counted(register, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        (got,) = register(
            [
                record(
                    {"bbox": [10, 10, 10, 30], "category_id": 0},  # no area: dropped
                    {"bbox": [-1, 0, 101, 80], "category_id": 0},  # 1 px past: clipped
                )
            ]
        )
    assert [a["bbox"] for a in got["annotations"]] == [[0, 0, 100, 80]]
    assert f"dataset '{NAME}': dropped 1 boxes without area" in caplog.text
    assert "clipped 1 boxes" in caplog.text


def test_missing_annotations_and_size(register, tmp_path: Path) -> None:
    """A record without annotations has none; one without a size gets its file's."""
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((30, 40, 3), np.uint8))
    (got,) = register([{"file_name": str(image), "image_id": "a"}])
    assert (got["height"], got["width"], got["annotations"]) == (30, 40, [])


def test_a_loader_registered_as_checked_is_returned_as_it_is() -> None:
    """detkit's COCO, VOC and shapes loaders apply the rules as they read (``checked=True``):
    the catalog does not check their records twice."""
    DatasetCatalog.register("tiny_twice_checked", lambda: records, checked=True)
    records = [{"not": "a record"}]
    try:
        assert DatasetCatalog.get("tiny_twice_checked") is records
    finally:
        DatasetCatalog.remove("tiny_twice_checked")
