"""PASCAL VOC folders (``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/``) → dataset dicts."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from ..catalog import DatasetCatalog, MetadataCatalog
from ..validation import (
    DatasetError,
    DatasetFileNotFoundError,
    LoadSummary,
    check_box,
    check_image_size,
    image_size_from_file,
)

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

    The folder is loaded as it is or refused (:mod:`detkit.data.validation` has the rules for
    images and boxes; a ``<size>`` that is missing or 0 is read from the image). Refused
    besides: an image listed twice in the split file, a file that is not XML, and an object
    without a class this dataset knows or without four numbers in its ``<bndbox>``.
    """
    root = Path(dirname)
    split_file = root / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():
        raise DatasetFileNotFoundError(f"VOC split {split!r} not found, expected at {split_file}")
    index = {name: i for i, name in enumerate(class_names)}
    image_ids = split_file.read_text().split()
    repeated = [i for i, count in Counter(image_ids).items() if count > 1]
    if repeated:
        raise DatasetError(
            f"{split_file}: {len(repeated)} images are listed more than once, e.g. "
            f"{repeated[0]!r}; list every image once"
        )
    summary = LoadSummary(split_file)
    dicts = [_image_record(root, image_id, index, summary) for image_id in image_ids]
    summary.report()
    return dicts


def _image_record(root: Path, image_id: str, index: dict, summary: LoadSummary) -> dict:
    xml_file = root / "Annotations" / f"{image_id}.xml"
    if not xml_file.is_file():
        raise DatasetFileNotFoundError(
            f"VOC annotation of image {image_id!r} not found, expected at {xml_file}"
        )
    try:
        tree = ET.parse(xml_file)
    except ET.ParseError as error:
        raise DatasetError(f"{xml_file}: not valid XML: {error}") from error
    file_name = str(root / "JPEGImages" / f"{image_id}.jpg")
    height, width = _image_size(tree, xml_file, file_name, summary)
    annotations = []
    for number, obj in enumerate(tree.findall("object"), 1):
        name = obj.findtext("name", "").strip()
        if name not in index:
            raise DatasetError(
                f"{xml_file}: class {name!r} is not one of the dataset's {len(index)} classes"
            )
        where = f"{xml_file}: object {number} ({name})"
        xmin, ymin, xmax, ymax = _bndbox(obj, where)
        box = check_box([xmin - 1.0, ymin - 1.0, xmax, ymax], width, height, where, summary)
        if box is not None:
            annotations.append(
                {
                    "bbox": box,
                    "category_id": index[name],
                    "difficult": _difficult(obj, where),
                }
            )
    return {
        "file_name": file_name,
        "height": height,
        "width": width,
        "image_id": image_id,
        "annotations": annotations,
    }


def _image_size(tree, xml_file: Path, file_name: str, summary: LoadSummary) -> tuple[int, int]:
    """``<size>``'s height and width; read from the image when missing or 0."""
    values = [tree.findtext(f"size/{k}", "").strip() for k in ("height", "width")]
    if all(v not in ("", "0") for v in values):
        try:
            numbers = [float(v) for v in values]
        except ValueError:
            raise DatasetError(f"{xml_file}: <size> {values} is not two numbers") from None
        return tuple(
            check_image_size(v, k, str(xml_file))
            for v, k in zip(numbers, ("height", "width"), strict=True)
        )
    height, width = image_size_from_file(file_name, f"{xml_file}: <size>")
    summary.sized.append(str(xml_file))
    return height, width


def _difficult(obj, where: str) -> int:
    value = (obj.findtext("difficult") or "0").strip()
    if value not in ("0", "1"):
        raise DatasetError(f"{where}: <difficult> is {value!r}, not 0 or 1")
    return int(value)


def _bndbox(obj, where: str) -> list[float]:
    values = [obj.findtext(f"bndbox/{k}") for k in ("xmin", "ymin", "xmax", "ymax")]
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        raise DatasetError(
            f"{where}: <bndbox> needs four numbers xmin, ymin, xmax, ymax, got {values}"
        ) from None


def register_pascal_voc(
    name: str, dirname: str | Path, split: str, year: int, class_names: Sequence[str] | None = None
) -> None:
    """Registers a VOC split; it is read on first ``DatasetCatalog.get(name)``."""
    classes = tuple(class_names or VOC_CLASSES)
    DatasetCatalog.register(name, lambda: load_voc_instances(dirname, split, classes), checked=True)
    MetadataCatalog.get(name).set(
        thing_classes=list(classes),
        dirname=str(dirname),
        split=split,
        year=year,
        evaluator_type="pascal_voc",
    )
