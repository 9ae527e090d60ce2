"""Precomputed object proposals: reading proposal files and pairing them with images by id.

Proposal loaders are registered in ``PROPOSAL_LOADER_REGISTRY`` (``selective_search``, which
computes a missing file first, lives in ``selective_search.py``). Two file layouts are read:

* ``detectron2_pickle``: detectron2's layout, a dict with ``ids``, ``boxes`` (a list of
  ``[n, 4]`` arrays), optionally ``objectness_logits`` and ``bbox_mode`` (0 = XYXY_ABS,
  1 = XYWH_ABS). It is read with a restricted unpickler that builds only plain containers and
  numpy arrays, so a file crafted to run code is refused.
* ``fast_rcnn_mat``: the original Fast R-CNN selective-search layout, ``boxes`` (a cell array
  of 1-based ``(y1, x1, y2, x2)`` rows) and ``images`` (names), matched by file-name stem.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ..utils.registry import Registry

logger = logging.getLogger(__name__)

# The one registry of plain functions: a loader reads a file and has no config to build from.
PROPOSAL_LOADER_REGISTRY = Registry(
    "PROPOSAL_LOADER", expects="a function load(path, dataset_dicts) -> {key: (boxes, logits)}"
)
PROPOSAL_LOADER_REGISTRY.__doc__ = """Proposal loaders: ``fn(path, dataset_dicts) -> {key: (boxes,
logits)}`` with boxes ``[n, 4]`` absolute XYXY, keyed by image id (or file-name stem)."""

# Globals a proposal pickle may name: numpy's array and scalar reconstruction only.
_SAFE_GLOBALS = {
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {("numpy", "ndarray"), ("numpy", "dtype")}


def _box_mode(value: int) -> int:
    return int(value)


class _ProposalUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        if (module, name) == ("detectron2.structures.boxes", "BoxMode"):
            return _box_mode  # detectron2's enum, read as its integer value
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: a proposal file may hold only plain containers "
            "and numpy arrays"
        )


@PROPOSAL_LOADER_REGISTRY.register()
def detectron2_pickle(
    path: str | Path, dataset_dicts: list[dict] | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    with open(path, "rb") as file:
        try:
            data = _ProposalUnpickler(file, encoding="latin1").load()
        except pickle.UnpicklingError as error:
            raise ValueError(f"{path}: {error}") from error
    if not isinstance(data, dict) or not {"ids", "boxes"} <= set(data):
        raise ValueError(f"{path}: expected a dict with 'ids' and 'boxes' (detectron2's layout)")
    logits = data.get("objectness_logits") or [None] * len(data["ids"])
    if not len(data["ids"]) == len(data["boxes"]) == len(logits):
        raise ValueError(f"{path}: 'ids', 'boxes' and 'objectness_logits' differ in length")
    mode = int(data.get("bbox_mode", 0))
    if mode not in (0, 1):
        raise ValueError(f"{path}: bbox_mode {mode} is neither XYXY_ABS (0) nor XYWH_ABS (1)")
    result = {}
    for image_id, boxes, scores in zip(data["ids"], data["boxes"], logits, strict=True):
        boxes = _as_boxes(boxes, path, image_id)
        if mode == 1:
            boxes[:, 2:] += boxes[:, :2]
        result[str(image_id)] = (boxes, _as_logits(scores, len(boxes)))
    return result


@PROPOSAL_LOADER_REGISTRY.register()
def fast_rcnn_mat(
    path: str | Path, dataset_dicts: list[dict] | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from scipy.io import loadmat

    data = loadmat(str(path))
    if "boxes" not in data or "images" not in data:
        raise ValueError(
            f"{path}: expected 'boxes' and 'images' (Fast R-CNN's selective-search layout)"
        )
    names = [str(np.asarray(n).squeeze()) for n in data["images"].ravel()]
    cells = data["boxes"].ravel()
    if len(names) != len(cells):
        raise ValueError(f"{path}: {len(names)} image names but {len(cells)} box arrays")
    result = {}
    for name, cell in zip(names, cells, strict=True):
        y1x1y2x2 = _as_boxes(cell, path, name)
        boxes = y1x1y2x2[:, [1, 0, 3, 2]]
        boxes[:, :2] -= 1.0  # 1-based inclusive pixels -> continuous coordinates
        # the original files list proposals in no scored order; keep it (logits all 0)
        result[Path(name).stem] = (boxes, np.zeros(len(boxes), dtype=np.float32))
    return result


def _as_boxes(value: Any, path, key) -> np.ndarray:
    boxes = np.asarray(value, dtype=np.float32)
    if boxes.size == 0:
        return np.zeros((0, 4), dtype=np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{path}: boxes of image {key!r} have shape {boxes.shape}, not [n, 4]")
    return boxes.copy()


def _as_logits(value: Any, count: int) -> np.ndarray:
    if value is None:
        return np.zeros(count, dtype=np.float32)
    return np.asarray(value, dtype=np.float32).reshape(count)


def load_proposals(
    path: str | Path, loader: str = "auto", dataset_dicts: list[dict] | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Proposals from ``path`` with the registered ``loader``; ``auto`` reads an existing file,
    ``.mat`` with ``fast_rcnn_mat`` and anything else as a pickle."""
    path = Path(path)
    if loader == "auto":
        if not path.is_file():
            raise FileNotFoundError(f"proposal file not found: {path}")
        loader = "fast_rcnn_mat" if path.suffix == ".mat" else "detectron2_pickle"
    return PROPOSAL_LOADER_REGISTRY.get(loader)(path, dataset_dicts)


def attach_proposals(
    dataset_dicts: list[dict],
    proposals: dict[str, tuple[np.ndarray, np.ndarray]],
    source: str,
    topk: int | None = None,
    min_size: float = 0.0,
) -> list[dict]:
    """Adds ``proposal_boxes`` and ``proposal_objectness_logits`` to each dataset dict.

    Proposals are paired with images by ``image_id``, or failing that by file-name stem, never by
    position. Images without proposals and proposal ids without images are reported; nothing
    matching at all is an error. Boxes are clipped to the image, those smaller than ``min_size``
    dropped, and the ``topk`` best by objectness kept, in objectness order. Duplicates are not
    removed here: the model removes those that coincide on the grid of the feature map they are
    pooled from (``MODEL.ROI_HEADS.DEDUP_PROPOSALS``), which depends on the image size it runs at
    and on the map's stride.
    """
    used, missing = set(), []
    for record in dataset_dicts:
        key = str(record["image_id"])
        if key not in proposals:
            key = Path(record["file_name"]).stem
        if key not in proposals:
            missing.append(str(record["image_id"]))
            boxes, logits = np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        else:
            used.add(key)
            boxes, logits = _clean(*proposals[key], record, topk, min_size)
        record["proposal_boxes"], record["proposal_objectness_logits"] = boxes, logits
    if not used:
        raise ValueError(
            f"{source}: no proposal matches any of the {len(dataset_dicts)} images by id or file "
            f"name (proposal ids look like {_examples(proposals)}, image ids like "
            f"{_examples(str(r['image_id']) for r in dataset_dicts)})"
        )
    if missing:
        logger.warning(
            f"{source}: {len(missing)} images have no proposals, e.g. {_examples(missing)}"
        )
    unused = [k for k in proposals if k not in used]
    if unused:
        logger.warning(
            f"{source}: {len(unused)} proposal ids match no image, e.g. {_examples(unused)}"
        )
    return dataset_dicts


def _clean(boxes, logits, record, topk, min_size):
    boxes = boxes.copy()
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, record["width"])
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, record["height"])
    keep = ((boxes[:, 2] - boxes[:, 0]) > min_size) & ((boxes[:, 3] - boxes[:, 1]) > min_size)
    boxes, logits = boxes[keep], logits[keep]
    order = np.argsort(-logits, kind="stable")
    boxes, logits = boxes[order], logits[order]
    if topk is not None:
        boxes, logits = boxes[:topk], logits[:topk]
    return boxes.astype(np.float32), logits.astype(np.float32)


def _examples(keys, count: int = 3) -> str:
    keys = list(keys)
    return ", ".join(repr(k) for k in keys[:count]) + (" …" if len(keys) > count else "")
