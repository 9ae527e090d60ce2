"""DatasetRecords and the COCO records cache: what a loader reads, without a copy per process."""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest

from detkit.data import MetadataCatalog, cached_coco_records, load_coco_json
from detkit.data.records import DatasetRecords, RecordSummary
from detkit.data.serialize import SerializedList


def dicts(prefix: str, count: int) -> list[dict]:
    return [
        {
            "file_name": f"{prefix}{i}.jpg",
            "image_id": i,
            "annotations": [
                {"bbox": [0, 0, 1, 1], "category_id": 0, "difficult": i % 2},
                {"bbox": [0, 0, 2, 2], "category_id": 1},
            ],
        }
        for i in range(count)
    ]


def test_concat_select_columns_and_difficult() -> None:
    first = DatasetRecords.of(dicts("a", 3), {"extra": ["x", "y", "z"]}, drop_difficult=True)
    second = DatasetRecords.of(dicts("b", 2))
    joined = DatasetRecords.concat([first, second])
    assert [r["file_name"] for r in joined] == ["a0.jpg", "a1.jpg", "a2.jpg", "b0.jpg", "b1.jpg"]
    assert [r.get("extra") for r in joined] == ["x", "y", "z", None, None]
    assert [len(r["annotations"]) for r in joined] == [2, 1, 2, 2, 2]  # b keeps difficult ones
    picked = joined.select([4, 1])
    assert [r["file_name"] for r in picked] == ["b1.jpg", "a1.jpg"] and picked[1]["extra"] == "y"
    assert [r["file_name"] for r in picked.select([1])] == ["a1.jpg"]
    assert joined[-1]["file_name"] == "b1.jpg"
    with pytest.raises(IndexError):
        joined[5]


def test_one_pass_summary_and_the_orientation_of_a_selection(monkeypatch) -> None:
    records = dicts("a", 4)
    for record, (w, h) in zip(records, [(4, 3), (3, 4), (5, 5), (2, 6)], strict=True):
        record["width"], record["height"] = w, h
    records[3]["annotations"] = [{"bbox": [0, 0, 1, 1], "category_id": 5, "iscrowd": 1}]
    loaded = DatasetRecords.of(records, {"proposal_rows": [None] * 4}, drop_difficult=True)
    summary = loaded.summary()
    assert summary.widths.tolist() == [4, 3, 5, 2] and summary.largest_category == 5
    assert summary.has_object.tolist() == [True, True, True, False]
    assert summary.instances == {0: 2, 1: 3}  # difficult left out, crowd not counted
    passes = []
    monkeypatch.setattr(RecordSummary, "of", lambda *a: passes.append(a))
    assert loaded.select([3, 0, 2]).landscape().tolist() == [False, True, True]
    assert passes == []  # the selection's orientation comes from the summary made before


def test_a_read_record_is_a_copy_its_reader_may_change() -> None:
    records = DatasetRecords.of(dicts("a", 2))
    records[0]["annotations"].clear()
    records[0]["file_name"] = "changed"
    assert records[0]["file_name"] == "a0.jpg" and len(records[0]["annotations"]) == 2


def test_a_column_of_another_length_is_refused() -> None:
    with pytest.raises(ValueError, match="column 'extra' has 1 values for 2 records"):
        DatasetRecords.of(dicts("a", 2), {"extra": [1]})


def test_saved_records_travel_to_another_process_as_their_folder(tmp_path: Path) -> None:
    SerializedList(dicts("a", 4)).save(tmp_path)
    opened = SerializedList.open(tmp_path)
    assert isinstance(opened._buffer, np.memmap)
    payload = pickle.dumps(DatasetRecords.of(opened))
    assert len(payload) < 2000  # the folder's name, not the records
    assert [r["file_name"] for r in pickle.loads(payload)] == [f"a{i}.jpg" for i in range(4)]


def coco_file(folder: Path, boxes: list) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": 50, "height": 40} for i in (1, 2)],
        "annotations": [
            {"id": n + 1, "image_id": 1 + n % 2, "category_id": 7, "bbox": box}
            for n, box in enumerate(boxes)
        ],
        "categories": [{"id": 7, "name": "cat"}],
    }
    path = folder / "instances.json"
    path.write_text(json.dumps(data))
    return path


def test_cached_records_equal_the_loaders_and_are_made_once(tmp_path, caplog) -> None:
    path = coco_file(tmp_path, [[1, 1, 5, 5], [2, 2, 0, 4], [1, 1, 4, 5]])  # one dropped
    with caplog.at_level(logging.INFO):
        first = cached_coco_records(path, tmp_path, "cached_a")
        second = cached_coco_records(path, tmp_path, "cached_b")
    assert caplog.text.count("converting the annotations (once)") == 1
    assert caplog.text.count("dropped 1 boxes without area") == 2  # said on every use
    assert list(first) == list(second) == load_coco_json(path, tmp_path)
    assert isinstance(first, SerializedList) and first.folder == second.folder
    # each annotation keeps its id; 2, without area, is dropped
    assert [[a["id"] for a in record["annotations"]] for record in first] == [[1, 3], []]
    for name in ("cached_a", "cached_b"):
        metadata = MetadataCatalog.get(name)
        assert metadata.thing_classes == ["cat"]
        assert metadata.thing_dataset_id_to_contiguous_id == {7: 0}
        MetadataCatalog.remove(name)


def test_a_changed_file_or_image_root_is_read_again(tmp_path) -> None:
    path = coco_file(tmp_path, [[1, 1, 5, 5]])
    first = cached_coco_records(path, tmp_path)
    other_root = cached_coco_records(path, tmp_path / "elsewhere")
    coco_file(tmp_path, [[1, 1, 6, 6]])
    changed = cached_coco_records(path, tmp_path)
    assert len({first.folder, other_root.folder, changed.folder}) == 3
    assert changed[0]["annotations"][0]["bbox"] == [1.0, 1.0, 7.0, 7.0]
    assert other_root[0]["file_name"] == str(tmp_path / "elsewhere" / "1.jpg")


def test_class_names_come_from_the_converted_records_once_made(tmp_path, monkeypatch) -> None:
    from detkit.data import classes

    path = coco_file(tmp_path, [[1, 1, 5, 5]])
    cached_coco_records(path, tmp_path)

    def unread(*args: object) -> None:
        raise AssertionError("the file was read")

    monkeypatch.setattr(classes, "_closing_categories", unread)
    monkeypatch.setattr(classes, "_coco_object", unread)
    assert classes.coco_class_names(path) == ["cat"]
    coco_file(tmp_path, [[1, 2, 7, 3]])  # changed, never converted: the file is read
    with pytest.raises(AssertionError, match="the file was read"):
        classes.coco_class_names(path)
