"""COCO-style box AP with the official ``pycocotools`` evaluator."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
from pathlib import Path

import numpy as np

from ..data.catalog import DatasetCatalog, MetadataCatalog
from ..utils import comm
from ..utils.file_io import write_bytes_atomically
from .evaluator import DatasetEvaluator, output_instances

logger = logging.getLogger("detkit.evaluation")

_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def convert_to_coco_dict(dataset_name: str) -> dict:
    """The COCO instances dict (``images``, ``annotations``, ``categories``) of a registered
    dataset, for datasets that have no COCO JSON of their own.

    Category ids go back through the metadata's ``thing_dataset_id_to_contiguous_id`` when it
    has one, else contiguous id ``i`` becomes ``i + 1`` (COCO reserves 0). Boxes become XYWH and
    the area is the box's. Annotation ids start at 1: ``COCOeval`` treats id 0 as "unmatched".
    """
    dicts = DatasetCatalog.get(dataset_name)  # loading may fill in the metadata
    metadata = MetadataCatalog.get(dataset_name)
    classes = metadata.get("thing_classes")
    if classes is None:
        raise ValueError(
            f"convert_to_coco_dict: dataset {dataset_name!r} has no 'thing_classes' metadata"
        )
    to_dataset_id = _contiguous_to_dataset_id(dataset_name, len(classes))
    images, annotations = [], []
    for record in dicts:
        images.append(
            {
                "id": record["image_id"],
                "width": record["width"],
                "height": record["height"],
                "file_name": record["file_name"],
            }
        )
        for ann in record.get("annotations", []):
            x1, y1, x2, y2 = (float(v) for v in ann["bbox"])
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": record["image_id"],
                    "category_id": to_dataset_id[ann["category_id"]],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": max(x2 - x1, 0.0) * max(y2 - y1, 0.0),
                    "iscrowd": int(ann.get("iscrowd", 0)),
                }
            )
    categories = [{"id": to_dataset_id[index], "name": name} for index, name in enumerate(classes)]
    return {"images": images, "annotations": annotations, "categories": categories}


def _contiguous_to_dataset_id(dataset_name: str, num_classes: int) -> dict[int, int]:
    mapping = MetadataCatalog.get(dataset_name).get("thing_dataset_id_to_contiguous_id")
    if mapping is None:
        return {index: index + 1 for index in range(num_classes)}
    return {contiguous: dataset_id for dataset_id, contiguous in mapping.items()}


class COCOEvaluator(DatasetEvaluator):
    """Box AP of a dataset by ``pycocotools``' ``COCOeval``, in percent.

    The ground truth is the dataset's ``json_file`` (metadata) when it has one, so results match
    the official evaluation of that file, else :func:`convert_to_coco_dict`; either way as the
    dataset's loader reads it: without the boxes it dropped, a missing ``iscrowd`` 0 and a
    missing ``area`` the box's. Results are
    ``{"bbox": {"AP", "AP50", "AP75", "APs", "APm", "APl", "AP-<class>", …}}``; a metric with no
    ground truth to measure (e.g. ``APs`` without small objects) is NaN. A model that predicted
    nothing is scored by the same rule, with a warning: AP 0 wherever there are objects to find,
    NaN where there are none (detectron2 reports NaN for every metric then, which would hide a
    model that finds nothing among metrics that cannot be measured).

    With ``output_dir`` the predictions are also written there, in COCO's results format, as
    ``coco_instances_results.json``. With ``distributed`` (the default) the main process gathers
    every process's predictions and evaluates them all; the others return ``{}``.
    """

    def __init__(
        self, dataset_name: str, output_dir: str | Path | None = None, distributed: bool = True
    ) -> None:
        from pycocotools.coco import COCO

        self.dataset_name = dataset_name
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.distributed = distributed
        json_file = MetadataCatalog.get(dataset_name).get("json_file")
        with contextlib.redirect_stdout(io.StringIO()):
            if json_file is not None and Path(json_file).is_file():
                self._coco_gt = COCO(str(json_file))
            else:
                self._coco_gt = COCO()
                self._coco_gt.dataset = convert_to_coco_dict(dataset_name)
                self._coco_gt.createIndex()
        self._drop_what_the_loader_dropped()
        self._fill_what_the_file_left_out()
        mapping = MetadataCatalog.get(dataset_name).get("thing_dataset_id_to_contiguous_id")
        if mapping is None:  # the rule load_coco_json and convert_to_coco_dict follow
            mapping = {i: index for index, i in enumerate(sorted(self._coco_gt.getCatIds()))}
        self._to_dataset_id = {contiguous: dataset_id for dataset_id, contiguous in mapping.items()}
        self._predictions: list[dict] = []

    def _drop_what_the_loader_dropped(self) -> None:
        """Leaves out of the ground truth the boxes the dataset's loader dropped (boxes without
        area, listed in its metadata as ``dropped_annotation_ids``): a metric must not count
        objects the model was never shown and no detection can match."""
        dropped = set(MetadataCatalog.get(self.dataset_name).get("dropped_annotation_ids") or ())
        if not dropped:
            return
        annotations = self._coco_gt.dataset.get("annotations", [])
        self._coco_gt.dataset["annotations"] = [a for a in annotations if a["id"] not in dropped]
        with contextlib.redirect_stdout(io.StringIO()):
            self._coco_gt.createIndex()
        logger.info(
            f"{self.dataset_name}: {len(dropped)} ground-truth boxes the loader dropped are left "
            "out of the evaluation too"
        )

    def _fill_what_the_file_left_out(self) -> None:
        """Gives every ground-truth box the fields ``COCOeval`` reads that a COCO file may leave
        out, as the loader reads the file: ``iscrowd`` 0, and as ``area`` the box's. (In place:
        the index holds these same dicts.)"""
        for annotation in self._coco_gt.dataset.get("annotations", []):
            annotation.setdefault("iscrowd", 0)
            if "area" not in annotation:
                _, _, width, height = annotation["bbox"]
                annotation["area"] = width * height

    def reset(self) -> None:
        self._predictions = []

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for image, output in zip(inputs, outputs, strict=True):
            instances = output_instances("COCOEvaluator", image, output)
            boxes = instances.pred_boxes.tensor.clone()
            boxes[:, 2:] -= boxes[:, :2]  # XYXY -> XYWH
            for box, score, label in zip(
                boxes.tolist(),
                instances.scores.tolist(),
                instances.pred_classes.tolist(),
                strict=True,
            ):
                if label not in self._to_dataset_id:
                    raise ValueError(
                        f"COCOEvaluator: predicted class {label} is not one of the "
                        f"{len(self._to_dataset_id)} classes of {self.dataset_name!r}"
                    )
                self._predictions.append(
                    {
                        "image_id": image["image_id"],
                        "category_id": self._to_dataset_id[label],
                        "bbox": box,
                        "score": score,
                    }
                )

    def evaluate(self) -> dict:
        predictions = self._predictions
        if self.distributed:
            gathered = comm.gather(predictions)
            if not comm.is_main_process():
                return {}
            predictions = [p for part in gathered for p in part]
        if self.output_dir is not None:
            write_bytes_atomically(
                self.output_dir / "coco_instances_results.json", json.dumps(predictions)
            )
        return {"bbox": self._evaluate_boxes(predictions)}

    def _evaluate_boxes(self, predictions: list[dict]) -> dict[str, float]:
        from pycocotools.cocoeval import COCOeval

        names = [c["name"] for c in self._coco_gt.loadCats(sorted(self._coco_gt.getCatIds()))]
        if not predictions:
            logger.warning(
                f"COCOEvaluator: no predictions from the model on {self.dataset_name!r}; AP is 0 "
                "wherever it has objects to find"
            )
        unknown = {p["image_id"] for p in predictions} - set(self._coco_gt.getImgIds())
        if unknown:
            raise ValueError(
                f"COCOEvaluator: predictions for images not in {self.dataset_name!r}: "
                f"{sorted(unknown, key=str)[:5]}"
            )
        log = io.StringIO()
        with contextlib.redirect_stdout(log):
            if predictions:  # loadRes adds fields to what it is given, and refuses []
                coco_dt = self._coco_gt.loadRes([dict(p) for p in predictions])
            else:
                coco_dt = _no_detections()
            coco_eval = COCOeval(self._coco_gt, coco_dt, "bbox")
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        logger.debug(f"COCOeval on {self.dataset_name!r}:\n{log.getvalue()}")
        # stats is -1 where nothing could be measured; keep that visible as NaN, not as -100
        results = {
            metric: float(value * 100) if value >= 0 else math.nan
            for metric, value in zip(_METRICS, coco_eval.stats[:6], strict=True)
        }
        # precision: [IoU thresholds, recall points, categories, area ranges, max detections]
        precision = coco_eval.eval["precision"]
        for k, name in enumerate(names):  # params.catIds are the sorted category ids too
            measured = precision[:, :, k, 0, -1]
            measured = measured[measured > -1]
            results[f"AP-{name}"] = float(np.mean(measured) * 100) if measured.size else math.nan
        return results


def _no_detections():
    """A ``COCOeval`` results object that holds no detection."""
    from pycocotools.coco import COCO

    empty = COCO()
    empty.dataset = {"annotations": []}
    empty.createIndex()
    return empty
