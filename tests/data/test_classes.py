"""Class names read from a COCO file without its annotations, and the per-class table logged
when data is loaded, counted by hand."""

from __future__ import annotations

import json

import pytest

from detkit.config import ConfigError
from detkit.data import MetadataCatalog
from detkit.data.classes import class_histogram_table, coco_class_names

CATEGORIES = [{"id": 2, "name": "right"}, {"id": 1, "name": "first"}]
DECOY = {"categories": [{"id": 1, "name": "wrong"}]}


@pytest.mark.parametrize(
    "body",
    [
        {"info": DECOY, "images": [], "annotations": [], "categories": CATEGORIES},
        {"images": [], "annotations": [], "categories": CATEGORIES, "info": DECOY},
        {"categories": CATEGORIES, "images": [{"id": 1, "kind": "categories"}], "x": [DECOY]},
    ],
)
def test_coco_class_names_come_from_the_top_level_categories(tmp_path, body: dict) -> None:
    (tmp_path / "a.json").write_text(json.dumps(body, indent=1))
    assert coco_class_names(tmp_path / "a.json") == ["first", "right"]


def test_coco_class_names_of_a_file_that_is_no_object(tmp_path) -> None:
    (tmp_path / "a.json").write_text(json.dumps([{"categories": CATEGORIES}]))
    with pytest.raises(ConfigError, match=r"a\.json: not a COCO instances file .* JSON list"):
        coco_class_names(tmp_path / "a.json")


def records() -> list[dict]:
    annotations = [
        [{"category_id": 0}, {"category_id": 2}, {"category_id": 2}],
        [{"category_id": 2, "iscrowd": 1}],  # a crowd region is not counted
        [],
    ]
    return [{"width": 4, "height": 3, "annotations": a} for a in annotations]


def test_counts_per_class_with_names() -> None:
    MetadataCatalog.get("hist_named").set(thing_classes=["cat", "dog", "bird"])
    try:
        table = class_histogram_table(["hist_named"], records()).splitlines()
    finally:
        MetadataCatalog.remove("hist_named")
    assert table[0] == "hist_named: 3 images, 3 instances"
    assert [line.split() for line in table[2:]] == [["cat", "1"], ["dog", "0"], ["bird", "2"]]


def test_counts_per_class_id_without_names() -> None:
    table = class_histogram_table(["hist_a", "hist_b"], records()).splitlines()
    assert table[0] == "hist_a + hist_b: 3 images, 3 instances"
    assert [line.split() for line in table[2:]] == [["0", "1"], ["2", "2"]]
