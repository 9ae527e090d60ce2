"""COCO instances JSON → detkit dataset dicts."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..cache import converted, folder_size
from ..catalog import DatasetCatalog, MetadataCatalog
from ..serialize import SerializedList
from ..validation import (
    DatasetError,
    DatasetFileNotFoundError,
    LoadSummary,
    box_has_area,
    check_box,
    record_size,
    refuse_duplicates,
)

logger = logging.getLogger(__name__)


def load_coco_json(
    json_file: str | Path, image_root: str | Path, dataset_name: str | None = None
) -> list[dict]:
    """Dataset dicts of a COCO instances file, in image id order.

    Boxes become absolute XYXY (``x, y, x + w, y + h``); sparse category ids become contiguous
    ``[0, K)`` in id order, and the mapping (plus ``thing_classes``) is stored in the dataset's
    metadata when ``dataset_name`` is given. Crowd regions are kept with ``iscrowd=1``.

    The file is loaded as it is or refused (:mod:`detkit.data.validation` has the rules for
    images and boxes). Refused besides: a file that is not JSON (naming its line), a missing
    ``images``, ``annotations`` or ``categories`` list, a category id given twice, an
    annotation without an ``id``, with id 0 or an id given twice (``COCOeval``, which scores
    against this file, would mismatch them), and annotations of images or categories the file
    does not list. Each annotation keeps its ``id``; a box without area is dropped
    (:func:`coco_annotation_has_area`, by which the COCO evaluator leaves it out too).

    A registered COCO dataset (:func:`register_coco_instances`) is read through
    :func:`cached_coco_records` instead, which converts the file once.
    """
    contents = _read_coco(json_file, image_root)
    if contents.summary is not None:
        logger.warning(contents.summary)
    if dataset_name is not None:
        _set_metadata(dataset_name, contents.facts)
    return contents.records


def cached_coco_records(
    json_file: str | Path, image_root: str | Path, dataset_name: str | None = None
) -> SerializedList:
    """The records :func:`load_coco_json` gives, read from their converted form
    (:mod:`detkit.data.cache`: validated once, then memory-mapped by every process, run and
    tool until the file changes) as a read-only sequence whose items are fresh dicts."""
    key = {"loader": "coco", "image_root": str(Path(image_root).resolve())}

    def build(folder: Path) -> dict:
        logger.info(f"{json_file}: converting the annotations (once) …")
        contents = _read_coco(json_file, image_root)
        SerializedList(contents.records).save(folder)
        return {"summary": contents.summary, **contents.facts}

    if not Path(json_file).is_file():  # named before the cache looks for it
        raise DatasetFileNotFoundError(f"COCO annotation file not found: {json_file}")
    started = time.perf_counter()
    folder, manifest = converted("records", json_file, key, build)
    if manifest["summary"] is not None:
        logger.warning(manifest["summary"])
    if dataset_name is not None:
        _set_metadata(dataset_name, manifest)
    records = SerializedList.open(folder)
    logger.info(
        f"{json_file}: the records of {len(records)} images in {folder} ({folder_size(folder)}, "
        f"memory-mapped; {time.perf_counter() - started:.1f} s)"
    )
    return records


@dataclass
class _CocoContents:
    records: list[dict]
    facts: dict  # thing_classes, dataset_ids (in contiguous order)
    summary: str | None  # what the loader dropped, clipped or sized, in one line


def _read_coco(json_file: str | Path, image_root: str | Path) -> _CocoContents:
    data = read_coco_file(json_file)
    names = _category_names(data["categories"], json_file)
    contiguous = {coco_id: index for index, coco_id in enumerate(sorted(names))}
    summary = LoadSummary(json_file)
    records = _image_records(data["images"], json_file, image_root, summary)
    _add_annotations(data["annotations"], records, contiguous, json_file, summary)
    facts = {"thing_classes": [names[i] for i in sorted(names)], "dataset_ids": sorted(names)}
    in_id_order = sorted(
        records.values(), key=lambda r: (isinstance(r["image_id"], str), r["image_id"])
    )
    return _CocoContents(in_id_order, facts, summary.message())


def _set_metadata(dataset_name: str, facts: dict) -> None:
    MetadataCatalog.get(dataset_name).set(
        thing_classes=list(facts["thing_classes"]),
        thing_dataset_id_to_contiguous_id={i: n for n, i in enumerate(facts["dataset_ids"])},
    )


def read_coco_file(json_file: str | Path) -> dict:
    """The JSON object of a COCO instances file, with its ``images``, ``annotations`` and
    ``categories`` lists; a broken or incomplete file is refused naming the file (and line)."""
    path = Path(json_file)
    if not path.is_file():
        raise DatasetFileNotFoundError(f"COCO annotation file not found: {json_file}")
    try:
        data = json.loads(path.read_bytes())
    except json.JSONDecodeError as error:
        raise DatasetError(
            f"{json_file}:{error.lineno}:{error.colno}: not valid JSON: {error.msg}"
        ) from None
    except UnicodeDecodeError as error:
        raise DatasetError(f"{json_file}: not a JSON text file ({error.reason})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{json_file}: expected a JSON object with COCO's sections")
    for section in ("images", "annotations", "categories"):
        if not isinstance(data.get(section), list):
            found = "is missing" if section not in data else "is not a list"
            raise DatasetError(
                f"{json_file}: the {section!r} section {found}; a COCO instances file lists "
                "images, annotations and categories (an empty list where there are none)"
            )
    return data


def _category_names(categories: list, json_file) -> dict[int, str]:
    names: dict[int, str] = {}
    for category in categories:
        if not isinstance(category, dict) or "id" not in category or "name" not in category:
            raise DatasetError(f"{json_file}: category {category!r} needs an 'id' and a 'name'")
        if not _is_id(category["id"]) or isinstance(category["id"], str):
            raise DatasetError(f"{json_file}: category id {category['id']!r} is not an integer")
        if category["id"] in names:
            raise DatasetError(f"{json_file}: category id {category['id']!r} is given twice")
        names[category["id"]] = str(category["name"])
    return names


def _image_records(images: list, json_file, image_root, summary: LoadSummary) -> dict:
    """The dataset dict of every image by id, sizes checked (or read from the file)."""
    for image in images:
        if not isinstance(image, dict) or not _is_id(image.get("id")):
            raise DatasetError(f"{json_file}: image {image!r} needs an 'id' (integer or string)")
        if not isinstance(image.get("file_name"), str) or not image["file_name"]:
            raise DatasetError(f"{json_file}: image {image['id']!r} needs a 'file_name'")
    refuse_duplicates(((i["id"], i["file_name"]) for i in images), json_file)
    records = {}
    for image in images:
        file_name = os.path.join(str(image_root), image["file_name"])
        where = f"{json_file}: image {image['id']!r}"
        height, width = record_size(image, file_name, where, summary, f"image {image['id']!r}")
        records[image["id"]] = {
            "file_name": file_name,
            "height": height,
            "width": width,
            "image_id": image["id"],
            "annotations": [],
        }
    return records


def _add_annotations(
    annotations: list, records: dict, contiguous: dict, json_file, summary: LoadSummary
) -> None:
    """Adds each annotation with a box to its image's dict (the others are counted)."""
    seen, unknown_images = set(), []
    for ann in annotations:
        _check_annotation_fields(ann, json_file, seen)
        record = records.get(ann["image_id"])
        if record is None:
            unknown_images.append(ann)
            continue
        where = _where(ann, json_file)
        if ann["category_id"] not in contiguous:
            raise DatasetError(
                f"{json_file}: annotation {ann['id']} of image {ann['image_id']} has category "
                f"{ann['category_id']}, which is not in the file's categories"
            )
        box = check_box(
            _xyxy(ann["bbox"], where), record["width"], record["height"], where, summary
        )
        if box is None:
            continue
        record["annotations"].append(
            {
                "id": ann["id"],
                "bbox": box,
                "category_id": contiguous[ann["category_id"]],
                "iscrowd": int(ann.get("iscrowd", 0)),
            }
        )
    if unknown_images:
        raise DatasetError(
            f"{json_file}: {len(unknown_images)} annotations belong to images the file does not "
            f"list, e.g. annotation {unknown_images[0]['id']} of image "
            f"{unknown_images[0]['image_id']!r}; add the images or remove the annotations"
        )


def coco_annotation_has_area(ann: dict, json_file: str | Path) -> bool:
    """Whether the box of annotation ``ann`` of the COCO file ``json_file`` has area: the rule
    by which :func:`load_coco_json` keeps or drops it (``validation.box_has_area``); what the
    loader refuses is refused here too, naming the annotation."""
    where = _where(ann, json_file)
    return box_has_area(_xyxy(ann.get("bbox"), where), where)


def _where(ann: dict, json_file: str | Path) -> str:
    return f"{json_file}: annotation {ann.get('id')} of image {ann.get('image_id')!r}"


def _check_annotation_fields(ann: object, json_file, seen: set) -> None:
    if not isinstance(ann, dict) or not {"image_id", "category_id", "bbox"} <= set(ann):
        raise DatasetError(
            f"{json_file}: annotation {ann!r} needs an 'image_id', a 'category_id' and a 'bbox'"
        )
    if not all(_is_id(ann[k]) for k in ("image_id", "category_id")):
        raise DatasetError(
            f"{json_file}: annotation {ann.get('id')!r} has image_id {ann['image_id']!r} and "
            f"category_id {ann['category_id']!r}; each must be an integer or string"
        )
    if ann.get("id") in (None, 0) or not _is_id(ann["id"]):
        raise DatasetError(
            f"{json_file}: an annotation of image {ann['image_id']!r} has id "
            f"{ann.get('id')!r}; give each annotation its own id from 1 on (COCOeval counts "
            "a match with id 0 as a miss)"
        )
    if ann["id"] in seen:
        raise DatasetError(f"{json_file}: annotation id {ann['id']!r} is given twice")
    seen.add(ann["id"])


def _is_id(value: object) -> bool:
    return isinstance(value, int | str) and not isinstance(value, bool)


def _xyxy(bbox: object, where: str) -> list[float]:
    """A COCO ``[x, y, width, height]`` as ``[x1, y1, x2, y2]``; refused unless 4 numbers."""
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise DatasetError(f"{where}: bbox {bbox!r} is not [x, y, width, height]")
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: bbox {bbox!r} is not [x, y, width, height]") from None
    return [x, y, x + w, y + h]


def register_coco_instances(
    name: str, metadata: dict, json_file: str | Path, image_root: str | Path
) -> None:
    """Registers a COCO-format dataset; it is read on first ``DatasetCatalog.get(name)``."""
    DatasetCatalog.register(
        name, lambda: cached_coco_records(json_file, image_root, name), checked=True
    )
    MetadataCatalog.get(name).set(
        json_file=str(json_file), image_root=str(image_root), evaluator_type="coco", **metadata
    )
