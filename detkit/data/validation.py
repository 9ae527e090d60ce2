"""Rules every dataset loader applies to what it reads, so that a dataset is loaded as its file
says or refused, never quietly changed. COCO and VOC files get them in their loaders; the
records of a dataset registered in Python (``DatasetCatalog.register(name, func)``) get them
when the catalog fetches them (:func:`check_dataset_dicts`).

* An image id or a file name listed twice is refused (merging them would lose an image).
* An image without a size gets the size of its file (EXIF orientation applied, as the mapper
  reads it); a size that is not a positive integer is refused.
* A box is written as its ``bbox_mode`` says (detectron2's :class:`BoxMode`; none: XYXY_ABS)
  and converted to absolute XYXY; a relative or rotated mode is refused.
* A box with a coordinate that is not finite, or with a negative width or height, is refused.
* A box without area (width or height 0) is dropped, and counted.
* A box that extends past its image by at most ``max(2 px, 1% of the image's side)`` is clipped
  to the image, and counted; one that extends further is refused (the box or the image's size
  is wrong, e.g. a rotated photo).

What was dropped, clipped or sized from its file is reported in one warning at the end of
loading (:class:`LoadSummary`). An image that turns out bad during training is handled by
``DATALOADER.BAD_IMAGE_POLICY`` (:class:`BadImages`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable

import numpy as np

from ..config import ConfigError
from ..structures import BoxMode
from ..utils.errors import UserError
from .mapper import BadImageError, read_image

logger = logging.getLogger(__name__)

CLIP_PIXELS = 2.0  # a box may pass its image's border by this many pixels ...
CLIP_FRACTION = 0.01  # ... or by this fraction of the image's side, whichever is more


class DatasetError(UserError, ValueError):
    """A dataset file that is refused: the message names the file, the entry and the fix."""


class DatasetFileNotFoundError(UserError, FileNotFoundError):
    """A dataset file (annotations, split list) that is not where it is expected."""


class LoadSummary:
    """Counts what a loader dropped or changed in ``source`` and reports it in one line."""

    def __init__(self, source: object) -> None:
        self.source = source
        self.dropped: list[str] = []  # where each dropped box was
        self.clipped = 0
        self.sized: list[str] = []  # the images whose size was read from their file

    def report(self) -> None:
        """Logs one warning when anything was dropped, clipped or sized from a file."""
        message = self.message()
        if message is not None:
            logger.warning(message)

    def message(self) -> str | None:
        """The one line :meth:`report` logs (None when there is nothing to say)."""
        parts = []
        if self.dropped:
            parts.append(f"dropped {len(self.dropped)} boxes without area (e.g. {self.dropped[0]})")
        if self.clipped:
            parts.append(
                f"clipped {self.clipped} boxes that passed their image's border by at most "
                f"max({CLIP_PIXELS:g} px, {CLIP_FRACTION:.0%} of its side)"
            )
        if self.sized:
            parts.append(
                f"read the size of {len(self.sized)} images from their files, which the "
                f"annotations do not give (e.g. {self.sized[0]})"
            )
        return f"{self.source}: " + "; ".join(parts) if parts else None


def check_image_size(value: object, what: str, where: str) -> int:
    """``value`` as an image's height or width; refused unless a positive integer."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value != int(value)
    ):
        raise DatasetError(f"{where}: {what} {value!r} is not a whole number of pixels")
    if value <= 0:
        raise DatasetError(f"{where}: {what} {value!r} is not positive")
    return int(value)


def box_has_area(box: list[float], where: str) -> bool:
    """Whether an XYXY box has area, which decides if loaders keep it (a box of width or
    height 0 is dropped, and the COCO evaluator leaves it out of the ground truth); a
    :class:`DatasetError` naming ``where`` when it is refused (a coordinate that is not finite,
    a negative width or height)."""
    if not all(math.isfinite(v) for v in box):
        raise DatasetError(f"{where}: box {box} has a coordinate that is not a finite number")
    x1, y1, x2, y2 = box
    if x2 < x1 or y2 < y1:
        raise DatasetError(
            f"{where}: box {box} has a negative width or height (x2 < x1 or y2 < y1)"
        )
    return x2 > x1 and y2 > y1


def check_box(
    box: list[float], width: int, height: int, where: str, summary: LoadSummary
) -> list[float] | None:
    """An XYXY box by the rules above: the box (clipped if it passes the border a little), or
    None when it has no area (:func:`box_has_area`); a :class:`DatasetError` naming ``where``
    when it is refused."""
    if not box_has_area(box, where):
        summary.dropped.append(where)
        return None
    x1, y1, x2, y2 = box
    slack_x = max(CLIP_PIXELS, CLIP_FRACTION * width)
    slack_y = max(CLIP_PIXELS, CLIP_FRACTION * height)
    if x1 < -slack_x or y1 < -slack_y or x2 > width + slack_x or y2 > height + slack_y:
        raise DatasetError(
            f"{where}: box {_rounded(box)} extends past the {width}x{height} image by more "
            f"than max({CLIP_PIXELS:g} px, {CLIP_FRACTION:.0%} of its side); fix the box or "
            "the image's width and height"
        )
    clipped = [min(max(x1, 0.0), width), min(max(y1, 0.0), height)]
    clipped += [min(max(x2, 0.0), width), min(max(y2, 0.0), height)]
    if clipped != [x1, y1, x2, y2]:
        summary.clipped += 1
    return clipped


def refuse_duplicates(entries: Iterable[tuple[object, str]], source: object) -> None:
    """Refuses ``(image_id, file_name)`` pairs that repeat an id or a file name."""
    by_id: dict[str, str] = {}  # by str(id): proposals are paired with images that way
    by_file: dict[str, object] = {}
    for image_id, file_name in entries:
        if str(image_id) in by_id:
            raise DatasetError(
                f"{source}: image id {image_id!r} is given twice ({by_id[str(image_id)]!r} and "
                f"{file_name!r}); give every image its own id"
            )
        if file_name in by_file:
            raise DatasetError(
                f"{source}: file {file_name!r} is listed twice (image ids "
                f"{by_file[file_name]!r} and {image_id!r}); list every image once"
            )
        by_id[str(image_id)], by_file[file_name] = file_name, image_id


def _rounded(box: list[float]) -> list[float]:
    return [round(v, 2) for v in box]


def image_size_from_file(file_name: str | os.PathLike, where: str) -> tuple[int, int]:
    """``(height, width)`` of the image file of a record that gives no size, as the mapper
    reads it (EXIF orientation applied); refused naming ``where`` when it cannot be read."""
    try:
        height, width = read_image(file_name).shape[:2]
    except BadImageError as error:
        raise DatasetError(
            f"{where} gives no height and width, and its file cannot be read: {error}"
        ) from None
    return height, width


def record_size(
    entry: dict, file_name: str | os.PathLike, where: str, summary: LoadSummary, label: str
) -> tuple[int, int]:
    """``(height, width)`` as ``entry`` (an image's record or COCO entry) gives them, checked;
    read from its image file where it gives none, and counted in ``summary`` as ``label``."""
    if entry.get("height") is None or entry.get("width") is None:
        size = image_size_from_file(file_name, where)
        summary.sized.append(label)
        return size
    return (
        check_image_size(entry["height"], "height", where),
        check_image_size(entry["width"], "width", where),
    )


def check_dataset_dicts(dicts: list, source: str) -> list[dict]:
    """The records of a dataset registered in Python, by the rules above: each annotation's
    box as absolute XYXY (``bbox_mode`` honoured, then kept as ``XYXY_ABS``; likewise
    ``proposal_boxes`` by ``proposal_bbox_mode``), clipped or dropped (and counted), a size
    read from the image file where none is given. Refused, naming ``source`` and the record: a
    record that is not a dict, without a ``file_name`` or an ``image_id`` (an integer or a
    string), an id or file name given twice, ``annotations`` that are not a list (none: no
    objects), an annotation without a ``bbox`` of four numbers or whose ``category_id`` is not
    an integer from 0, and what :func:`check_box` refuses. Records and annotations are
    returned as new dicts, so the loader's own are left as they were."""
    summary = LoadSummary(source)
    records = [
        _checked_record(record, index, source, summary) for index, record in enumerate(dicts)
    ]
    refuse_duplicates(((r["image_id"], r["file_name"]) for r in records), source)
    summary.report()
    return records


def _checked_record(record: object, index: int, source: str, summary: LoadSummary) -> dict:
    where = f"{source}: record {index}"
    if not isinstance(record, dict):
        raise DatasetError(f"{where} is a {type(record).__name__}, not a dict")
    file_name = record.get("file_name")
    if not isinstance(file_name, str | os.PathLike) or not os.fspath(file_name):
        raise DatasetError(f"{where} needs a 'file_name', the path of its image")
    where = f"{where} ({file_name})"
    image_id = record.get("image_id")
    if not isinstance(image_id, int | str) or isinstance(image_id, bool):
        raise DatasetError(
            f"{where} has image_id {image_id!r}; give each image an integer or string id"
        )
    height, width = record_size(record, file_name, where, summary, f"record {index}")
    annotations = record.get("annotations", [])
    if not isinstance(annotations, list):
        raise DatasetError(
            f"{where}: 'annotations' is a {type(annotations).__name__}, not a list of dicts"
        )
    checked = [
        _checked_annotation(annotation, width, height, f"{where}, annotation {number}", summary)
        for number, annotation in enumerate(annotations)
    ]
    result = {
        **record,
        "height": height,
        "width": width,
        "annotations": [a for a in checked if a is not None],
    }
    if "proposal_boxes" in record:
        mode = _box_mode(record.get("proposal_bbox_mode", BoxMode.XYXY_ABS), where)
        if mode != BoxMode.XYXY_ABS:
            boxes = np.asarray(record["proposal_boxes"], np.float32)
            result["proposal_boxes"] = BoxMode.convert(boxes, mode, BoxMode.XYXY_ABS)
            result["proposal_bbox_mode"] = BoxMode.XYXY_ABS
    return result


def _checked_annotation(
    annotation: object, width: int, height: int, where: str, summary: LoadSummary
) -> dict | None:
    """The annotation with its box as absolute XYXY, or None when the box has no area."""
    if (
        not isinstance(annotation, dict)
        or "bbox" not in annotation
        or "category_id" not in annotation
    ):
        raise DatasetError(f"{where} needs a 'bbox' and a 'category_id'")
    category = annotation["category_id"]
    if not isinstance(category, int | np.integer) or isinstance(category, bool) or category < 0:
        raise DatasetError(
            f"{where}: category_id {category!r} is not a class index (an integer from 0)"
        )
    box = box_numbers(annotation["bbox"], where)
    if "bbox_mode" in annotation:  # none: XYXY_ABS, as detkit writes boxes
        box = BoxMode.convert(box, _box_mode(annotation["bbox_mode"], where), BoxMode.XYXY_ABS)
    box = check_box(box, width, height, where, summary)
    if box is None:
        return None
    checked = {**annotation, "bbox": box, "category_id": int(category)}
    if "bbox_mode" in annotation:
        checked["bbox_mode"] = BoxMode.XYXY_ABS
    return checked


def box_numbers(bbox: object, where: str) -> list[float]:
    """``bbox`` as four floats; refused naming ``where`` unless it holds four numbers."""
    if not isinstance(bbox, list | tuple | np.ndarray) or len(bbox) != 4:
        raise DatasetError(f"{where}: bbox {bbox!r} is not four numbers")
    try:
        return [float(v) for v in bbox]
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: bbox {bbox!r} is not four numbers") from None


def _box_mode(value: object, where: str) -> BoxMode:
    try:
        return BoxMode.absolute(value)
    except ValueError as error:
        raise DatasetError(f"{where}: {error}") from None


BAD_IMAGE_POLICIES = ("stop", "skip")


class BadImages:
    """What training does with a record whose image cannot be used (a
    :class:`~detkit.data.mapper.BadImageError`: missing, unreadable, truncated, or not the size
    its record gives), by ``DATALOADER.BAD_IMAGE_POLICY``.

    ``stop`` raises it, naming the file. ``skip`` logs the file and the reason, and the loader
    maps another record in its place; once more than ``max_bad`` distinct images were found bad
    it raises, listing them. Each loader process (each worker) counts the images it met, so the
    run stops at the latest when some process has met more than ``max_bad``.
    """

    def __init__(self, policy: str = "stop", max_bad: int = 10) -> None:
        if policy not in BAD_IMAGE_POLICIES:
            raise ConfigError(
                f"DATALOADER.BAD_IMAGE_POLICY must be one of {', '.join(BAD_IMAGE_POLICIES)}, "
                f"got {policy!r}"
            )
        if max_bad < 0:
            raise ConfigError(f"DATALOADER.MAX_BAD_IMAGES must be 0 or more, got {max_bad}")
        self.policy, self.max_bad = policy, max_bad
        self.files: dict[int, str] = {}  # record index -> file name, in the order found

    def __contains__(self, index: int) -> bool:
        return index in self.files

    def found(self, index: int, file_name: str, error: Exception) -> None:
        """Record ``index`` (``file_name``) failed with ``error``: raises it under ``stop`` or
        past the bound, else logs it the first time."""
        if self.policy == "stop":
            raise error
        if index in self.files:
            return
        self.files[index] = file_name
        if len(self.files) > self.max_bad:
            raise BadImageError(
                f"{len(self.files)} bad images, more than DATALOADER.MAX_BAD_IMAGES="
                f"{self.max_bad}: {', '.join(self.files.values())}; the last: {error}"
            )
        logger.warning(
            f"skipping bad image {file_name} ({len(self.files)} of at most {self.max_bad}, "
            f"DATALOADER.BAD_IMAGE_POLICY=skip): {error}"
        )
