"""COCO instances JSON → detkit dataset dicts (pycocotools reads the file)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path

from ..catalog import DatasetCatalog, MetadataCatalog

logger = logging.getLogger(__name__)


def load_coco_json(
    json_file: str | Path, image_root: str | Path, dataset_name: str | None = None
) -> list[dict]:
    """Dataset dicts of a COCO instances file.

    Boxes become absolute XYXY (``x, y, x + w, y + h``); sparse category ids become contiguous
    ``[0, K)`` in id order, and the mapping (plus ``thing_classes``) is stored in the dataset's
    metadata when ``dataset_name`` is given. Crowd regions are kept with ``iscrowd=1``; boxes
    without area are dropped (and counted in the log).
    """
    from pycocotools.coco import COCO

    if not Path(json_file).is_file():
        raise FileNotFoundError(f"COCO annotation file not found: {json_file}")
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(json_file))
    category_ids = sorted(coco.getCatIds())
    contiguous = {coco_id: index for index, coco_id in enumerate(category_ids)}
    if dataset_name is not None:
        MetadataCatalog.get(dataset_name).set(
            thing_classes=[coco.loadCats(i)[0]["name"] for i in category_ids],
            thing_dataset_id_to_contiguous_id=contiguous,
        )
    dicts, dropped = [], 0
    for image in coco.loadImgs(sorted(coco.getImgIds())):
        annotations = []
        for ann in coco.imgToAnns.get(image["id"], []):
            if ann["category_id"] not in contiguous:
                raise ValueError(
                    f"{json_file}: annotation {ann.get('id')} of image {image['id']} has category "
                    f"{ann['category_id']}, which is not in the file's categories"
                )
            x, y, w, h = (float(v) for v in ann["bbox"])
            if w <= 0 or h <= 0:
                dropped += 1
                continue
            annotations.append(
                {
                    "bbox": [x, y, x + w, y + h],
                    "category_id": contiguous[ann["category_id"]],
                    "iscrowd": int(ann.get("iscrowd", 0)),
                }
            )
        dicts.append(
            {
                "file_name": os.path.join(str(image_root), image["file_name"]),
                "height": int(image["height"]),
                "width": int(image["width"]),
                "image_id": image["id"],
                "annotations": annotations,
            }
        )
    if dropped:
        logger.info(f"{json_file}: dropped {dropped} annotations whose box has no area")
    return dicts


def register_coco_instances(
    name: str, metadata: dict, json_file: str | Path, image_root: str | Path
) -> None:
    """Registers a COCO-format dataset; it is read on first ``DatasetCatalog.get(name)``."""
    DatasetCatalog.register(name, lambda: load_coco_json(json_file, image_root, name))
    MetadataCatalog.get(name).set(
        json_file=str(json_file), image_root=str(image_root), evaluator_type="coco", **metadata
    )
