"""PASCAL VOC box AP, following the rules of the official VOC devkit.

The devkit works in VOC's 1-based inclusive pixel coordinates: a box ``xmin..xmax`` is
``xmax - xmin + 1`` pixels wide, and IoU counts widths, heights and areas that way. detkit's
continuous boxes ``(x1, y1, x2, y2)`` are therefore converted to ``(x1 + 1, y1 + 1, x2, y2)``,
ground truth and detections alike, before matching. Within a class, detections are taken in
order of decreasing score (ties in the order they were produced); each one is matched to the
ground-truth box it overlaps most; it is a true positive when that IoU exceeds the threshold and
the box is not matched yet, ignored when the box is ``difficult``, and a false positive otherwise.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict

import numpy as np

from ..data.catalog import DatasetCatalog, MetadataCatalog
from ..utils import comm
from .evaluator import DatasetEvaluator, output_instances

logger = logging.getLogger("detkit.evaluation")

IOU_THRESHOLDS = tuple(t / 100 for t in range(50, 100, 5))


def to_voc_coordinates(boxes: np.ndarray) -> np.ndarray:
    """``[N, 4]`` continuous XYXY boxes as VOC's 1-based inclusive ``xmin, ymin, xmax, ymax``."""
    voc = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    voc[:, :2] += 1.0
    return voc


def voc_iou(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """``[N, M]`` IoU of ``[N, 4]`` and ``[M, 4]`` VOC boxes, with the devkit's ``+ 1``."""
    a, b = boxes[:, None, :], others[None, :, :]
    width = np.maximum(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1, 0)
    height = np.maximum(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1, 0)
    intersection = width * height
    areas = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    other_areas = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    return intersection / (areas + other_areas - intersection)


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool) -> float:
    """AP from a precision/recall curve.

    VOC2007: the mean over recall levels ``0, 0.1, …, 1`` of the best precision at that recall
    or above (0 where the recall is never reached). VOC2010 on: the area under the curve made
    monotone (each precision replaced by the best precision at any higher recall).
    """
    if use_07_metric:
        # the devkit's levels, np.arange(0, 1.1, 0.1): 0.30000000000000004 and not 0.3, etc.
        levels = np.arange(0.0, 1.1, 0.1)
        return float(
            np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0 for t in levels])
        )
    recall = np.concatenate([[0.0], recall, [1.0]])
    precision = np.concatenate([[0.0], precision, [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


class _ClassGroundTruth:
    """The ground truth of one class: all its boxes, and which of them each image holds."""

    def __init__(self) -> None:
        self.boxes: list[np.ndarray] = []
        self.difficult: list[bool] = []
        self.by_image: dict[object, list[int]] = defaultdict(list)

    def add(self, image_id: object, box: np.ndarray, difficult: bool) -> None:
        self.by_image[image_id].append(len(self.boxes))
        self.boxes.append(box)
        self.difficult.append(difficult)

    @property
    def num_positives(self) -> int:
        """The devkit's ``npos``: boxes that are not difficult."""
        return len(self.difficult) - sum(self.difficult)


class PascalVOCDetectionEvaluator(DatasetEvaluator):
    """Box AP by the VOC devkit's rules, on the ground truth of ``DatasetCatalog.get(name)``.

    ``use_07_metric`` picks the 11-point AP of VOC2007 (True) or the area AP of VOC2010 on
    (False); by default it follows the metadata's ``year`` (2007 → 11-point, anything else or
    none → area). Results are ``{"bbox": {"AP", "AP50", "AP75", "AP50-<class>", …}}`` in percent,
    where ``AP`` is the mean over IoU thresholds 0.50:0.05:0.95 of the class-mean AP. A class
    without ground truth (or only difficult ground truth) has no defined AP: it is reported as
    NaN and left out of the means. ``task`` names the key the results go under (e.g. ``bbox_voc``
    beside a :class:`COCOEvaluator`'s ``bbox`` on the same dataset).
    """

    def __init__(
        self, dataset_name: str, use_07_metric: bool | None = None, task: str = "bbox"
    ) -> None:
        self.dataset_name = dataset_name
        self.task = task
        dicts = DatasetCatalog.get(dataset_name)
        metadata = MetadataCatalog.get(dataset_name)
        self.class_names: list[str] = list(metadata.get("thing_classes") or [])
        if not self.class_names:
            raise ValueError(
                f"PascalVOCDetectionEvaluator: dataset {dataset_name!r} has no 'thing_classes'"
            )
        if use_07_metric is None:
            use_07_metric = metadata.get("year") == 2007
        self.use_07_metric = use_07_metric
        self._image_ids = {record["image_id"] for record in dicts}
        self._ground_truth = [_ClassGroundTruth() for _ in self.class_names]
        for record in dicts:
            for ann in record.get("annotations", []):
                self._ground_truth[ann["category_id"]].add(
                    record["image_id"],
                    to_voc_coordinates(ann["bbox"])[0],
                    bool(ann.get("difficult", 0)),
                )
        self._detections: list[tuple[object, np.ndarray, np.ndarray, np.ndarray]] = []

    def reset(self) -> None:
        self._detections = []

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for image, output in zip(inputs, outputs, strict=True):
            instances = output_instances("PascalVOCDetectionEvaluator", image, output)
            if image["image_id"] not in self._image_ids:
                raise ValueError(
                    f"PascalVOCDetectionEvaluator: image {image['image_id']!r} is not in "
                    f"dataset {self.dataset_name!r}"
                )
            classes = instances.pred_classes.numpy()
            if classes.size and (classes.min() < 0 or classes.max() >= len(self.class_names)):
                raise ValueError(
                    f"PascalVOCDetectionEvaluator: predicted classes {np.unique(classes)} fall "
                    f"outside the {len(self.class_names)} classes of {self.dataset_name!r}"
                )
            self._detections.append(
                (
                    image["image_id"],
                    to_voc_coordinates(instances.pred_boxes.tensor.numpy()),
                    instances.scores.numpy().astype(np.float64),
                    classes,
                )
            )

    def evaluate(self) -> dict:
        detections = [d for part in comm.gather(self._detections) for d in part]
        if not comm.is_main_process():
            return {}
        missing = [
            name
            for name, ground_truth in zip(self.class_names, self._ground_truth, strict=True)
            if ground_truth.num_positives == 0
        ]
        if missing:
            logger.warning(
                f"PascalVOCDetectionEvaluator: no (non-difficult) ground truth of {missing} in "
                f"{self.dataset_name!r}; their AP is NaN and left out of the means"
            )
        # ap[t, c]: AP of class c at IoU threshold t
        ap = np.full((len(IOU_THRESHOLDS), len(self.class_names)), math.nan)
        for c, ground_truth in enumerate(self._ground_truth):
            if ground_truth.num_positives:
                ap[:, c] = self._class_ap(c, ground_truth, detections)
        if len(missing) < len(self.class_names):
            class_mean = np.nanmean(ap, axis=1)
        else:  # nothing to measure at all (and np.nanmean would warn)
            class_mean = np.full(len(IOU_THRESHOLDS), math.nan)
        results = {
            "AP": float(np.mean(class_mean) * 100),
            "AP50": float(class_mean[IOU_THRESHOLDS.index(0.5)] * 100),
            "AP75": float(class_mean[IOU_THRESHOLDS.index(0.75)] * 100),
        }
        for c, name in enumerate(self.class_names):
            results[f"AP50-{name}"] = float(ap[IOU_THRESHOLDS.index(0.5), c] * 100)
        return {self.task: results}

    def _class_ap(
        self, c: int, ground_truth: _ClassGroundTruth, detections: list[tuple]
    ) -> np.ndarray:
        """AP of class ``c`` at every threshold of :data:`IOU_THRESHOLDS`."""
        gt_boxes = np.array(ground_truth.boxes).reshape(-1, 4)
        gt_difficult = np.array(ground_truth.difficult, dtype=bool)
        # per detection: the box it overlaps most (-1: its image has none of this class)
        scores, best_iou, best_gt = [np.zeros(0)], [np.zeros(0)], [np.zeros(0, dtype=np.int64)]
        for image_id, boxes, image_scores, classes in detections:
            keep = classes == c
            candidates = np.array(ground_truth.by_image.get(image_id, []), dtype=np.int64)
            if candidates.size:
                overlaps = voc_iou(boxes[keep], gt_boxes[candidates])
                best = overlaps.argmax(axis=1)
                best_iou.append(overlaps[np.arange(len(best)), best])
                best_gt.append(candidates[best])
            else:
                best_iou.append(np.full(int(keep.sum()), -math.inf))
                best_gt.append(np.full(int(keep.sum()), -1, dtype=np.int64))
            scores.append(image_scores[keep])
        order = np.argsort(-np.concatenate(scores), kind="stable")
        best_iou = np.concatenate(best_iou)[order]
        best_gt = np.concatenate(best_gt)[order]
        result = np.zeros(len(IOU_THRESHOLDS))
        for t, threshold in enumerate(IOU_THRESHOLDS):
            above = best_iou > threshold
            on_difficult = above & gt_difficult[best_gt]
            candidate = above & ~on_difficult
            # a box matches only its first (highest scoring) candidate; later ones are duplicates
            _, first = np.unique(np.where(candidate, best_gt, -1), return_index=True)
            tp = np.zeros(len(best_gt), dtype=bool)
            tp[first] = True
            tp &= candidate
            fp = ~tp & ~on_difficult
            tp_sum, fp_sum = np.cumsum(tp), np.cumsum(fp)
            recall = tp_sum / ground_truth.num_positives
            precision = tp_sum / np.maximum(tp_sum + fp_sum, np.finfo(np.float64).eps)
            result[t] = voc_ap(recall, precision, self.use_07_metric)
        return result
