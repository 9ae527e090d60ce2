"""Dataset catalogs and the COCO / PASCAL VOC loaders, on tiny files the tests write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detkit.data import (
    DatasetCatalog,
    MetadataCatalog,
    load_voc_instances,
    register_coco_instances,
    register_pascal_voc,
)


def write_coco(path: Path, extra_annotation: dict | None = None) -> Path:
    annotations = [
        {
            "id": 1,
            "image_id": 7,
            "category_id": 5,
            "bbox": [10, 20, 30, 40],
            "iscrowd": 0,
            "area": 1200,
        },
        {
            "id": 2,
            "image_id": 7,
            "category_id": 9,
            "bbox": [0, 0, 5.5, 4],
            "iscrowd": 1,
            "area": 22,
        },
        {"id": 3, "image_id": 3, "category_id": 1, "bbox": [1, 2, 3, 4], "iscrowd": 0, "area": 12},
        {"id": 4, "image_id": 3, "category_id": 1, "bbox": [1, 2, 0, 4], "iscrowd": 0, "area": 0},
    ]
    if extra_annotation:
        annotations.append(extra_annotation)
    data = {
        "images": [
            {"id": 7, "file_name": "b.jpg", "height": 100, "width": 120},
            {"id": 3, "file_name": "a.jpg", "height": 50, "width": 60},
        ],
        "categories": [
            {"id": 9, "name": "triangle"},
            {"id": 1, "name": "circle"},
            {"id": 5, "name": "square"},
        ],
        "annotations": annotations,
    }
    path.write_text(json.dumps(data))
    return path


def test_coco_json_to_dataset_dicts(tmp_path: Path) -> None:
    register_coco_instances(
        "tiny_coco", {"note": "test"}, write_coco(tmp_path / "a.json"), tmp_path / "images"
    )
    try:
        dicts = DatasetCatalog.get("tiny_coco")
        assert [d["image_id"] for d in dicts] == [3, 7]
        first, second = dicts
        assert first["file_name"] == str(tmp_path / "images" / "a.jpg")
        assert (first["height"], first["width"]) == (50, 60)
        # the box without area is dropped; xywh -> xyxy; ids 1, 5, 9 -> 0, 1, 2; each keeps
        # its annotation id
        assert first["annotations"] == [
            {"id": 3, "bbox": [1.0, 2.0, 4.0, 6.0], "category_id": 0, "iscrowd": 0}
        ]
        assert second["annotations"] == [
            {"id": 1, "bbox": [10.0, 20.0, 40.0, 60.0], "category_id": 1, "iscrowd": 0},
            {"id": 2, "bbox": [0.0, 0.0, 5.5, 4.0], "category_id": 2, "iscrowd": 1},
        ]
        metadata = MetadataCatalog.get("tiny_coco")
        assert metadata.thing_classes == ["circle", "square", "triangle"]
        assert metadata.thing_dataset_id_to_contiguous_id == {1: 0, 5: 1, 9: 2}
        assert (metadata.evaluator_type, metadata.note) == ("coco", "test")
    finally:
        DatasetCatalog.remove("tiny_coco")
        MetadataCatalog.remove("tiny_coco")


def test_coco_errors(tmp_path: Path) -> None:
    from detkit.data import load_coco_json

    with pytest.raises(FileNotFoundError, match=r"missing\.json"):
        load_coco_json(tmp_path / "missing.json", tmp_path)
    bad = {"id": 9, "image_id": 3, "category_id": 4, "bbox": [0, 0, 1, 1], "iscrowd": 0, "area": 1}
    with pytest.raises(ValueError, match="annotation 9 of image 3 has category 4"):
        load_coco_json(write_coco(tmp_path / "bad.json", bad), tmp_path)


def write_voc(root: Path, objects: dict[str, list[tuple]]) -> Path:
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "Annotations").mkdir()
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(objects) + "\n")
    for image_id, boxes in objects.items():
        xml_objects = "".join(
            f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{x1}</xmin>"
            f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
            for name, difficult, x1, y1, x2, y2 in boxes
        )
        (root / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><size><width>500</width><height>375</height><depth>3</depth></size>"
            f"{xml_objects}</annotation>"
        )
    return root


def test_voc_folder_to_dataset_dicts(tmp_path: Path) -> None:
    root = write_voc(
        tmp_path / "VOC2007",
        {"000005": [("chair", 0, 263, 211, 324, 339), ("person", 1, 1, 1, 500, 375)], "000007": []},
    )
    register_pascal_voc("tiny_voc", root, "trainval", 2007)
    try:
        first, second = DatasetCatalog.get("tiny_voc")
        assert first["image_id"] == "000005" and first["file_name"].endswith(
            "JPEGImages/000005.jpg"
        )
        assert (first["height"], first["width"]) == (375, 500)
        assert first["annotations"] == [
            {"bbox": [262.0, 210.0, 324.0, 339.0], "category_id": 8, "difficult": 0},
            {"bbox": [0.0, 0.0, 500.0, 375.0], "category_id": 14, "difficult": 1},
        ]
        assert second["annotations"] == []
        assert MetadataCatalog.get("tiny_voc").thing_classes[8] == "chair"
    finally:
        DatasetCatalog.remove("tiny_voc")
        MetadataCatalog.remove("tiny_voc")


def test_voc_errors(tmp_path: Path) -> None:
    root = write_voc(tmp_path / "VOC", {"1": [("unicorn", 0, 1, 1, 5, 5)]})
    with pytest.raises(ValueError, match=r"1\.xml: class 'unicorn'"):
        load_voc_instances(root, "trainval")
    with pytest.raises(FileNotFoundError, match=r"expected at .*test\.txt"):
        load_voc_instances(root, "test")


def test_catalog_errors() -> None:
    DatasetCatalog.register("tiny_twice", list)
    try:
        with pytest.raises(ValueError, match="already registered"):
            DatasetCatalog.register("tiny_twice", list)
        with pytest.raises(KeyError, match="did you mean 'tiny_twice'"):
            DatasetCatalog.get("tiny_twise")
    finally:
        DatasetCatalog.remove("tiny_twice")


def test_builtin_datasets_say_where_they_are_expected(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the default root ./datasets is empty here
    with pytest.raises(
        FileNotFoundError, match=r"not found, expected at datasets/VOC2007/ImageSets/Main/test\.txt"
    ):
        DatasetCatalog.get("voc_2007_test")
    with pytest.raises(FileNotFoundError, match=r"instances_val2017\.json"):
        DatasetCatalog.get("coco_2017_val")
    assert MetadataCatalog.get("voc_2012_trainval").year == 2012
