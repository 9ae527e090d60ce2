"""PascalVOCDetectionEvaluator against APs worked out by hand with the VOC devkit's rules."""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable, Iterator

import pytest
import torch

from detkit.data import DatasetCatalog, MetadataCatalog
from detkit.evaluation import PascalVOCDetectionEvaluator
from detkit.structures import Boxes, Instances


def voc_box(xmin: float, ymin: float, xmax: float, ymax: float) -> list[float]:
    """A box given in VOC's 1-based inclusive pixels, as detkit's continuous XYXY (the loader's
    documented conversion: ``xmin - 1, ymin - 1, xmax, ymax``)."""
    return [xmin - 1, ymin - 1, xmax, ymax]


@pytest.fixture
def register() -> Iterator[Callable[..., str]]:
    """Registers dataset dicts under a fresh name; removed again after the test."""
    names = []

    def register(dicts: list[dict], **metadata) -> str:
        name = f"test_voc_eval_{uuid.uuid4().hex}"
        names.append(name)
        DatasetCatalog.register(name, lambda: dicts)
        MetadataCatalog.get(name).set(**metadata)
        return name

    yield register
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def image(image_id: str, *objects: tuple[list[float], int, int]) -> dict:
    """A dataset dict; each object is ``(box, category_id, difficult)``."""
    return {
        "file_name": f"{image_id}.jpg",
        "image_id": image_id,
        "height": 100,
        "width": 100,
        "annotations": [
            {"bbox": box, "category_id": category, "difficult": difficult}
            for box, category, difficult in objects
        ],
    }


def run(evaluator, detections: list[tuple[str, list[float], float, int]]) -> dict:
    """Feeds ``(image_id, box, score, class)`` detections, one image per batch, in given order."""
    evaluator.reset()
    for image_id, box, score, label in detections:
        inputs = [{"image_id": image_id, "height": 100, "width": 100, "file_name": "x.jpg"}]
        instances = Instances(
            (100, 100),
            pred_boxes=Boxes(torch.tensor([box])),
            scores=torch.tensor([score]),
            pred_classes=torch.tensor([label]),
        )
        evaluator.process(inputs, [{"instances": instances}])
    return evaluator.evaluate()["bbox"]


def test_perfect_detections_give_100_and_classes_without_ground_truth_are_left_out(
    register,
) -> None:
    dicts = [
        image("a", ([10, 10, 50, 60], 0, 0), ([0, 0, 20, 20], 1, 0)),
        image("b", ([30, 5, 90, 95], 1, 0), ([5, 5, 15, 15], 0, 0)),
    ]
    name = register(dicts, thing_classes=["cat", "dog", "never_seen"], year=2012)
    detections = [
        (d["image_id"], a["bbox"], 1.0, a["category_id"]) for d in dicts for a in d["annotations"]
    ]
    results = run(PascalVOCDetectionEvaluator(name), detections)
    assert results["AP"] == pytest.approx(100.0)
    assert results["AP50"] == pytest.approx(100.0)
    assert results["AP75"] == pytest.approx(100.0)
    assert results["AP50-cat"] == pytest.approx(100.0)
    assert results["AP50-dog"] == pytest.approx(100.0)
    # no ground truth: no defined AP, and the mean is over cat and dog only (not 200 / 3)
    assert math.isnan(results["AP50-never_seen"])


# One class, 4 ground-truth boxes (g1, g2 in image "a"; g3, g4 in image "b"), 6 detections.
# In order of decreasing score:        TP  FP(dup)  TP  FP  TP  FP    (g4 is never found)
#   cumulative TP                       1   1        2   2   3   3
#   recall    = TP / 4                 .25 .25      .5  .5  .75 .75
#   precision = TP / (TP + FP)          1  1/2      2/3 2/4 3/5 3/6
# VOC2007, 11 points: best precision at recall >= t for t = 0, .1, ..., 1:
#   t = 0, .1, .2 -> 1;  t = .3, .4, .5 -> 2/3;  t = .6, .7 -> 3/5;  t = .8, .9, 1 -> 0
AP_11_POINT = (3 * 1 + 3 * (2 / 3) + 2 * (3 / 5) + 3 * 0) / 11
# VOC2010+: area under the monotone envelope; recall rises by .25 at precisions 1, 2/3, 3/5
AP_AREA = 0.25 * 1 + 0.25 * (2 / 3) + 0.25 * (3 / 5)
G1, G2 = voc_box(11, 11, 50, 50), voc_box(61, 11, 90, 40)
G3, G4 = voc_box(5, 5, 40, 70), voc_box(50, 50, 95, 95)
HAND_WORKED_DETECTIONS = [  # fed out of score order, across images, to exercise the sorting
    ("b", voc_box(70, 1, 90, 20), 0.6, 0),  # FP: background
    ("a", G1, 0.9, 0),  # TP
    ("a", G2, 0.5, 0),  # TP
    ("a", G1, 0.8, 0),  # FP: g1 already taken
    ("a", voc_box(1, 80, 20, 99), 0.4, 0),  # FP: background
    ("b", G3, 0.7, 0),  # TP
]


@pytest.mark.parametrize(
    ("metadata", "use_07_metric", "expected"),
    [
        ({"year": 2007}, None, AP_11_POINT),
        ({"year": 2012}, None, AP_AREA),
        ({}, None, AP_AREA),
        ({"year": 2012}, True, AP_11_POINT),
        ({"year": 2007}, False, AP_AREA),
    ],
)
def test_hand_worked_precision_recall(register, metadata, use_07_metric, expected) -> None:
    dicts = [image("a", (G1, 0, 0), (G2, 0, 0)), image("b", (G3, 0, 0), (G4, 0, 0))]
    name = register(dicts, thing_classes=["thing"], **metadata)
    results = run(PascalVOCDetectionEvaluator(name, use_07_metric), HAND_WORKED_DETECTIONS)
    # every TP sits exactly on its box (IoU 1) and every FP misses: the same AP at every IoU
    assert results["AP50"] == pytest.approx(100 * expected)
    assert results["AP75"] == pytest.approx(100 * expected)
    assert results["AP"] == pytest.approx(100 * expected)
    assert results["AP50-thing"] == pytest.approx(100 * expected)


def test_precision_envelope(register) -> None:
    # 2 objects; by decreasing score: FP, FP, TP, TP
    #   recall 0, 0, .5, 1;  precision 0, 0, 1/3, 2/4
    # The envelope lifts precision at recall .5 from 1/3 to the 2/4 reached later:
    #   area AP = .5 * (2/4) + .5 * (2/4) = .5 (the raw curve would give .5/3 + .5/2)
    #   11-point AP: best precision at recall >= t is 2/4 for every t -> .5
    g1, g2 = voc_box(11, 11, 40, 40), voc_box(51, 51, 90, 90)
    name = register([image("a", (g1, 0, 0), (g2, 0, 0))], thing_classes=["thing"])
    miss = voc_box(1, 60, 20, 99)
    detections = [("a", miss, 0.9, 0), ("a", miss, 0.8, 0), ("a", g1, 0.7, 0), ("a", g2, 0.6, 0)]
    for use_07_metric in (False, True):
        results = run(PascalVOCDetectionEvaluator(name, use_07_metric), detections)
        assert results["AP50"] == pytest.approx(50.0)


def test_difficult_objects_are_neither_found_nor_missed(register) -> None:
    easy, hard = voc_box(11, 11, 50, 50), voc_box(61, 61, 90, 90)
    name = register([image("a", (easy, 0, 0), (hard, 0, 1))], thing_classes=["thing"])
    # the top-scoring detection hits the difficult object: ignored, so precision stays 1;
    # the difficult object is not counted among the positives, so recall reaches 1
    # (counting it as FP would give 50, counting the difficult object as a positive too)
    results = run(PascalVOCDetectionEvaluator(name), [("a", hard, 0.9, 0), ("a", easy, 0.8, 0)])
    assert results["AP50"] == pytest.approx(100.0)
    # contrast: without the flag, finding only that object is recall .5 at precision 1
    plain = register([image("a", (easy, 0, 0), (hard, 0, 0))], thing_classes=["thing"])
    only_hard = run(PascalVOCDetectionEvaluator(plain), [("a", hard, 0.9, 0)])
    assert only_hard["AP50"] == pytest.approx(50.0)


def test_iou_counts_inclusive_pixels(register) -> None:
    # Two 4x4-pixel objects, VOC (1, 1, 4, 4), in two images.
    # Image "a": a 3x3-pixel detection VOC (2, 2, 4, 4) in the corner of it. The devkit's IoU,
    #   widths as xmax - xmin + 1: 3*3 / (4*4 + 3*3 - 3*3) = 9/16 = 0.5625 > 0.5 -> TP.
    #   (Without the +1 on VOC pixels it would be 2*2 / (3*3) = 0.44 -> FP.)
    # Image "b": a 4x2-pixel detection VOC (1, 1, 4, 2): 4*2 / (4*4) = 0.5, not above 0.5 -> FP.
    #   (A +1 on detkit's continuous boxes, (0, 0, 4, 2) vs (0, 0, 4, 4), would give
    #   5*3 / (5*5) = 0.6 -> TP.)
    # So: TP then FP, recall .5 at precision 1; area AP = .5 * 1.
    gt = voc_box(1, 1, 4, 4)
    name = register([image("a", (gt, 0, 0)), image("b", (gt, 0, 0))], thing_classes=["thing"])
    detections = [("a", voc_box(2, 2, 4, 4), 0.9, 0), ("b", voc_box(1, 1, 4, 2), 0.8, 0)]
    results = run(PascalVOCDetectionEvaluator(name, use_07_metric=False), detections)
    assert results["AP50"] == pytest.approx(50.0)
    # 11-point: precision 1 up to recall .5, i.e. at t = 0, .1, .2, .3, .4, .5 -> 6 / 11
    results = run(PascalVOCDetectionEvaluator(name, use_07_metric=True), detections)
    assert results["AP50"] == pytest.approx(100 * 6 / 11)


def test_no_detections_give_zero_ap(register) -> None:
    name = register([image("a", ([0, 0, 10, 10], 0, 0))], thing_classes=["thing"])
    results = run(PascalVOCDetectionEvaluator(name), [])
    assert results == {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "AP50-thing": 0.0}


def test_errors_name_the_problem(register) -> None:
    with pytest.raises(KeyError, match="not registered"):
        PascalVOCDetectionEvaluator(f"no_such_dataset_{uuid.uuid4().hex}")
    name = register([image("a", ([0, 0, 10, 10], 0, 0))], thing_classes=["thing"])
    evaluator = PascalVOCDetectionEvaluator(name)
    inputs = [{"image_id": "a", "height": 100, "width": 100, "file_name": "a.jpg"}]
    with pytest.raises(KeyError, match="instances"):
        evaluator.process(inputs, [{"boxes": None}])
    with pytest.raises(ValueError, match="not in dataset"):
        run(evaluator, [("zzz", [0, 0, 1, 1], 0.5, 0)])
    with pytest.raises(ValueError, match="classes"):
        run(evaluator, [("a", [0, 0, 1, 1], 0.5, 3)])


def test_classes_without_ground_truth_are_named_in_a_warning(register, caplog) -> None:
    name = register([image("a", ([0, 0, 10, 10], 0, 0))], thing_classes=["thing", "other"])
    with caplog.at_level(logging.WARNING, logger="detkit.evaluation"):
        results = run(PascalVOCDetectionEvaluator(name), [("a", [0, 0, 10, 10], 0.5, 0)])
    assert "['other']" in caplog.text
    assert results["AP50"] == pytest.approx(100.0)
