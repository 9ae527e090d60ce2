"""The per-class table logged when data is loaded, counted by hand."""

from __future__ import annotations

from detkit.data import MetadataCatalog
from detkit.data.classes import class_histogram_table


def records() -> list[dict]:
    return [
        {"annotations": [{"category_id": 0}, {"category_id": 2}, {"category_id": 2}]},
        {"annotations": [{"category_id": 2, "iscrowd": 1}]},  # a crowd region is not counted
        {"annotations": []},
    ]


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
