"""Datasets: a COCO or VOC file is loaded as it says or refused, never quietly changed.

`load_coco_json` and `load_voc_instances` apply the rules of `detkit/data/validation.py`, and so
does `DatasetCatalog.get` to the records of a dataset registered in Python (naming the dataset,
the record and the annotation), where detectron2's `bbox_mode` is honoured: `XYWH_ABS` (1) is
converted to XYXY, a relative or rotated mode is refused. Refused, with one line naming the
file, the entry and the fix: a file that is not JSON (with its line and column), a missing
`images`, `annotations` or `categories` list, an image id or a file name given twice, an image
listed twice in a VOC split, an annotation of an image or category the file does not list, an
annotation without an id, with id 0 or an id given twice (COCOeval would mismatch them), a box
with a coordinate that is not finite or a negative width or height, a box passing its image's
border by more than max(2 px, 1% of the side), a size that is not a positive whole number; in a
registered dataset also a record without a `file_name` or an `image_id`, an annotation without a
`bbox` of four numbers or with a `category_id` that is not an integer from 0. Dropped and
counted: a box without area. Clipped and counted: a box passing the border by less. An image
without a size gets the size of its file (EXIF orientation applied), counted. What was
dropped, clipped or sized is reported in one warning at the end of loading. The VOC evaluator
scores the loaded dataset; the COCO evaluator scores the JSON file itself, less the boxes the
loader drops, by the loader's own rule (built before the dataset is loaded or without it); the
records keep each COCO annotation's `id`. `train_net` loads
every test set, with its proposal file, before the first iteration, so a refused one ends the
run before training, not after it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from reliability_helpers import SHAPES_CONFIG, TinyRun, run_tool

from detkit.data import (
    DatasetCatalog,
    MetadataCatalog,
    get_detection_dataset_dicts,
    load_coco_json,
    load_voc_instances,
)
from detkit.data.validation import DatasetError


def coco(**changes) -> dict:
    """A valid COCO file of two 100x80 images; ``changes`` replace its sections."""
    data = {
        "images": [
            {"id": 1, "file_name": "a.png", "height": 80, "width": 100},
            {"id": 2, "file_name": "b.png", "height": 80, "width": 100},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 20, 30]},
            {"id": 2, "image_id": 2, "category_id": 3, "bbox": [50, 20, 40, 40]},
        ],
        "categories": [{"id": 3, "name": "square"}],
    }
    data.update(changes)
    return data


def write_json(tmp_path: Path, data: dict | str) -> Path:
    path = tmp_path / "instances.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def annotation(ann_id: int, bbox: list, image_id: int = 1) -> dict:
    return {"id": ann_id, "image_id": image_id, "category_id": 3, "bbox": bbox}


def test_valid_coco_file_loads_unchanged(tmp_path: Path, caplog) -> None:
    """A well-formed COCO file → loaded as it is, with no warning."""
    with caplog.at_level(logging.WARNING):
        dicts = load_coco_json(write_json(tmp_path, coco()), tmp_path)
    assert [d["annotations"][0]["bbox"] for d in dicts] == [[10, 10, 30, 40], [50, 20, 90, 60]]
    assert caplog.text == ""


def test_duplicate_image_ids(tmp_path: Path) -> None:
    """Two COCO images with one id → refused, naming the file, the id and both file names."""
    images = coco()["images"]
    images[1]["id"] = 1
    path = write_json(tmp_path, coco(images=images))
    with pytest.raises(
        DatasetError, match=r"instances\.json: image id 1 is given twice \('a\.png' and 'b\.png'\)"
    ):
        load_coco_json(path, tmp_path)


def test_duplicate_file_names(tmp_path: Path) -> None:
    """Two COCO images with one file name → refused, naming the file name and both ids."""
    images = coco()["images"]
    images[1]["file_name"] = "a.png"
    with pytest.raises(DatasetError, match=r"file 'a\.png' is listed twice \(image ids 1 and 2\)"):
        load_coco_json(write_json(tmp_path, coco(images=images)), tmp_path)


def test_annotation_of_an_unknown_image(tmp_path: Path) -> None:
    """An annotation of an image the file does not list → refused, naming it."""
    anns = [*coco()["annotations"], annotation(7, [1, 1, 5, 5], image_id=99)]
    with pytest.raises(
        DatasetError,
        match=r"1 annotations belong to images the file does not list, "
        r"e\.g\. annotation 7 of image 99",
    ):
        load_coco_json(write_json(tmp_path, coco(annotations=anns)), tmp_path)


def test_annotation_of_an_unknown_category(tmp_path: Path) -> None:
    """An annotation of an unknown category → refused, naming it."""
    anns = [{**annotation(5, [1, 1, 5, 5]), "category_id": 8}]
    with pytest.raises(DatasetError, match="annotation 5 of image 1 has category 8"):
        load_coco_json(write_json(tmp_path, coco(annotations=anns)), tmp_path)


def test_non_finite_box(tmp_path: Path) -> None:
    """A COCO box with a NaN coordinate → refused, naming the annotation and image."""
    path = write_json(tmp_path, coco(annotations=[annotation(4, [1, 1, float("nan"), 5])]))
    with pytest.raises(DatasetError, match=r"annotation 4 of image 1: box .* not a finite number"):
        load_coco_json(path, tmp_path)


def test_negative_size_box(tmp_path: Path) -> None:
    """A COCO box with a negative width → refused, naming the annotation."""
    path = write_json(tmp_path, coco(annotations=[annotation(4, [30, 10, -5, 10])]))
    with pytest.raises(DatasetError, match=r"annotation 4 of image 1: .* negative width or height"):
        load_coco_json(path, tmp_path)


def test_box_without_area_is_dropped_and_counted(tmp_path: Path, caplog) -> None:
    """A box of width 0 → dropped, counted in one warning, the others kept with their ids."""
    anns = [*coco()["annotations"], annotation(9, [5, 5, 0, 10])]
    path = write_json(tmp_path, coco(annotations=anns))
    try:
        with caplog.at_level(logging.WARNING):
            dicts = load_coco_json(path, tmp_path, "reliability_zero_area")
        assert [len(d["annotations"]) for d in dicts] == [1, 1]
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "dropped 1 boxes without area (e.g. " in warnings[0].getMessage()
        assert "annotation 9 of image 1" in warnings[0].getMessage()
        assert [[a["id"] for a in d["annotations"]] for d in dicts] == [[1], [2]]
    finally:
        MetadataCatalog.remove("reliability_zero_area")


def test_box_slightly_outside_is_clipped_and_counted(tmp_path: Path, caplog) -> None:
    """A box 1.5 px past the border → clipped to the image, counted in the summary."""
    path = write_json(tmp_path, coco(annotations=[annotation(4, [-1.5, 10, 51.5, 10])]))
    with caplog.at_level(logging.WARNING):
        first, _ = load_coco_json(path, tmp_path)
    assert first["annotations"][0]["bbox"] == [0.0, 10.0, 50.0, 20.0]
    assert "clipped 1 boxes that passed their image's border" in caplog.text


def test_box_far_outside_is_refused(tmp_path: Path) -> None:
    """A box 40 px past the border → refused, naming the box and the image size."""
    path = write_json(tmp_path, coco(annotations=[annotation(4, [60, 10, 80, 20])]))
    with pytest.raises(
        DatasetError,
        match=r"annotation 4 of image 1: box \[60.0, 10.0, 140.0, 30.0\] "
        r"extends past the 100x80 image",
    ):
        load_coco_json(path, tmp_path)


def test_malformed_bbox(tmp_path: Path) -> None:
    """A bbox of three numbers → refused, naming the annotation and the value."""
    path = write_json(tmp_path, coco(annotations=[annotation(4, [1, 2, 3])]))
    with pytest.raises(
        DatasetError,
        match=r"annotation 4 of image 1: bbox \[1, 2, 3\] is not \[x, y, width, height\]",
    ):
        load_coco_json(path, tmp_path)


def test_image_without_size_reads_it_from_the_file(tmp_path: Path, caplog) -> None:
    """A COCO image without height and width → size read from its file, counted."""
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((80, 100, 3), np.uint8))
    images = coco()["images"]
    del images[0]["height"], images[0]["width"]
    with caplog.at_level(logging.WARNING):
        first, _ = load_coco_json(write_json(tmp_path, coco(images=images)), tmp_path)
    assert (first["height"], first["width"]) == (80, 100)
    assert "read the size of 1 images from their files" in caplog.text


def test_image_without_size_and_without_file(tmp_path: Path) -> None:
    """A COCO image without height and without its file → refused, naming both."""
    images = coco()["images"]
    del images[1]["height"]
    with pytest.raises(
        DatasetError,
        match=r"image 2 gives no height and width, and its file cannot be read: "
        r".*b\.png: no such file",
    ):
        load_coco_json(write_json(tmp_path, coco(images=images)), tmp_path)


def test_image_size_not_a_positive_integer(tmp_path: Path) -> None:
    """A COCO image of width 0 → refused, naming the image and the value."""
    images = coco()["images"]
    images[0]["width"] = 0
    with pytest.raises(DatasetError, match=r"image 1: width 0 is not positive"):
        load_coco_json(write_json(tmp_path, coco(images=images)), tmp_path)


def test_broken_json(tmp_path: Path) -> None:
    """A COCO file cut in the middle → refused, naming the file, line and column."""
    text = json.dumps(coco(), indent=1)
    path = write_json(tmp_path, text[: len(text) // 2])
    with pytest.raises(DatasetError, match=r"instances\.json:\d+:\d+: not valid JSON"):
        load_coco_json(path, tmp_path)


@pytest.mark.parametrize("section", ["images", "annotations", "categories"])
def test_missing_section(tmp_path: Path, section: str) -> None:
    """A COCO file without images, annotations or categories → refused, naming it."""
    data = coco()
    del data[section]
    with pytest.raises(DatasetError, match=rf"the '{section}' section is missing"):
        load_coco_json(write_json(tmp_path, data), tmp_path)


def test_annotation_id_zero_or_repeated(tmp_path: Path) -> None:
    """An annotation id 0, or one id twice → refused, naming the id."""
    zero = write_json(tmp_path, coco(annotations=[annotation(0, [1, 1, 5, 5])]))
    with pytest.raises(DatasetError, match="has id 0; give each annotation its own id from 1"):
        load_coco_json(zero, tmp_path)
    twice = [annotation(3, [1, 1, 5, 5]), annotation(3, [2, 2, 5, 5], image_id=2)]
    with pytest.raises(DatasetError, match="annotation id 3 is given twice"):
        load_coco_json(write_json(tmp_path, coco(annotations=twice)), tmp_path)


def write_voc(root: Path, images: dict[str, str], split: str | None = None) -> Path:
    """A VOC folder; ``images`` maps an id to the XML inside ``<annotation>``."""
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "Annotations").mkdir()
    (root / "JPEGImages").mkdir()
    text = split if split is not None else "\n".join(images) + "\n"
    (root / "ImageSets" / "Main" / "trainval.txt").write_text(text)
    for image_id, body in images.items():
        (root / "Annotations" / f"{image_id}.xml").write_text(f"<annotation>{body}</annotation>")
    return root


SIZE = "<size><width>100</width><height>80</height></size>"


def voc_object(xmin, ymin, xmax, ymax, name: str = "cat") -> str:
    return (
        f"<object><name>{name}</name><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
        f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"
    )


def test_voc_image_listed_twice(tmp_path: Path) -> None:
    """A VOC split listing an image twice → refused, naming the split and image."""
    root = write_voc(tmp_path / "VOC", {"0001": SIZE}, split="0001\n0001\n")
    with pytest.raises(
        DatasetError, match=r"trainval\.txt: 1 images are listed more than once, e\.g\. '0001'"
    ):
        load_voc_instances(root, "trainval", ["cat"])


def test_voc_box_with_xmax_below_xmin(tmp_path: Path) -> None:
    """A VOC object with xmax < xmin → refused, naming the XML file and object."""
    root = write_voc(tmp_path / "VOC", {"0001": SIZE + voc_object(50, 10, 20, 30)})
    with pytest.raises(DatasetError, match=r"0001\.xml: object 1 \(cat\): .* negative width"):
        load_voc_instances(root, "trainval", ["cat"])


def test_voc_box_coordinate_not_a_number(tmp_path: Path) -> None:
    """A VOC xmax that is not a number → refused, naming the XML file and object."""
    root = write_voc(tmp_path / "VOC", {"0001": SIZE + voc_object(5, 10, "abc", 30)})
    with pytest.raises(
        DatasetError, match=r"0001\.xml: object 1 \(cat\): <bndbox> needs four numbers"
    ):
        load_voc_instances(root, "trainval", ["cat"])


def test_voc_boxes_at_and_past_the_border(tmp_path: Path, caplog) -> None:
    """VOC boxes from pixel 0 → clipped and counted; 30 px past → refused."""
    root = write_voc(tmp_path / "VOC", {"0001": SIZE + voc_object(0, 1, 100, 80)})
    with caplog.at_level(logging.WARNING):
        (record,) = load_voc_instances(root, "trainval", ["cat"])
    assert record["annotations"][0]["bbox"] == [0.0, 0.0, 100.0, 80.0]
    assert "clipped 1 boxes" in caplog.text
    far = write_voc(tmp_path / "VOC2", {"0001": SIZE + voc_object(50, 10, 130, 30)})
    with pytest.raises(
        DatasetError, match=r"object 1 \(cat\): box .* extends past the 100x80 image"
    ):
        load_voc_instances(far, "trainval", ["cat"])


def test_voc_without_size_reads_it_from_the_image(tmp_path: Path, caplog) -> None:
    """A VOC XML without <size> → read from its JPEG; without one → refused."""
    root = write_voc(tmp_path / "VOC", {"0001": voc_object(5, 5, 20, 20)})
    cv2.imwrite(str(root / "JPEGImages" / "0001.jpg"), np.zeros((60, 90, 3), np.uint8))
    with caplog.at_level(logging.WARNING):
        (record,) = load_voc_instances(root, "trainval", ["cat"])
    assert (record["height"], record["width"]) == (60, 90)
    assert "read the size of 1 images from their files" in caplog.text
    (root / "JPEGImages" / "0001.jpg").unlink()
    with pytest.raises(
        DatasetError, match=r"0001\.xml: <size> gives no height and width, and its file cannot be"
    ):
        load_voc_instances(root, "trainval", ["cat"])


@pytest.fixture
def registered() -> Iterator[Callable[[list[dict]], str]]:
    """``registered(records)``: the name of a dataset registered in Python that returns them."""
    name = "reliability_registered"

    def register(records: list[dict]) -> str:
        DatasetCatalog.register(name, lambda: records)
        return name

    yield register
    if name in DatasetCatalog:
        DatasetCatalog.remove(name)


def python_record(*annotations: dict) -> dict:
    return {
        "file_name": "a.jpg",
        "image_id": 1,
        "height": 80,
        "width": 100,
        "annotations": list(annotations),
    }


def test_registered_dataset_with_detectron2_xywh_boxes(registered) -> None:
    """A dataset registered in Python with detectron2's `"bbox_mode": 1` (XYWH) → its boxes
    converted to XYXY, none dropped as inverted."""
    xywh = {"bbox": [50, 40, 20, 10], "bbox_mode": 1, "category_id": 0}
    name = registered([python_record(xywh, {**xywh, "bbox": [5, 5, 30, 60]})])
    (record,) = get_detection_dataset_dicts([name])
    assert [a["bbox"] for a in record["annotations"]] == [[50, 40, 70, 50], [5, 5, 35, 65]]


def test_registered_dataset_with_a_relative_box_mode(registered) -> None:
    """`"bbox_mode": 2` (XYXY_REL) in a dataset registered in Python → refused, naming the
    dataset, the record and the mode."""
    name = registered(
        [python_record({"bbox": [0.1, 0.1, 0.5, 0.5], "bbox_mode": 2, "category_id": 0})]
    )
    with pytest.raises(
        DatasetError,
        match=r"dataset 'reliability_registered': record 0 \(a\.jpg\), annotation 0: "
        r"bbox_mode 2 \(XYXY_REL\) is not supported",
    ):
        get_detection_dataset_dicts([name])


@pytest.mark.parametrize(
    ("bbox", "problem"),
    [([30, 30, 10, 40], "negative width or height"), ([0, 0, float("nan"), 5], "not a finite")],
)
def test_registered_dataset_with_a_bad_box(registered, bbox: list, problem: str) -> None:
    """An inverted or NaN box in a dataset registered in Python → refused naming the dataset and
    the record, as in a COCO file."""
    name = registered([python_record({"bbox": bbox, "category_id": 0})])
    with pytest.raises(
        DatasetError, match=rf"dataset 'reliability_registered': record 0 \(a\.jpg\), .*{problem}"
    ):
        get_detection_dataset_dicts([name])


def test_voc_evaluation_ground_truth_is_the_loaded_dataset(tmp_path: Path) -> None:
    """A VOC box the loader drops → not a positive for the VOC evaluator."""
    from detkit.data import DatasetCatalog, register_pascal_voc
    from detkit.evaluation.pascal_voc_evaluation import PascalVOCDetectionEvaluator

    body = SIZE + voc_object(5, 5, 20, 20) + voc_object(30, 30, 29, 40)  # width 0 after -1
    register_pascal_voc(
        "reliability_voc", write_voc(tmp_path / "VOC", {"0001": body}), "trainval", 2007, ["cat"]
    )
    try:
        evaluator = PascalVOCDetectionEvaluator("reliability_voc")
        (record,) = DatasetCatalog.get("reliability_voc")
        assert len(record["annotations"]) == 1
        assert sum(truth.num_positives for truth in evaluator._ground_truth) == 1
    finally:
        DatasetCatalog.remove("reliability_voc")
        MetadataCatalog.remove("reliability_voc")


def test_coco_evaluation_ground_truth_leaves_out_dropped_boxes(tmp_path: Path) -> None:
    """A COCO box the loader drops → left out of COCOeval's ground truth too, before loading."""
    from detkit.data import DatasetCatalog, register_coco_instances
    from detkit.evaluation.coco_evaluation import COCOEvaluator

    anns = [*coco()["annotations"], annotation(9, [5, 5, 0, 10])]
    register_coco_instances(
        "reliability_coco", {}, write_json(tmp_path, coco(annotations=anns)), tmp_path
    )
    try:
        evaluator = COCOEvaluator("reliability_coco", distributed=False)  # nothing loaded yet
        dicts = DatasetCatalog.get("reliability_coco")
        assert [[a["id"] for a in d["annotations"]] for d in dicts] == [[1], [2]]  # 9 dropped
        # by image and category, as COCOeval queries it: through the index built from the boxes
        assert sorted(evaluator._coco_gt.getAnnIds(imgIds=[1, 2], catIds=[3])) == sorted(
            a["id"] for a in anns if a["id"] != 9
        )
    finally:
        DatasetCatalog.remove("reliability_coco")
        MetadataCatalog.remove("reliability_coco")


def test_train_net_refuses_a_broken_coco_file(tiny_run: TinyRun, tmp_path: Path) -> None:
    """train_net on a cut COCO file → exit 2, one line naming file and line."""
    root = tmp_path / "datasets"
    (root / "coco" / "annotations").mkdir(parents=True)
    text = json.dumps(coco(), indent=1)
    (root / "coco" / "annotations" / "instances_val2017.json").write_text(text[: len(text) // 2])
    overrides = tiny_run.overrides(
        tmp_path / "out",
        2,
        DATASETS__TRAIN="[coco_2017_val]",
        DATASETS__TEST="[]",
        DATASETS__PROPOSAL_FILES_TEST="[]",
        MODEL__ROI_HEADS__NUM_CLASSES=80,  # COCO's classes, known from the registration
    )
    result = run_tool("train_net.py", "--config-file", SHAPES_CONFIG, *overrides, root=root)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    # the file is read when the data is loaded, before the first iteration: it names the line
    assert re.search(
        r"instances_val2017\.json(:\d+:\d+: not valid JSON|: .*line \d+)", result.stderr
    )


def refused_before_training(tiny_run: TinyRun, output: Path, **overrides: object) -> str:
    """The one stderr line of a train_net run on ``tiny_run`` with ``overrides``, asserting it
    ended with exit 2 before its first iteration: no checkpoint, no iteration logged."""
    argv = tiny_run.overrides(output, 4, **overrides)
    result = run_tool("train_net.py", "--config-file", SHAPES_CONFIG, *argv, root=tiny_run.root)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not list(output.glob("model_*.pth"))
    metrics = output / "metrics.json"
    assert not metrics.exists() or "iter" not in metrics.read_text()
    (line,) = result.stderr.strip().splitlines()
    return line


def test_train_net_checks_the_test_sets_before_training(tiny_run: TinyRun, tmp_path: Path) -> None:
    """train_net whose test set has a NaN box → exit 2 before the first iteration, one line
    naming the file and the annotation."""
    data = json.loads((tiny_run.root / "shapes" / "val" / "annotations.json").read_text())
    bad = data["annotations"][3]
    bad["bbox"][2] = float("nan")
    val_json = tmp_path / "val.json"
    val_json.write_text(json.dumps(data))
    register = (
        f"[{{NAME: reliability_nan_val, FORMAT: coco, JSON_FILE: {val_json}, "
        f"IMAGE_ROOT: {tiny_run.root / 'shapes' / 'val'}}}]"
    )
    line = refused_before_training(
        tiny_run,
        tmp_path / "out",
        DATASETS__REGISTER=register,
        DATASETS__TEST="[reliability_nan_val]",
    )
    assert f"{val_json}: annotation {bad['id']} of image {bad['image_id']}: box" in line, line
    assert "not a finite number" in line


def test_train_net_checks_the_test_proposals_before_training(
    tiny_run: TinyRun, tmp_path: Path
) -> None:
    """train_net whose test proposal file is JSON text → exit 2 before the first iteration,
    one line naming the file."""
    text_file = tmp_path / "proposals.pkl"
    text_file.write_text(json.dumps({"ids": [1], "boxes": [[0, 0, 5, 5]]}))
    line = refused_before_training(
        tiny_run, tmp_path / "out", DATASETS__PROPOSAL_FILES_TEST=f"[{text_file}]"
    )
    assert str(text_file) in line, line
