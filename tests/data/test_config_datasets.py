"""Datasets declared in a config (DATASETS.REGISTER) and class names taken from the training
data: entries checked on load, registered by the set-up step after it, read back through the
catalog, refused with the field named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detkit.config import ConfigError, check_config, load_config
from detkit.data import DatasetCatalog, MetadataCatalog, setup_datasets
from detkit.data.classes import coco_class_names
from detkit.data.config_datasets import unregister_config_datasets

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


def set_up(path: Path):
    """The config of ``path`` loaded and set up, as every tool does."""
    return setup_datasets(load_config(path), path)


@pytest.fixture
def forget():
    names: list[str] = []
    yield names
    unregister_config_datasets(names)


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
    cfg = set_up(path)
    assert list(cfg.MODEL.ROI_HEADS.CLASS_NAMES) == ["cat", "dog"]  # by category id
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 2
    (record,) = DatasetCatalog.get("cfg_coco")
    assert record["file_name"] == str(tmp_path / "a.png")
    set_up(path)  # the same entry again: nothing to do, no "already registered"


def test_a_voc_entry_takes_its_class_names(tmp_path, forget) -> None:
    forget.append("cfg_voc")
    path = config(
        tmp_path,
        f"    - {{NAME: cfg_voc, FORMAT: pascal_voc, DIRNAME: {tmp_path}, SPLIT: train, "
        "YEAR: 2012, CLASS_NAMES: [apple, pear]}\n",
        "  TRAIN: [cfg_voc]\nMODEL:\n  ROI_HEADS:\n    NUM_CLASSES: 0\n",
    )
    cfg = set_up(path)
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
        set_up(config(tmp_path, f"    - {entry}\n"))
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
    with pytest.raises(ConfigError, match=r"b\.json:1:2: not valid JSON"):
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


def voc_entry(name: str, dirname: Path, extra: str = "") -> str:
    return f"    - {{NAME: {name}, FORMAT: pascal_voc, DIRNAME: {dirname}, SPLIT: train{extra}}}\n"


def test_a_year_written_as_text_is_read_as_a_number(tmp_path, forget) -> None:
    forget.append("cfg_voc_year")
    set_up(config(tmp_path, voc_entry("cfg_voc_year", tmp_path, ", YEAR: '2012'")))
    assert MetadataCatalog.get("cfg_voc_year").get("year") == 2012


@pytest.mark.parametrize(
    "extra, message",
    [
        (", YEAR: true", "YEAR takes a year (an integer such as 2007), got True"),
        (", CLASS_NAMES: [1, 2]", "CLASS_NAMES takes a list of names, got [1, 2]"),
        (", CLASS_NAMES: [a, [b]]", "CLASS_NAMES takes a list of names, got ['a', ['b']]"),
    ],
)
def test_fields_of_the_wrong_type_are_refused(tmp_path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"DATASETS\.REGISTER\[0\]: ") as error:
        load_config(config(tmp_path, voc_entry("cfg_typed", tmp_path, extra)))
    assert message in str(error.value)
    assert "cfg_typed" not in DatasetCatalog


def test_entries_register_all_or_none(tmp_path) -> None:
    entries = voc_entry("cfg_first", tmp_path) + voc_entry("cfg_second", tmp_path, ", YEAR: x")
    with pytest.raises(ConfigError, match=r"DATASETS\.REGISTER\[1\]: YEAR"):
        load_config(config(tmp_path, entries))
    assert "cfg_first" not in DatasetCatalog


def test_two_entries_of_one_name_are_refused(tmp_path) -> None:
    entries = voc_entry("cfg_twice", tmp_path) + voc_entry("cfg_twice", tmp_path, ", YEAR: 2012")
    with pytest.raises(ConfigError, match=r"REGISTER\[1\]: a dataset named 'cfg_twice'"):
        load_config(config(tmp_path, entries))  # refused as the config is read
    assert "cfg_twice" not in DatasetCatalog


def test_a_config_whose_classes_cannot_be_read_registers_nothing(tmp_path, forget) -> None:
    """So the corrected entry, under the same name, loads in the same process."""
    forget.append("cfg_fixed")
    cats = [{"id": 1, "name": "cat"}]
    entry = "    - {{NAME: cfg_fixed, FORMAT: coco, JSON_FILE: {}, IMAGE_ROOT: {}}}\n"
    train = "  TRAIN: [cfg_fixed]\nMODEL:\n  ROI_HEADS:\n    NUM_CLASSES: 0\n"
    with pytest.raises(ConfigError, match=r"JSON_FILE .*gone\.json: no such file"):
        set_up(config(tmp_path, entry.format(tmp_path / "gone.json", tmp_path), train))
    assert "cfg_fixed" not in DatasetCatalog
    coco_file(tmp_path / "a.json", cats)
    cfg = set_up(config(tmp_path, entry.format(tmp_path / "a.json", tmp_path), train))
    assert list(cfg.MODEL.ROI_HEADS.CLASS_NAMES) == ["cat"]


def test_a_missing_file_is_named_by_the_checks_when_no_class_name_is_needed(
    tmp_path, forget
) -> None:
    """With NUM_CLASSES given the config loads (a tool that reads no data works); train_net's
    checks name every file of the datasets the run names."""
    forget += ["cfg_given", "cfg_voc_gone"]
    entries = (
        f"    - {{NAME: cfg_given, FORMAT: coco, JSON_FILE: gone.json, IMAGE_ROOT: {tmp_path}}}\n"
        + voc_entry("cfg_voc_gone", tmp_path / "no_voc")
    )
    sets = "  TRAIN: [cfg_given]\n  TEST: [cfg_voc_gone]\n  PROPOSAL_FILES_TRAIN: []\n"
    cfg = set_up(config(tmp_path, entries, sets, "MODEL:\n  ROI_HEADS:\n    NUM_CLASSES: 3\n"))
    assert list(cfg.MODEL.ROI_HEADS.CLASS_NAMES) == []
    with pytest.raises(ConfigError) as error:
        check_config(cfg)
    message, voc = str(error.value), tmp_path / "no_voc"
    given = "DATASETS.REGISTER[0] (cfg_given): JSON_FILE gone.json: no such file (looked for "
    assert given in message
    assert f"DATASETS.REGISTER[1] (cfg_voc_gone): DIRNAME {voc}: no such folder" in message
