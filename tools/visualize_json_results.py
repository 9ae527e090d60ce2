"""Draws the detections of a COCO results file next to the ground truth of their dataset.

    python tools/visualize_json_results.py --input coco_instances_results.json
        --dataset shapes_val --output DIR [--conf-threshold 0.5] [--min-size 480]
        [--config-file CONFIG.yaml [KEY=VALUE | KEY VALUE ...]]

The results file is the one ``tools/train_net.py`` writes for each test set (``image_id``,
``category_id`` as the dataset's own id, ``bbox`` as XYWH, ``score``). Each image of the dataset
becomes ``DIR/<file stem>.png``: its detections scoring above the threshold on the left, its
ground truth on the right. With ``--config-file``, the datasets it declares
(``DATASETS.REGISTER``) are registered and ``--dataset`` defaults to its ``DATASETS.TEST[0]``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from detkit.data import DatasetCatalog, MetadataCatalog
from detkit.data.mapper import MAX_IMAGE_PIXELS, read_record_image
from detkit.engine.tool_setup import run_tool, setup_config, tool_argument_parser
from detkit.structures import Boxes, Instances
from detkit.utils.arguments import output_folder, probability
from detkit.utils.errors import UserError
from detkit.utils.file_io import write_bytes_atomically
from detkit.utils.visualizer import (
    add_min_size_argument,
    draw_detections,
    draw_ground_truth,
    enlarge,
    side_by_side,
)

RESULT_KEYS = ("image_id", "category_id", "bbox", "score")


def argument_parser() -> argparse.ArgumentParser:
    parser = tool_argument_parser(
        __doc__, "a config; --dataset defaults to its DATASETS.TEST[0]", required=False
    )
    parser.add_argument("--input", required=True, help="a coco_instances_results.json file")
    parser.add_argument("--dataset", help="the registered dataset the results are of")
    parser.add_argument(
        "--output", type=output_folder, required=True, help="folder for the PNG files"
    )
    parser.add_argument(
        "--conf-threshold", type=probability, default=0.5, help="draw scores above it (0-1)"
    )
    add_min_size_argument(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_tool("visualize_json_results", argument_parser(), visualize, argv)


def visualize(args: argparse.Namespace) -> int:
    cfg = setup_config(args) if args.config_file else None
    dataset = _dataset_name(args, cfg)
    records = DatasetCatalog.get(dataset)
    metadata = MetadataCatalog.get(dataset)
    predictions = read_results(args.input, records, _to_contiguous_id(metadata, records))
    class_names = _class_names(metadata, records)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    max_pixels = MAX_IMAGE_PIXELS if cfg is None else cfg.INPUT.MAX_IMAGE_PIXELS
    for record in tqdm(records, desc="visualize_json_results", unit="image"):
        image = read_record_image(record, max_pixels)
        drawing = _panels(image, record, predictions[record["image_id"]], class_names, args)
        target = output / f"{Path(record['file_name']).stem}.png"
        write_bytes_atomically(target, cv2.imencode(".png", drawing)[1].tobytes())
    print(f"wrote {len(records)} pictures of {dataset} to {output}")
    return 0


def read_results(
    path: str, records: list[dict], to_contiguous: dict[int, int]
) -> defaultdict[object, list[dict]]:
    """The results of a COCO results file by image id, with ``category_id`` turned into the
    contiguous class index and ``bbox`` into XYXY. Refuses, naming the file, anything else
    than a list of results, a result whose box or score is not finite (naming the first), and
    results of images or categories the dataset does not have."""
    if not Path(path).is_file():
        raise UserError(f"no such results file: {path}")
    try:
        results = json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{path}: not JSON ({error})") from None
    malformed = not isinstance(results, list) or not all(
        isinstance(r, dict) and all(k in r for k in RESULT_KEYS) for r in results
    )
    if malformed:
        raise UserError(f"{path}: not a COCO results list (objects with {', '.join(RESULT_KEYS)})")
    for index, result in enumerate(results):
        problem = _bad_values(result)
        if problem:
            raise UserError(f"{path}: result {index}: {problem}")
    problems = _mismatches(results, {record["image_id"] for record in records}, to_contiguous)
    if problems:
        raise UserError(f"{path}: {'; '.join(problems)}")
    by_image = defaultdict(list)
    for result in results:
        x, y, w, h = result["bbox"]
        by_image[result["image_id"]].append(
            {
                "box": [x, y, x + w, y + h],
                "class": to_contiguous[result["category_id"]],
                "score": result["score"],
            }
        )
    return by_image


def _finite_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _bad_values(result: dict) -> str | None:
    """What is wrong with one result's values, or None: ids must be whole numbers or text, the
    bbox four finite numbers x, y, width, height with no negative size, the score finite."""
    for key in ("image_id", "category_id"):
        if not isinstance(result[key], int | str):
            return f"{key} {result[key]!r} is not a whole number or text"
    box, score = result["bbox"], result["score"]
    if not (isinstance(box, list) and len(box) == 4 and all(map(_finite_number, box))):
        return f"bbox {box!r} is not four finite numbers x, y, width, height"
    if box[2] < 0 or box[3] < 0:
        return f"bbox {box!r} has a negative width or height"
    if not _finite_number(score):
        return f"score {score!r} is not a finite number"
    return None


def _mismatches(results: list[dict], image_ids: set, to_contiguous: dict[int, int]) -> list[str]:
    """What in ``results`` the dataset does not have: image ids (the first five) and
    category ids."""
    strangers = sorted({str(r["image_id"]) for r in results if r["image_id"] not in image_ids})
    unknown = sorted(
        {str(r["category_id"]) for r in results if r["category_id"] not in to_contiguous}
    )
    problems = []
    if strangers:
        problems.append(f"image_id {', '.join(strangers[:5])} not in the dataset")
    if unknown:
        problems.append(f"category_id {', '.join(unknown)} not one of its categories")
    return problems


def _dataset_name(args: argparse.Namespace, cfg: DictConfig | None) -> str:
    """``--dataset``, else ``DATASETS.TEST[0]`` of the config."""
    if args.dataset:
        return args.dataset
    if cfg is None or not cfg.DATASETS.TEST:
        raise UserError(
            "name the results' dataset with --dataset (or a --config-file with DATASETS.TEST)"
        )
    return cfg.DATASETS.TEST[0]


def _to_contiguous_id(metadata, records: list[dict]) -> dict[int, int]:
    """Dataset category id → class index: the metadata's ``thing_dataset_id_to_contiguous_id``,
    else ``index + 1`` as the COCO evaluator writes a dataset without one (e.g. PASCAL VOC)."""
    mapping = metadata.get("thing_dataset_id_to_contiguous_id")
    if mapping is not None:
        return {int(k): int(v) for k, v in mapping.items()}
    return {index + 1: index for index in range(len(_class_names(metadata, records)))}


def _class_names(metadata, records: list[dict]) -> list[str]:
    """The dataset's ``thing_classes``; class indices when its metadata has none."""
    names = metadata.get("thing_classes")
    if names is not None:
        return list(names)
    classes = [a["category_id"] for record in records for a in record["annotations"]]
    return [str(index) for index in range(max(classes, default=-1) + 1)]


def _panels(
    image: np.ndarray,
    record: dict,
    predictions: list[dict],
    class_names: list[str],
    args: argparse.Namespace,
) -> np.ndarray:
    """The image with its detections, next to the image with its ground truth."""
    image, factors = enlarge(image, args.min_size)
    boxes = np.array([p["box"] for p in predictions], np.float32).reshape(-1, 4) * factors
    instances = Instances(
        image.shape[:2],
        pred_boxes=Boxes(torch.from_numpy(boxes.astype(np.float32))),
        scores=torch.tensor([p["score"] for p in predictions], dtype=torch.float32),
        pred_classes=torch.tensor([p["class"] for p in predictions], dtype=torch.int64),
    )
    detections = draw_detections(image, instances, class_names, args.conf_threshold)
    annotations = record["annotations"]
    gt_boxes = np.array([a["bbox"] for a in annotations], np.float64).reshape(-1, 4) * factors
    gt_classes = [a["category_id"] for a in annotations]
    truth = draw_ground_truth(image, gt_boxes, gt_classes, class_names)
    shown = int((instances.scores > args.conf_threshold).sum())
    return side_by_side(
        [
            (f"{shown} detections (score > {args.conf_threshold:g})", detections),
            (f"ground truth: {len(annotations)} objects", truth),
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
