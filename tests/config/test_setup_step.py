"""Loading a config reads its YAML files and nothing else; the set-up step after it
(``detkit.data.setup_datasets``, run by every tool and by ``DefaultTrainer``) registers the
datasets it declares and fills the class names, the built-in COCO sets' from their
registration."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from detkit.config import load_config
from detkit.data import (
    COCO_CLASSES,
    DatasetCatalog,
    MetadataCatalog,
    load_coco_json,
    setup_datasets,
)
from detkit.data.config_datasets import unregister_config_datasets
from detkit.data.validation import DatasetError
from detkit.engine import DefaultTrainer

REPO = Path(__file__).resolve().parents[2]
SHAPES = REPO / "configs" / "shapes" / "fast_rcnn.yaml"
COCO_CONFIG = REPO / "configs" / "COCO-Detection" / "fast_rcnn_R_50_FPN_1x.yaml"
TINY_MODEL = [
    "MODEL.SMALL_CONVNET.CHANNELS=[8, 8]",
    "MODEL.ROI_BOX_HEAD.FC_DIM=24",
    "INPUT.MIN_SIZE_TRAIN=[96]",
    "INPUT.MAX_SIZE_TRAIN=160",
    "DATALOADER.NUM_WORKERS=0",
    "SOLVER.WARMUP_ITERS=0",
    "SOLVER.STEPS=[]",
    "DATASETS.TEST=[]",
    "DATASETS.PROPOSAL_FILES_TEST=[]",
    "DATASETS.PROPOSAL_LOADER=auto",
]
_RECORDERS: list[list[str]] = []


def _record_opened(event: str, args: tuple) -> None:
    if event == "open" and _RECORDERS and isinstance(args[0], str | Path):
        for opened in _RECORDERS:
            opened.append(str(args[0]))


sys.addaudithook(_record_opened)  # records only inside ``opened_files()``


@contextmanager
def opened_files() -> Iterator[list[str]]:
    """The paths of the files opened inside the block (Python's ``open`` audit events)."""
    opened: list[str] = []
    _RECORDERS.append(opened)
    try:
        yield opened
    finally:
        _RECORDERS.remove(opened)


@pytest.fixture
def forget() -> Iterator[list[str]]:
    """Names of datasets a test registers, removed from the catalogs after it."""
    names: list[str] = []
    yield names
    unregister_config_datasets(names)
    for name in names:
        if name in DatasetCatalog:
            DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def declaring_config(tmp_path: Path, name: str) -> Path:
    """A config over the shapes config declaring the COCO file ``tmp_path/a.json`` as ``name``,
    training on it with ``NUM_CLASSES: 0`` (the class names needed)."""
    (tmp_path / "a.json").write_text(
        json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "cat"}]})
    )
    config = tmp_path / "c.yaml"
    config.write_text(
        f"_BASE_: {SHAPES}\nDATASETS:\n  REGISTER:\n"
        f"    - {{NAME: {name}, FORMAT: coco, JSON_FILE: {tmp_path / 'a.json'}, "
        f"IMAGE_ROOT: {tmp_path}}}\n  TRAIN: [{name}]\n"
        "MODEL:\n  ROI_HEADS:\n    NUM_CLASSES: 0\n"
    )
    return config


def test_loading_reads_the_yaml_files_and_registers_nothing(tmp_path, forget) -> None:
    forget.append("pure_train")
    config = declaring_config(tmp_path, "pure_train")
    with opened_files() as opened:
        cfg = load_config(config)
    assert [path for path in opened if path.startswith(str(tmp_path))] == [str(config)]
    assert "pure_train" not in DatasetCatalog
    assert list(cfg.MODEL.ROI_HEADS.CLASS_NAMES) == [] and cfg.MODEL.ROI_HEADS.NUM_CLASSES == 0
    assert setup_datasets(cfg, config) is cfg  # the set-up step does what loading did before
    assert "pure_train" in DatasetCatalog
    assert list(cfg.MODEL.ROI_HEADS.CLASS_NAMES) == ["cat"] and cfg.MODEL.ROI_HEADS.NUM_CLASSES == 1
    setup_datasets(cfg, config)  # again: nothing new, no "already registered"


def test_builtin_coco_class_names_come_from_their_registration(tmp_path, monkeypatch) -> None:
    """Without reading the training file (here there is none): COCO 2017's 80 names."""
    monkeypatch.chdir(tmp_path)  # no datasets/coco here
    assert MetadataCatalog.get("coco_2017_train").thing_classes == list(COCO_CLASSES)
    with opened_files() as opened:
        cfg = setup_datasets(load_config(COCO_CONFIG))
    names = list(cfg.MODEL.ROI_HEADS.CLASS_NAMES)
    assert len(names) == 80 == cfg.MODEL.ROI_HEADS.NUM_CLASSES
    assert names[:3] == ["person", "bicycle", "car"] and names[-1] == "toothbrush"
    assert not [path for path in opened if path.endswith(".json")]


def test_detectron2_recipe_with_a_dataset_registered_in_python(tiny_shapes, tmp_path, forget):
    """``cfg = load_config(file); cfg.DATASETS.TRAIN = ["mine"]; DefaultTrainer(cfg).train()``
    with "mine" registered in Python with classes of its own: the model takes mine's class
    names, not those of the dataset the file names."""
    forget.append("recipe_mine")
    folder = tiny_shapes.folder
    DatasetCatalog.register(
        "recipe_mine", lambda: load_coco_json(folder / "annotations.json", folder)
    )
    MetadataCatalog.get("recipe_mine").set(thing_classes=["box", "disc", "wedge"])
    cfg = load_config(SHAPES, TINY_MODEL)
    cfg.DATASETS.TRAIN = ["recipe_mine"]
    cfg.DATASETS.PROPOSAL_FILES_TRAIN = [str(tiny_shapes.proposal_file)]
    cfg.SOLVER.MAX_ITER = 2
    cfg.OUTPUT_DIR = str(tmp_path / "run")
    trainer = DefaultTrainer(cfg)
    trainer.train()
    assert list(trainer.cfg.MODEL.ROI_HEADS.CLASS_NAMES) == ["box", "disc", "wedge"]
    assert (tmp_path / "run" / "model_final.pth").is_file()


def test_a_builtin_coco_file_of_other_classes_is_refused(tmp_path, monkeypatch) -> None:
    """A file in coco_2017_val's place whose categories are not COCO's: refused in one line
    naming the dataset, not read with the names of other classes."""
    monkeypatch.chdir(tmp_path)  # the built-in sets are read from ./datasets here
    folder = tmp_path / "datasets" / "coco" / "annotations"
    folder.mkdir(parents=True)
    (folder / "instances_val2017.json").write_text(
        json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "cat"}]})
    )
    with pytest.raises(DatasetError, match=r"dataset 'coco_2017_val' is already \['person'"):
        DatasetCatalog.get("coco_2017_val")
    assert MetadataCatalog.get("coco_2017_val").thing_classes == list(COCO_CLASSES)
