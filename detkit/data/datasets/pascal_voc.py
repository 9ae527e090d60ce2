"""PASCAL VOC folders (``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/``) → dataset dicts."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from ..catalog import DatasetCatalog, MetadataCatalog

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip


def load_voc_instances(
    dirname: str | Path, split: str, class_names: Sequence[str] = VOC_CLASSES
) -> list[dict]:
    """Dataset dicts of one split of a VOC folder.

    VOC boxes are 1-based and inclusive: ``xmin..xmax`` becomes ``(xmin - 1, ymin - 1, xmax,
    ymax)`` in detkit's continuous coordinates. ``difficult`` objects are kept, flagged.
    """
    root = Path(dirname)
    split_file = root / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():
        raise FileNotFoundError(f"VOC split {split!r} not found, expected at {split_file}")
    index = {name: i for i, name in enumerate(class_names)}
    dicts = []
    for image_id in split_file.read_text().split():
        xml_file = root / "Annotations" / f"{image_id}.xml"
        if not xml_file.is_file():
            raise FileNotFoundError(
                f"VOC annotation of image {image_id!r} not found, expected at {xml_file}"
            )
        try:
            tree = ET.parse(xml_file)
        except ET.ParseError as error:
            raise ValueError(f"{xml_file}: not valid XML: {error}") from error
        size = tree.find("size")
        annotations = []
        for obj in tree.findall("object"):
            name = obj.findtext("name", "").strip()
            if name not in index:
                raise ValueError(
                    f"{xml_file}: class {name!r} is not one of the dataset's {len(index)} classes"
                )
            box = obj.find("bndbox")
            xmin, ymin, xmax, ymax = (
                float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")
            )
            annotations.append(
                {
                    "bbox": [xmin - 1.0, ymin - 1.0, xmax, ymax],
                    "category_id": index[name],
                    "difficult": int(obj.findtext("difficult", "0") or 0),
                }
            )
        dicts.append(
            {
                "file_name": str(root / "JPEGImages" / f"{image_id}.jpg"),
                "height": int(size.findtext("height")),
                "width": int(size.findtext("width")),
                "image_id": image_id,
                "annotations": annotations,
            }
        )
    return dicts


def register_pascal_voc(
    name: str, dirname: str | Path, split: str, year: int, class_names: Sequence[str] | None = None
) -> None:
    """Registers a VOC split; it is read on first ``DatasetCatalog.get(name)``."""
    classes = tuple(class_names or VOC_CLASSES)
    DatasetCatalog.register(name, lambda: load_voc_instances(dirname, split, classes))
    MetadataCatalog.get(name).set(
        thing_classes=list(classes),
        dirname=str(dirname),
        split=split,
        year=year,
        evaluator_type="pascal_voc",
    )
