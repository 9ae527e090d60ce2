"""The standard datasets, registered under ``$DETKIT_DATASETS`` (default ``./datasets``)."""

from __future__ import annotations

import os
from pathlib import Path

from .coco import register_coco_instances
from .pascal_voc import register_pascal_voc
from .shapes import register_shapes


def datasets_root() -> Path:
    return Path(os.environ.get("DETKIT_DATASETS", "datasets"))


def register_builtin_datasets(root: Path) -> None:
    """VOC 2007/2012 and COCO 2017, read lazily from ``root`` (missing folders fail on use),
    and the synthetic ``shapes_train`` / ``shapes_val``, generated there on first use."""
    for name, year, split in [
        ("voc_2007_trainval", 2007, "trainval"),
        ("voc_2007_test", 2007, "test"),
        ("voc_2012_trainval", 2012, "trainval"),
    ]:
        register_pascal_voc(name, root / f"VOC{year}", split, year)
    for split in ("train", "val"):
        register_coco_instances(
            f"coco_2017_{split}",
            {},
            root / "coco" / "annotations" / f"instances_{split}2017.json",
            root / "coco" / f"{split}2017",
        )
    register_shapes(root)
