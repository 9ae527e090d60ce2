"""Average recall (AR) of class-agnostic proposals, exactly as COCO's evaluation computes it.

The numbers are those of pycocotools' ``COCOeval`` with ``params.useCats = 0`` and
``params.maxDets = [100, 1000]``: per image, proposals sorted by score (a stable sort, ties in
the given order), the first ``max(max_dets)`` of them matched greedily in that order, each to
the best-IoU ground-truth box still unmatched (ties to the later box); AR@k is recall averaged
over the IoU thresholds 0.5:0.05:0.95, a box counted as found when one of an image's first ``k``
proposals took it, pooled over all images. Per area range (COCO's: all, small below 32²,
medium to 96², large above; bounds inclusive, on each box's ``area``) the boxes outside the
range are ignored, and crowd boxes always are.

An ignored box never takes a proposal away from a counted one (COCO lets a proposal fall back
on an ignored box only when no counted box is left for it, and what it then matches counts
nowhere), so the matching here runs over the counted boxes alone; the tests check the identity
against pycocotools. It is vectorized over images and thresholds: the greedy rule needs one
step per match, not one per proposal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

# pycocotools' own expressions, so that the thresholds are the same floats (0.6000000000000001)
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
AREA_RANGES = {  # metric prefix -> (lowest, highest) area, both included
    "AR": (0.0**2, 1e5**2),
    "ARs": (0.0**2, 32.0**2),
    "ARm": (32.0**2, 96.0**2),
    "ARl": (96.0**2, 1e5**2),
}
DEFAULT_MAX_DETS = (100, 1000)
CHUNK_ELEMENTS = 1 << 22  # the largest [images, thresholds, boxes, proposals] block at once


class ImageGroundTruth(NamedTuple):
    """One image's ground truth: ``boxes`` ``[g, 4]`` absolute XYXY, ``iscrowd`` ``[g]`` (0/1)
    and ``areas`` ``[g]``, the area each box is put into a size range by (COCO's ``area``)."""

    boxes: np.ndarray
    iscrowd: np.ndarray
    areas: np.ndarray


class ImageProposals(NamedTuple):
    """One image's proposals: ``boxes`` ``[n, 4]`` absolute XYXY and ``scores`` ``[n]``."""

    boxes: np.ndarray
    scores: np.ndarray


def metric_names(max_dets: Sequence[int] = DEFAULT_MAX_DETS) -> list[str]:
    """The keys :func:`proposal_recall` returns, in order: ``AR@k, ARs@k, ARm@k, ARl@k`` per
    ``k``."""
    return [f"{prefix}@{k}" for k in sorted(max_dets) for prefix in AREA_RANGES]


def proposal_recall(
    ground_truth: Sequence[ImageGroundTruth],
    proposals: Sequence[ImageProposals],
    max_dets: Sequence[int] = DEFAULT_MAX_DETS,
    by_iou: bool = False,
) -> dict[str, float]:
    """AR of ``proposals`` (one per image, paired with ``ground_truth`` by position) in percent,
    keyed as :func:`metric_names`; NaN where no box is in the range (COCO's -1). With
    ``by_iou``, also the recall at each IoU threshold that AR averages, over all sizes, as
    ``R@<k>@<iou>`` (``R@1000@0.90``): Ren et al.'s recall-to-IoU curve.

    IoU is computed as COCO computes it, from ``x, y, w, h`` in float64. Among boxes of equal
    IoU a proposal takes the later one in the given order (COCOeval with ``useCats=0`` orders an
    image's boxes by category id, then as its file lists them).
    """
    if len(ground_truth) != len(proposals):
        raise ValueError(
            f"proposal_recall: {len(ground_truth)} images of ground truth but "
            f"{len(proposals)} of proposals"
        )
    if not max_dets or min(max_dets) < 1:
        raise ValueError(f"proposal_recall: max_dets must be positive counts, got {max_dets}")
    max_dets = sorted(max_dets)
    matched = np.zeros((len(AREA_RANGES), len(max_dets), len(IOU_THRESHOLDS)), np.int64)
    counted = np.zeros(len(AREA_RANGES), np.int64)
    images = []
    for index, (truth, found) in enumerate(zip(ground_truth, proposals, strict=True)):
        boxes, in_range = _counted_boxes(truth, index)
        counted += in_range.sum(axis=1)
        ranked = _ranked_proposals(found, max_dets[-1], index)
        if len(boxes) and len(ranked):
            images.append((boxes, in_range, ranked))
    images.sort(key=lambda image: len(image[0]))  # alike sizes share a padded chunk
    for chunk in _chunks(images):
        matched += _matched_counts(chunk, max_dets)
    results = {}
    for m, k in enumerate(max_dets):
        for a, prefix in enumerate(AREA_RANGES):
            if counted[a] == 0:
                results[f"{prefix}@{k}"] = math.nan
            else:  # COCO's arithmetic: recall per threshold, then their mean
                results[f"{prefix}@{k}"] = float(np.mean(matched[a, m] / counted[a]) * 100)
    if by_iou:
        for m, k in enumerate(max_dets):
            for t, threshold in enumerate(IOU_THRESHOLDS):
                recall = matched[0, m, t] / counted[0] * 100 if counted[0] else math.nan
                results[f"R@{k}@{threshold:.2f}"] = float(recall)
    return results


def _counted_boxes(truth: ImageGroundTruth, index: int) -> tuple[np.ndarray, np.ndarray]:
    """The image's boxes that are not crowd ``[g, 4]`` (float64) and which of them each area
    range counts ``[ranges, g]``."""
    boxes = np.asarray(truth.boxes, np.float64).reshape(-1, 4)
    crowd = np.asarray(truth.iscrowd).reshape(-1).astype(bool)
    areas = np.asarray(truth.areas, np.float64).reshape(-1)
    if not len(boxes) == len(crowd) == len(areas):
        raise ValueError(
            f"proposal_recall: image {index} has {len(boxes)} boxes, {len(crowd)} iscrowd flags "
            f"and {len(areas)} areas"
        )
    boxes, areas = boxes[~crowd], areas[~crowd]
    in_range = np.stack([(areas >= low) & (areas <= high) for low, high in AREA_RANGES.values()])
    return boxes, in_range


def _ranked_proposals(found: ImageProposals, limit: int, index: int) -> np.ndarray:
    """The image's first ``limit`` proposal boxes by score (stable), float64 ``[n, 4]``."""
    boxes = np.asarray(found.boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(found.scores, np.float64).reshape(-1)
    if len(boxes) != len(scores):
        raise ValueError(
            f"proposal_recall: image {index} has {len(boxes)} proposals but {len(scores)} scores"
        )
    if not (np.isfinite(boxes).all() and not np.isnan(scores).any()):
        raise ValueError(f"proposal_recall: image {index} has a proposal that is not a number")
    return boxes[np.argsort(-scores, kind="stable")[:limit]]


def _chunks(images: list) -> list[list]:
    """``images`` (sorted by box count) in consecutive runs whose padded blocks stay under
    :data:`CHUNK_ELEMENTS`."""
    chunks, current, widest = [], [], 0
    for image in images:
        size = len(IOU_THRESHOLDS) * len(image[0]) * len(image[2])
        widest = max(widest, size)
        if current and widest * (len(current) + 1) > CHUNK_ELEMENTS:
            chunks.append(current)
            current, widest = [], size
        current.append(image)
    return [*chunks, current] if current else chunks


def _coco_iou(proposals: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU ``[images, n, g]`` of padded ``[images, n, 4]`` proposals with ``[images, g, 4]``
    boxes, by pycocotools' ``bbIou`` arithmetic (far corners from ``x, y, w, h``; 0 where they
    do not overlap)."""
    sides = []
    for near in (0, 1):  # x, then y
        p_near, b_near = proposals[..., near], boxes[..., near]
        p_side, b_side = proposals[..., near + 2] - p_near, boxes[..., near + 2] - b_near
        side = np.minimum((p_near + p_side)[:, :, None], (b_near + b_side)[:, None, :])
        side -= np.maximum(p_near[:, :, None], b_near[:, None, :])
        sides.append((side, p_side, b_side))
    (width, p_width, b_width), (height, p_height, b_height) = sides
    overlap = (width > 0) & (height > 0)
    inter = width * height
    union = (p_width * p_height)[:, :, None] + (b_width * b_height)[:, None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=overlap)


def _matched_counts(images: list, max_dets: list[int]) -> np.ndarray:
    """How many counted boxes ``[ranges, max_dets, thresholds]`` the proposals of ``images``
    find, by COCO's greedy matching."""
    count, thresholds = len(images), IOU_THRESHOLDS
    width = max(len(boxes) for boxes, _, _ in images)
    depth = max(len(ranked) for _, _, ranked in images)
    boxes = np.zeros((count, width, 4))
    ranked = np.zeros((count, depth, 4))
    in_range = np.zeros((len(AREA_RANGES), count, width), bool)
    for i, (b, r, p) in enumerate(images):
        boxes[i, : len(b)], in_range[:, i, : len(b)], ranked[i, : len(p)] = b, r, p
    iou = _coco_iou(ranked, boxes)  # padding overlaps nothing: IoU 0
    # only proposals reaching the lowest threshold with some box can match: keep those, in order
    candidate = (iou >= thresholds[0]).any(axis=2)
    n = int(candidate.sum(axis=1).max())
    rank = np.argsort(~candidate, axis=1, kind="stable")[:, :n]  # their places in the ranking
    real = np.take_along_axis(candidate, rank, axis=1)
    iou = np.take_along_axis(iou, rank[:, :, None], axis=1) * real[:, :, None]
    iou = np.concatenate([iou, np.zeros((count, 1, width))], axis=1)  # row n: "none left"
    # following[i, t, g, c]: the first candidate from c on reaching threshold t with box g
    hits = iou.transpose(0, 2, 1)[:, None] >= thresholds[None, :, None, None]
    index_type = np.int16 if n < np.iinfo(np.int16).max else np.int32
    following = np.where(hits, np.arange(n + 1, dtype=index_type), index_type(n))
    backwards = following[..., ::-1]
    np.minimum.accumulate(backwards, axis=-1, out=backwards)
    counts = np.zeros((len(AREA_RANGES), len(max_dets), len(thresholds)), np.int64)
    image_index = np.arange(count)[:, None]
    for a in range(len(AREA_RANGES)):
        free = np.repeat(in_range[a][:, None, :], len(thresholds), axis=1)  # [images, T, g]
        start = np.zeros((count, len(thresholds)), np.int64)
        taken_by = np.full(free.shape, np.iinfo(np.int64).max)  # the rank of each box's match
        while True:
            # the next proposal able to take a free box: the earliest of the boxes' next hits
            nxt = np.take_along_axis(following, start[:, :, None, None], axis=3)[..., 0]
            proposal = np.where(free, nxt, n).min(axis=2)
            active = np.nonzero(proposal < n)
            if not len(active[0]):
                break
            overlaps = iou[image_index, proposal]  # [images, T, g]
            usable = free & (overlaps >= thresholds[None, :, None])
            score = np.where(usable, overlaps, -1.0)[..., ::-1]
            best = width - 1 - np.argmax(score, axis=2)  # ties: the later box
            i, t = active
            g, c = best[active], proposal[active]
            free[i, t, g] = False
            taken_by[i, t, g] = rank[i, c]
            start[active] = c + 1
        for m, k in enumerate(max_dets):
            counts[a, m] = (taken_by < k).sum(axis=(0, 2))
    return counts
