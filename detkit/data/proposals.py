"""Precomputed object proposals: reading proposal files and pairing them with images by id.

Proposal loaders are registered in ``PROPOSAL_LOADER_REGISTRY`` (``selective_search``, which
computes a missing file first, lives in ``selective_search.py``). Two file layouts are read:

* ``detectron2_pickle``: detectron2's layout, a dict with ``ids``, ``boxes`` (a list of
  ``[n, 4]`` arrays), optionally ``objectness_logits`` and ``bbox_mode`` (0 = XYXY_ABS,
  1 = XYWH_ABS). It is read with a restricted unpickler that builds only plain containers and
  numpy arrays, so a file crafted to run code is refused.
* ``fast_rcnn_mat``: the original Fast R-CNN selective-search layout, ``boxes`` (a cell array
  of 1-based ``(y1, x1, y2, x2)`` rows) and ``images`` (names), matched by file-name stem.

Given the dataset, both loaders refuse a file whose boxes fit the images only when read in
another order (:func:`check_box_order`); a file that is not of the layout, an image given twice,
or boxes and logits of different lengths are refused naming the file and the image.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..structures import BoxMode
from ..utils.errors import UserError
from ..utils.file_io import write_atomically
from ..utils.plain_pickle import PlainDataUnpickler, RefusedGlobalError
from ..utils.registry import Registry

logger = logging.getLogger(__name__)


class ProposalFileError(UserError, ValueError):
    """A proposal file that is refused: the message names the file, the image and the fix."""


class ProposalFileNotFoundError(UserError, FileNotFoundError):
    """A proposal file that is not where the config says."""


# The one registry of plain functions: a loader reads a file and has no config to build from.
PROPOSAL_LOADER_REGISTRY = Registry(
    "PROPOSAL_LOADER", expects="a function load(path, dataset_dicts) -> {key: (boxes, logits)}"
)
PROPOSAL_LOADER_REGISTRY.__doc__ = """Proposal loaders: ``fn(path, dataset_dicts) -> {key: (boxes,
logits)}`` with boxes ``[n, 4]`` absolute XYXY, keyed by image id (or file-name stem)."""

# detectron2's BoxMode enum, read as its integer value
_SUBSTITUTES = {("detectron2.structures.boxes", "BoxMode"): int}


_XYXY, _XYWH = BoxMode.XYXY_ABS, BoxMode.XYWH_ABS
# How a file's rows may be read, each as a function of the rows to XYXY boxes.
READINGS = {
    "(x1, y1, x2, y2)": lambda rows: rows,
    "(x, y, w, h)": lambda rows: BoxMode.convert(rows, _XYWH, _XYXY),
    "(y1, x1, y2, x2)": lambda rows: rows[:, [1, 0, 3, 2]],
}
FIT_FRACTION = 0.9  # a file fits its images when this fraction of its boxes does
FIT_SLACK = 0.05  # a box fits when it passes its image's border by at most 5% of its side
_REORDER = "reorder each row to (x1, y1, x2, y2) (boxes[:, [1, 0, 3, 2]])"
_PICKLE_FIXES = {
    _XYXY: {
        "(x, y, w, h)": f"set bbox_mode {_XYWH.value} ({_XYWH.name}) in the file",
        "(y1, x1, y2, x2)": _REORDER,
    },
    _XYWH: {
        "(x1, y1, x2, y2)": f"set bbox_mode {_XYXY.value} ({_XYXY.name}) in the file",
        "(y1, x1, y2, x2)": f"{_REORDER} and set bbox_mode {_XYXY.value} ({_XYXY.name})",
    },
}
_MAT_FIXES = {
    "(x1, y1, x2, y2)": "this layout holds 1-based (y1, x1, y2, x2) rows: reorder each row "
    f"(boxes[:, [1, 0, 3, 2]]), or write detectron2's pickle layout with bbox_mode {_XYXY.value}",
    "(x, y, w, h)": "this layout holds 1-based (y1, x1, y2, x2) rows: convert them, or write "
    f"detectron2's pickle layout with bbox_mode {_XYWH.value} ({_XYWH.name})",
}


def write_detectron2_pickle(
    path: str | Path,
    ids: Sequence,
    boxes: Sequence[np.ndarray],
    objectness_logits: Sequence[np.ndarray],
) -> Path:
    """Writes a proposal file in detectron2's pickle layout: per image (``ids[i]``) the
    ``[n, 4]`` absolute XYXY ``boxes[i]`` and the ``[n]`` ``objectness_logits[i]``, as float32,
    and ``bbox_mode`` 0 as a plain number (readers unpickle no class). The file appears only
    when complete (:func:`~detkit.utils.file_io.write_atomically`)."""
    data = {
        "ids": list(ids),
        "boxes": [np.asarray(b, np.float32).reshape(-1, 4) for b in boxes],
        "objectness_logits": [np.asarray(s, np.float32).reshape(-1) for s in objectness_logits],
        "bbox_mode": int(_XYXY),
    }
    write_atomically(path, lambda file: pickle.dump(data, file))
    return Path(path)


@PROPOSAL_LOADER_REGISTRY.register()
def detectron2_pickle(
    path: str | Path, dataset_dicts: list[dict] | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    data = _read_pickle(path)
    ids, boxes = data["ids"], data["boxes"]
    logits = data.get("objectness_logits")
    logits = [None] * len(ids) if logits is None else logits
    if not len(ids) == len(boxes) == len(logits):
        raise ProposalFileError(
            f"{path}: 'ids', 'boxes' and 'objectness_logits' differ in length ({len(ids)}, "
            f"{len(boxes)} and {len(logits)}); give one of each per image"
        )
    try:
        mode = BoxMode.absolute(data.get("bbox_mode", _XYXY))
    except ValueError as error:
        raise ProposalFileError(f"{path}: {error}") from None
    rows = _rows_by_key(path, ids, boxes)
    reading = "(x1, y1, x2, y2)" if mode == _XYXY else "(x, y, w, h)"
    if dataset_dicts is not None:
        check_box_order(path, rows, reading, dataset_dicts, _PICKLE_FIXES[mode])
    return {
        key: (READINGS[reading](boxes), _as_logits(scores, len(boxes), path, key))
        for (key, boxes), scores in zip(rows.items(), logits, strict=True)
    }


def _read_pickle(path: str | Path) -> dict:
    """The dict of a detectron2-layout proposal pickle, read with the restricted unpickler."""
    try:
        with open(path, "rb") as file:
            data = PlainDataUnpickler(file, _SUBSTITUTES).load()
    except RefusedGlobalError as error:
        raise ProposalFileError(
            f"{path}: {error}: a proposal file may hold only plain containers and numpy arrays"
        ) from None
    except OSError:
        raise
    except Exception as error:  # anything the unpickler raises on bytes that are no pickle
        raise ProposalFileError(
            f"{path}: not a proposal pickle ({type(error).__name__}: {error}); proposal files "
            "are detectron2's pickle layout, or Fast R-CNN's .mat layout named *.mat"
        ) from None
    if not isinstance(data, dict) or not {"ids", "boxes"} <= set(data):
        raise ProposalFileError(
            f"{path}: expected a dict with 'ids' and 'boxes' (detectron2's layout)"
        )
    for name in ("ids", "boxes", "objectness_logits"):
        if data.get(name) is not None and not isinstance(data[name], list | tuple | np.ndarray):
            raise ProposalFileError(
                f"{path}: {name!r} is a {type(data[name]).__name__}, not a list"
            )
    return data


def _rows_by_key(path, keys, arrays) -> dict[str, np.ndarray]:
    """``{str(key): [n, 4] rows}``; a key given twice is refused."""
    rows: dict[str, np.ndarray] = {}
    for key, value in zip(keys, arrays, strict=True):
        if str(key) in rows:
            raise ProposalFileError(
                f"{path}: image {key!r} is given twice; give one entry per image"
            )
        rows[str(key)] = _as_boxes(value, path, key)
    return rows


@PROPOSAL_LOADER_REGISTRY.register()
def fast_rcnn_mat(
    path: str | Path, dataset_dicts: list[dict] | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from scipy.io import loadmat

    try:
        data = loadmat(str(path))
    except OSError:
        raise
    except Exception as error:  # scipy's many ways of saying "not a .mat file"
        raise ProposalFileError(
            f"{path}: not a MATLAB file scipy can read ({type(error).__name__}: {error})"
        ) from None
    if "boxes" not in data or "images" not in data:
        raise ProposalFileError(
            f"{path}: expected 'boxes' and 'images' (Fast R-CNN's selective-search layout)"
        )
    names = [Path(str(np.asarray(n).squeeze())).stem for n in data["images"].ravel()]
    cells = data["boxes"].ravel()
    if len(names) != len(cells):
        raise ProposalFileError(f"{path}: {len(names)} image names but {len(cells)} box arrays")
    rows = _rows_by_key(path, names, cells)
    if dataset_dicts is not None:
        check_box_order(path, rows, "(y1, x1, y2, x2)", dataset_dicts, _MAT_FIXES)
    result = {}
    for name, y1x1y2x2 in rows.items():
        boxes = READINGS["(y1, x1, y2, x2)"](y1x1y2x2)
        boxes[:, :2] -= 1.0  # 1-based inclusive pixels -> continuous coordinates
        # the original files list proposals in no scored order; keep it (logits all 0)
        result[name] = (boxes, np.zeros(len(boxes), dtype=np.float32))
    return result


def check_box_order(
    path: str | Path,
    rows: dict[str, np.ndarray],
    reading: str,
    dataset_dicts: list[dict],
    fixes: dict[str, str],
) -> None:
    """Refuses a file whose boxes fit their images only when read in another order.

    A box fits its image when it is finite, not inverted, and passes the border by at most
    ``FIT_SLACK`` of the image's side; real proposals nearly all fit. When fewer than
    ``FIT_FRACTION`` of the file's boxes (over every image the dataset has) fit as the layout
    says they are written (``reading``, a key of ``READINGS``), the file is refused: naming the
    reading under which they do fit and ``fixes[reading]``, or saying that they fit no reading.
    On square images a swap of x and y cannot be seen, as it changes no box's fit.
    """
    fractions = _fit_fractions(rows, _image_sizes(dataset_dicts))
    if fractions is None or fractions[reading] >= FIT_FRACTION:
        return
    best = max(fractions, key=fractions.get)
    if best != reading and fractions[best] >= FIT_FRACTION and best in fixes:
        raise ProposalFileError(
            f"{path}: the boxes look like {best}, not {reading} as the file says: "
            f"{fractions[reading]:.0%} of them fit their images read as {reading}, "
            f"{fractions[best]:.0%} read as {best}; {fixes[best]}"
        )
    raise ProposalFileError(
        f"{path}: only {fractions[reading]:.0%} of the boxes fit their images (read as "
        f"{reading}, as the file says) and no other order fits; are they for these images, "
        "at their own size?"
    )


def _image_sizes(dataset_dicts: list[dict]) -> dict[str, tuple[int, int]]:
    """``(width, height)`` by image id, and by file-name stem where no id takes it."""
    sizes = {str(r["image_id"]): (r["width"], r["height"]) for r in dataset_dicts}
    for record in dataset_dicts:
        sizes.setdefault(Path(record["file_name"]).stem, (record["width"], record["height"]))
    return sizes


def _fit_fractions(
    rows: dict[str, np.ndarray], sizes: dict[str, tuple[int, int]], chunk: int = 1 << 20
) -> dict[str, float] | None:
    """The fraction of the finite rows of the images in ``sizes`` that fit their image under
    each reading (None when there are none), computed in float32 (the files' own precision)
    over chunks of about ``chunk`` rows."""
    counts, total = dict.fromkeys(READINGS, 0), 0
    keys = [k for k in rows if k in sizes and len(rows[k])]
    start = 0
    while start < len(keys):  # a chunk of whole images, about ``chunk`` rows
        end, pending = start, 0
        while end < len(keys) and (pending < chunk or end == start):
            pending += len(rows[keys[end]])
            end += 1
        part = keys[start:end]
        boxes = np.concatenate([rows[k] for k in part])
        sides = np.repeat(
            np.array([sizes[k] for k in part], np.float32), [len(rows[k]) for k in part], axis=0
        )
        finite = np.isfinite(boxes).all(axis=1)
        boxes, sides = boxes[finite], sides[finite]
        total += len(boxes)
        for name, fits in _fits(boxes, sides).items():
            counts[name] += int(fits.sum())
        start = end
    return {name: count / total for name, count in counts.items()} if total else None


def _fits(rows: np.ndarray, sides: np.ndarray) -> dict[str, np.ndarray]:
    """Which rows fit their image (``sides``: width, height) read in each of :data:`READINGS`'
    orders, in float32 (rows, sides and slack alike): a box fits when it is not inverted and
    passes each border by at most ``FIT_SLACK`` of that side. Written on the columns, as the
    readings share most of their comparisons."""
    a, b, c, d = rows.T
    width, height = sides.T
    slack_x, slack_y = np.float32(FIT_SLACK) * width, np.float32(FIT_SLACK) * height
    right, bottom = width + slack_x, height + slack_y
    ordered = (c >= a) & (d >= b)  # not inverted read as (x1, y1, x2, y2) or (y1, x1, y2, x2)
    x2, y2 = a + c, b + d  # the far corner read as (x, y, w, h)
    return {
        "(x1, y1, x2, y2)": ordered
        & (a >= -slack_x) & (b >= -slack_y) & (c <= right) & (d <= bottom),
        "(x, y, w, h)": (x2 >= a) & (y2 >= b)
        & (a >= -slack_x) & (b >= -slack_y) & (x2 <= right) & (y2 <= bottom),
        "(y1, x1, y2, x2)": ordered
        & (b >= -slack_x) & (a >= -slack_y) & (d <= right) & (c <= bottom),
    }  # fmt: skip


def _as_boxes(value: Any, path, key) -> np.ndarray:
    try:
        boxes = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise ProposalFileError(f"{path}: boxes of image {key!r} are not an [n, 4] array") from None
    if boxes.size == 0:
        return np.zeros((0, 4), dtype=np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ProposalFileError(
            f"{path}: boxes of image {key!r} have shape {boxes.shape}, not [n, 4]"
        )
    return boxes  # the file's own array when it is float32 already: no second copy


def _as_logits(value: Any, count: int, path, key) -> np.ndarray:
    if value is None:
        return np.zeros(count, dtype=np.float32)
    try:
        logits = np.asarray(value, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError):
        raise ProposalFileError(
            f"{path}: objectness logits of image {key!r} are not numbers"
        ) from None
    if len(logits) != count:
        raise ProposalFileError(
            f"{path}: image {key!r} has {count} boxes but {len(logits)} objectness logits"
        )
    return logits


def load_proposals(
    path: str | Path, loader: str = "auto", dataset_dicts: list[dict] | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Proposals from ``path`` with the registered ``loader``; ``auto`` reads an existing file,
    ``.mat`` with ``fast_rcnn_mat`` and anything else as a pickle."""
    path = Path(path)
    if loader == "auto":
        if not path.is_file():
            raise ProposalFileNotFoundError(f"proposal file not found: {path}")
        loader = "fast_rcnn_mat" if path.suffix == ".mat" else "detectron2_pickle"
    return PROPOSAL_LOADER_REGISTRY.get(loader)(path, dataset_dicts)
