"""Datasets declared in a config (DATASETS.REGISTER) and class names taken from the training
data: registered on load, read back through the catalog, refused with the field named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detkit.config import ConfigError, load_config
from detkit.data import DatasetCatalog, MetadataCatalog
from detkit.data.classes import coco_class_names

REPO = Path(__file__).resolve().parents[2]
SHAPES = REPO / "configs" / "shapes" / "fast_rcnn.yaml"


def coco_file(path: Path, categories: list[dict], annotations: str | None = None) -> Path:
    images = [{"id": 1, "file_name": "a.png", "height": 20, "width": 30}]
    body = {"images": images, "annotations": [], "categories": categories}
    text = json.dumps(body)
    if annotations is not None:  # raw text in place of the annotations list
        text = text.replace('"annotations": []', f'"annotations": {annotations}')
    path.write_text(text)
    return path


def config(tmp_path: Path, entries: str, *extra: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(f"_BASE_: {SHAPES}\nDATASETS:\n  REGISTER:\n{entries}" + "".join(extra))
    return path


@pytest.fixture
def forget(request):
    names: list[str] = []
    yield names
    from detkit.data import config_datasets

    for name in names:
        if name in DatasetCatalog:
            DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
        config_datasets._REGISTERED.pop(name, None)


def test_a_coco_entry_registers_and_gives_its_classes(tmp_path, forget) -> None:
    forget.append("cfg_coco")
    cats = [{"id": 7, "name": "dog"}, {"id": 2, "name": "cat"}]
    coco_file(tmp_path / "a.json", cats)
    path = config(
        tmp_path,
        f"    - {{NAME: cfg_coco, FORMAT: coco, JSON_FILE: {tmp_path / 'a.json'}, "
        f"IMAGE_ROOT: {tmp_path}}}\n",
        "  TRAIN: [cfg_coco]\nMODEL:\n  ROI_HEADS:\n    NUM_CLASSES: 0\n",
    )
    cfg = load_config(path)
    assert list(cfg.MODEL.ROI_HEADS.CLASS_NAMES) == ["cat", "dog"]  # by category id
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 2
    (record,) = DatasetCatalog.get("cfg_coco")
    assert record["file_name"] == str(tmp_path / "a.png")
    load_config(path)  # the same entry again: nothing to do, no "already registered"


def test_a_voc_entry_takes_its_class_names(tmp_path, forget) -> None:
    forget.append("cfg_voc")
    path = config(
        tmp_path,
        f"    - {{NAME: cfg_voc, FORMAT: pascal_voc, DIRNAME: {tmp_path}, SPLIT: train, "
        "YEAR: 2012, CLASS_NAMES: [apple, pear]}\n",
        "  TRAIN: [cfg_voc]\nMODEL:\n  ROI_HEADS:\n    NUM_CLASSES: 0\n",
    )
    cfg = load_config(path)
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 2
    assert MetadataCatalog.get("cfg_voc").get("year") == 2012


@pytest.mark.parametrize(
    "entry, message",
    [
        ("{NAME: x1, FORMAT: yolo}", r"FORMAT must be one of \['coco', 'pascal_voc'\], got 'yolo'"),
        ("{NAME: x2, FORMAT: coco, JSON_FILE: a.json}", r"needs IMAGE_ROOT"),
        (
            "{NAME: x3, FORMAT: coco, JSON_FILE: a.json, IMAGE_ROOT: i, IMAGE_RUT: j}",
            r"has no field IMAGE_RUT \(did you mean IMAGE_ROOT\?\)",
        ),
        (
            "{NAME: shapes_val, FORMAT: coco, JSON_FILE: a.json, IMAGE_ROOT: i}",
            "already registered",
        ),
    ],
)
def test_bad_entries_are_refused_naming_the_entry(tmp_path, entry: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        load_config(config(tmp_path, f"    - {entry}\n"))
    assert "DATASETS.REGISTER[0]" in str(error.value) and "c.yaml" in str(error.value)


def test_an_entry_that_is_not_a_mapping_is_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"c\.yaml: DATASETS\.REGISTER takes a list of dict"):
        load_config(config(tmp_path, "    - just-a-name\n"))


def test_coco_class_names_read_only_the_categories(tmp_path) -> None:
    cats = [{"id": 3, "name": "b"}, {"id": 1, "name": "a"}]
    # annotations that are not valid JSON: only the categories can have been parsed
    path = coco_file(tmp_path / "c.json", cats, annotations="[{not json at all")
    assert coco_class_names(path) == ["a", "b"]


def test_coco_class_names_of_a_file_without_categories(tmp_path) -> None:
    (tmp_path / "n.json").write_text('{"images": []}')
    with pytest.raises(ConfigError, match=r"n\.json: its categories must be a list"):
        coco_class_names(tmp_path / "n.json")
    (tmp_path / "b.json").write_text("{broken")
    with pytest.raises(ConfigError, match=r"b\.json: not a COCO JSON file"):
        coco_class_names(tmp_path / "b.json")


def test_class_names_that_differ_from_the_data_are_refused(tiny_shapes) -> None:
    from detkit.data.loaders import train_dataset_dicts

    cfg = load_config(
        SHAPES,
        [
            f"DATASETS.TRAIN=[{tiny_shapes.name}]",
            "DATASETS.PROPOSAL_FILES_TRAIN=[]",
            "MODEL.ROI_HEADS.CLASS_NAMES=[square, circle, triangle]",
        ],
    )
    with pytest.raises(ConfigError, match="names and order must match"):
        train_dataset_dicts(cfg)
