"""The standard datasets, registered under ``$DETKIT_DATASETS`` (default ``./datasets``)."""

from __future__ import annotations

import os
from pathlib import Path

from .coco import register_coco_instances
from .pascal_voc import register_pascal_voc
from .shapes import register_shapes

# COCO 2017's class names in category id order, as its instances files list them: the built-in
# COCO sets are registered with them, so no tool reads a file of 118k images to learn them.
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip


def datasets_root() -> Path:
    return Path(os.environ.get("DETKIT_DATASETS", "datasets"))


def register_builtin_datasets(root: Path) -> None:
    """VOC 2007/2012 and COCO 2017 with their class names, read lazily from ``root`` (missing
    folders fail on use), and the synthetic ``shapes_train`` / ``shapes_val``, generated there
    on first use."""
    for name, year, split in [
        ("voc_2007_trainval", 2007, "trainval"),
        ("voc_2007_test", 2007, "test"),
        ("voc_2012_trainval", 2012, "trainval"),
    ]:
        register_pascal_voc(name, root / f"VOC{year}", split, year)
    for split in ("train", "val"):
        register_coco_instances(
            f"coco_2017_{split}",
            {"thing_classes": list(COCO_CLASSES)},
            root / "coco" / "annotations" / f"instances_{split}2017.json",
            root / "coco" / f"{split}2017",
        )
    register_shapes(root)
