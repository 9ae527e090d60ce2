"""The classes of datasets, checked against the model's: a model with one class fewer than its
data would silently learn the last class as background."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path

from ..config import ConfigError
from ..config.paths import path_problem
from .cache import converted_manifests
from .catalog import MetadataCatalog
from .records import DatasetRecords, RecordSummary

logger = logging.getLogger(__name__)

NUM_CLASSES_KEY = "MODEL.ROI_HEADS.NUM_CLASSES"


def dataset_classes(name: str) -> list[str] | None:
    """The class names a registered dataset's metadata records (``thing_classes``), or
    ``None`` when it records none."""
    classes = MetadataCatalog.get(name).get("thing_classes")
    return None if classes is None else list(classes)


def dataset_class_names(name: str) -> list[str] | None:
    """A registered dataset's class names without loading its records: its metadata's
    ``thing_classes``, else the categories of its COCO file (``json_file``); ``None`` when
    neither says. Raises :class:`ConfigError` for a COCO file that cannot be read."""
    classes = dataset_classes(name)
    if classes is not None:
        return classes
    json_file = MetadataCatalog.get(name).get("json_file")
    return coco_class_names(json_file) if json_file else None


def coco_class_names(json_file: str | Path) -> list[str]:
    """The category names of a COCO file in id order (the order detkit's class indices
    follow), from its top-level ``categories``: kept with the file's converted records when it
    was converted (:func:`~detkit.data.datasets.coco.cached_coco_records`), else parsed alone
    when they close the file (as in COCO's own files), so a large file's annotations are not
    parsed, else from the whole file.

    Raises :class:`ConfigError` naming the file for one that is missing, not a readable
    regular file, not JSON text or not a COCO file (relative paths are read from the working
    directory, and the message names the path looked for)."""
    problem = path_problem(json_file)
    if problem is not None:
        raise ConfigError(f"{json_file}: {problem}")
    for manifest in converted_manifests("records", json_file):  # read with its records before
        return list(manifest["thing_classes"])
    try:
        text = Path(json_file).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{json_file}: not a JSON text file (not UTF-8)") from None
    except OSError as error:
        raise ConfigError(f"{json_file}: cannot be read ({error.strerror})") from None
    categories = _closing_categories(text)
    if categories is None:
        categories = _coco_object(text, json_file).get("categories")
    try:
        return [str(c["name"]) for c in sorted(categories, key=lambda c: c["id"])]
    except (TypeError, KeyError) as error:
        raise ConfigError(
            f"{json_file}: its categories must be a list of {{id, name}} entries"
        ) from error


def _coco_object(text: str, json_file: str | Path) -> dict:
    """The JSON object of a COCO file's ``text``, refused naming the file and line."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"{json_file}:{error.lineno}:{error.colno}: not valid JSON: {error.msg}"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{json_file}: not a COCO instances file (a JSON object with images, annotations "
            f"and categories), but a JSON {type(data).__name__}"
        )
    return data


_CLOSE = re.compile(r"\s*\}\s*\Z")


def _closing_categories(text: str) -> list | None:
    """The value of the top-level ``"categories"`` of the JSON object ``text`` when it is the
    object's last member (then only the brace that closes the whole text follows it, and the
    key follows a ``{`` or a ``,``), or ``None``: a ``categories`` list nested elsewhere, as in
    ``info``, is never taken."""
    position = text.rfind('"categories"')
    before = position - 1
    while before >= 0 and text[before].isspace():
        before -= 1
    if position < 0 or before < 0 or text[before] not in "{,":
        return None
    colon = _skip_space(text, position + len('"categories"'))
    if text[colon : colon + 1] != ":":
        return None
    try:
        value, end = json.JSONDecoder().raw_decode(text, _skip_space(text, colon + 1))
    except json.JSONDecodeError:
        return None
    if not isinstance(value, list) or not _CLOSE.match(text, end):
        return None
    return value


def _skip_space(text: str, index: int) -> int:
    while index < len(text) and text[index].isspace():
        index += 1
    return index


def record_summary(dicts: Sequence[dict]) -> RecordSummary:
    """The :class:`RecordSummary` of ``dicts``: kept by :class:`DatasetRecords`, made for a
    list."""
    if isinstance(dicts, DatasetRecords):
        return dicts.summary()
    return RecordSummary.of(dicts, len(dicts))


def check_num_classes(
    num_classes: int,
    names: Sequence[str],
    dicts: Sequence[dict],
    class_names: Sequence[str] = (),
) -> None:
    """Raises :class:`ConfigError` when the datasets ``names`` (whose records are ``dicts``)
    do not have exactly ``num_classes`` classes, or do not share one list of class names, or
    name other classes than ``class_names`` (the model's, when known) or in another order, or
    hold a category id outside ``[0, num_classes)``."""
    problems = []
    known = {name: dataset_classes(name) for name in names}
    lists = {tuple(classes) for classes in known.values() if classes is not None}
    if len(lists) > 1:
        listed = "; ".join(f"{name}: {classes}" for name, classes in known.items() if classes)
        problems.append(f"the datasets have different classes ({listed}); they cannot be mixed")
    for name, classes in known.items():
        if classes is not None and class_names and list(class_names) != classes:
            problems.append(
                f"MODEL.ROI_HEADS.CLASS_NAMES {list(class_names)} are not the classes of "
                f"dataset {name!r}, {classes} (names and order must match)"
            )
        elif classes is not None and len(classes) != num_classes:
            problems.append(
                f"{NUM_CLASSES_KEY}={num_classes} but dataset {name!r} has {len(classes)} "
                f"classes {classes}; set {NUM_CLASSES_KEY}={len(classes)}"
            )
    largest = record_summary(dicts).largest_category
    if largest >= num_classes and not problems:
        problems.append(
            f"{NUM_CLASSES_KEY}={num_classes} but the annotations of {list(names)} use category "
            f"id {largest} (ids count from 0); set {NUM_CLASSES_KEY}={largest + 1} or more"
        )
    if problems:
        raise ConfigError("; ".join(problems))


def class_histogram_table(names: Sequence[str], dicts: Sequence[dict]) -> str:
    """A table of the images and instances per class (crowd regions left out) of the datasets
    ``names``, whose records are ``dicts``: what is logged when data is loaded for training or
    evaluation. Class names are the first dataset's (:func:`check_num_classes` makes sure they
    all share them), else the ids."""
    classes = dataset_classes(names[0]) if names else None
    counts = record_summary(dicts).instances
    ids = list(range(len(classes))) if classes is not None else sorted(counts)
    labels = [classes[i] if classes is not None else str(i) for i in ids]
    width = max([len("category"), *(len(label) for label in labels)])
    lines = [
        f"{' + '.join(names)}: {len(dicts)} images, {sum(counts.values())} instances",
        f"  {'category':<{width}}  instances",
    ]
    lines += [
        f"  {label:<{width}}  {counts.get(i, 0):>9}" for i, label in zip(ids, labels, strict=True)
    ]
    return "\n".join(lines)


def log_class_histograms(names: Sequence[str], dicts: Sequence[dict]) -> None:
    """Logs :func:`class_histogram_table`."""
    logger.info(class_histogram_table(names, dicts))
