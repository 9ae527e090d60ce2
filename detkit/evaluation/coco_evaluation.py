"""COCO-style box AP with the official ``pycocotools`` evaluator, or ``faster-coco-eval``'s
(the same rules in C++; ``TEST.COCO_EVAL_BACKEND``)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import math
from pathlib import Path

import numpy as np

from ..config import ConfigError
from ..data.catalog import DatasetCatalog, MetadataCatalog
from ..data.datasets.coco import coco_annotation_has_area
from ..utils import comm
from ..utils.file_io import write_bytes_atomically
from .evaluator import DatasetEvaluator, output_instances

logger = logging.getLogger("detkit.evaluation")

_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")

# The values of TEST.COCO_EVAL_BACKEND: the module each imports and the pip package that has it.
COCO_EVAL_BACKENDS = {"pycocotools": "pycocotools", "faster_coco_eval": "faster-coco-eval"}


def coco_eval_backend_problem(backend: str) -> str | None:
    """Why ``backend`` cannot evaluate here (not a backend, or its package is not installed),
    naming the key and the package; None when it can."""
    if backend not in COCO_EVAL_BACKENDS:
        return (
            f"TEST.COCO_EVAL_BACKEND must be one of {', '.join(COCO_EVAL_BACKENDS)}, "
            f"got {backend!r}"
        )
    if importlib.util.find_spec(backend) is None:
        package = COCO_EVAL_BACKENDS[backend]
        return (
            f"TEST.COCO_EVAL_BACKEND={backend} needs the package {package}, which is not "
            f"installed (pip install {package})"
        )
    return None


def coco_api(backend: str) -> tuple[type, type]:
    """The ``COCO`` and ``COCOeval`` classes of ``backend`` (a ``TEST.COCO_EVAL_BACKEND``
    value); faster-coco-eval's are its drop-in replacements for pycocotools' (same interface,
    the report printed)."""
    problem = coco_eval_backend_problem(backend)
    if problem:
        raise ConfigError(problem)
    if backend == "faster_coco_eval":
        from faster_coco_eval import COCO
        from faster_coco_eval.core.faster_eval_api import COCOeval

        return COCO, COCOeval
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    return COCO, COCOeval


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
    """Box AP of a dataset by ``COCOeval``, in percent: ``backend`` ``pycocotools`` (the
    official code) or ``faster_coco_eval`` (the same rules in C++, the same AP; see
    ``TEST.COCO_EVAL_BACKEND``).

    The ground truth is the dataset's ``json_file`` (metadata) when it has one, so results match
    the official evaluation of that file, else :func:`convert_to_coco_dict`; either way as the
    dataset's loader reads it: without the boxes it drops (those without area, by the loader's
    own rule, whether or not the dataset was loaded), a missing ``iscrowd`` 0 and a missing
    ``area`` the box's. Results are
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
        self,
        dataset_name: str,
        output_dir: str | Path | None = None,
        distributed: bool = True,
        backend: str = "pycocotools",
    ) -> None:
        self._coco, self._cocoeval = coco_api(backend)
        self.dataset_name = dataset_name
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.distributed = distributed
        json_file = MetadataCatalog.get(dataset_name).get("json_file")
        if json_file is not None and Path(json_file).is_file():
            ground_truth = json.loads(Path(json_file).read_bytes())
            self._leave_out_what_the_loader_drops(ground_truth, json_file)
        else:
            ground_truth = convert_to_coco_dict(dataset_name)
        self._image_numbers = _number_images(ground_truth)
        with contextlib.redirect_stdout(io.StringIO()):
            self._coco_gt = self._coco()
            self._coco_gt.dataset = ground_truth
            self._coco_gt.createIndex()
        self._fill_what_the_file_left_out()
        mapping = MetadataCatalog.get(dataset_name).get("thing_dataset_id_to_contiguous_id")
        if mapping is None:  # the rule load_coco_json and convert_to_coco_dict follow
            mapping = {i: index for index, i in enumerate(sorted(self._coco_gt.getCatIds()))}
        self._to_dataset_id = {contiguous: dataset_id for dataset_id, contiguous in mapping.items()}
        self._predictions: list[dict] = []

    def _leave_out_what_the_loader_drops(self, ground_truth: dict, json_file: str) -> None:
        """Leaves out of the COCO file's ``ground_truth`` (in place) the boxes its loader drops,
        by the loader's rule (:func:`~detkit.data.datasets.coco.coco_annotation_has_area`): a
        metric must not count objects the model was never shown and no detection can match."""
        annotations = ground_truth.get("annotations", [])
        kept = [a for a in annotations if coco_annotation_has_area(a, json_file)]
        if len(kept) < len(annotations):
            ground_truth["annotations"] = kept
            logger.info(
                f"{self.dataset_name}: {len(annotations) - len(kept)} ground-truth boxes without "
                "area, which the loader drops, are left out of the evaluation too"
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
        names = [c["name"] for c in self._coco_gt.loadCats(sorted(self._coco_gt.getCatIds()))]
        if not predictions:
            logger.warning(
                f"COCOEvaluator: no predictions from the model on {self.dataset_name!r}; AP is 0 "
                "wherever it has objects to find"
            )
        unknown = {p["image_id"] for p in predictions} - self._image_numbers.keys()
        if unknown:
            raise ValueError(
                f"COCOEvaluator: predictions for images not in {self.dataset_name!r}: "
                f"{sorted(unknown, key=str)[:5]}"
            )
        log = io.StringIO()
        with contextlib.redirect_stdout(log):
            if predictions:  # loadRes adds fields to what it is given; pycocotools' refuses []
                numbers = self._image_numbers
                coco_dt = self._coco_gt.loadRes(
                    [{**p, "image_id": numbers[p["image_id"]]} for p in predictions]
                )
            else:
                coco_dt = _no_detections(self._coco)
            coco_eval = self._cocoeval(self._coco_gt, coco_dt, "bbox")
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


def _number_images(ground_truth: dict) -> dict:
    """Gives the images of a COCO dict integer ids, in place, and returns each image's id
    before → after. faster-coco-eval reads ids as integers (VOC's are strings, ``"000005"``):
    integer ids stay; otherwise all are numbered in their sorted order, the order ``COCOeval``
    takes images in, so that ties between equal scores break as they would on the ids."""
    ids = [image["id"] for image in ground_truth.get("images", [])]
    if all(type(i) is int for i in ids):
        return {i: i for i in ids}
    numbers = {i: n for n, i in enumerate(sorted(ids, key=lambda i: (isinstance(i, str), i)))}
    for image in ground_truth["images"]:
        image["id"] = numbers[image["id"]]
    for annotation in ground_truth.get("annotations", []):
        annotation["image_id"] = numbers[annotation["image_id"]]
    return numbers


def _no_detections(coco: type):
    """A ``COCOeval`` results object (of the backend's ``coco`` class) that holds no
    detection."""
    empty = coco()
    empty.dataset = {"annotations": []}
    empty.createIndex()
    return empty
