"""Proposal recall: COCO's AR of class-agnostic proposals against pycocotools' COCOeval
(``useCats=0``) on hand-made and random cases, against recalls stated by hand, the
``proposal_recall`` evaluator over model outputs, the proposal-file path and its command."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from rpn.evaluator import ProposalRecallEvaluator, proposal_file_recall
from rpn.recall import ImageGroundTruth, ImageProposals, metric_names, proposal_recall

from detkit.config import get_default_config
from detkit.data import DatasetCatalog, MetadataCatalog, register_coco_instances
from detkit.evaluation import EVALUATOR_REGISTRY, build_evaluator, convert_to_coco_dict
from detkit.structures import Boxes, Instances

REPO = Path(__file__).resolve().parents[3]
COMMAND = REPO / "projects" / "RPN" / "evaluate_proposals.py"
SHAPES_CONFIG = REPO / "configs" / "shapes" / "fast_rcnn.yaml"
NAN = math.nan


# --- the reference: pycocotools' COCOeval, class-agnostic ------------------------------------


def cocoeval_recall(ground_truth: dict, detections: list[dict], max_dets=(100, 1000)) -> dict:
    """AR in percent by ``COCOeval`` with ``useCats=0`` on a COCO dict and results list, read
    from ``eval["recall"]`` as its ``summarize`` reads it (-1, nothing to measure, as NaN)."""
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = json.loads(json.dumps(ground_truth))  # COCOeval writes into it
        truth.createIndex()
        if detections:
            results = truth.loadRes([dict(d) for d in detections])
        else:  # loadRes refuses an empty list
            results = COCO()
            results.dataset = {"annotations": []}
            results.createIndex()
        evaluation = COCOeval(truth, results, "bbox")
        evaluation.params.useCats = 0
        evaluation.params.maxDets = list(max_dets)
        evaluation.evaluate()
        evaluation.accumulate()
    recall, params = evaluation.eval["recall"], evaluation.params
    found = {}
    for m, k in enumerate(params.maxDets):
        for a, prefix in enumerate(["AR", "ARs", "ARm", "ARl"]):
            assert params.areaRngLbl[a] == ["all", "small", "medium", "large"][a]
            measured = recall[:, :, a, m]
            measured = measured[measured > -1]
            found[f"{prefix}@{k}"] = float(np.mean(measured) * 100) if measured.size else NAN
    return found


def xywh(box) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def detections_of(image_id, proposals: ImageProposals) -> list[dict]:
    boxes = np.asarray(proposals.boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(proposals.scores, np.float64)
    return [
        {"image_id": image_id, "category_id": 1, "bbox": xywh(b), "score": float(s)}
        for b, s in zip(boxes, scores, strict=True)
    ]


def coco_reference(ground_truth: list[ImageGroundTruth], proposals: list[ImageProposals], **kw):
    """COCOeval's AR on the same images (one category, as the order of the boxes is kept)."""
    images, annotations, detections = [], [], []
    for number, (truth, found) in enumerate(zip(ground_truth, proposals, strict=True), 1):
        images.append({"id": number, "width": 1000, "height": 1000, "file_name": f"{number}.png"})
        for box, crowd, area in zip(truth.boxes, truth.iscrowd, truth.areas, strict=True):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": number,
                    "category_id": 1,
                    "bbox": xywh(box),
                    "area": float(area),
                    "iscrowd": int(crowd),
                }
            )
        detections += detections_of(number, found)
    categories = [{"id": 1, "name": "object"}]
    coco = {"images": images, "annotations": annotations, "categories": categories}
    return cocoeval_recall(coco, detections, **kw)


def assert_same(found: dict, expected: dict) -> None:
    assert list(found) == list(expected)
    for name, value in expected.items():
        if math.isnan(value):
            assert math.isnan(found[name]), (name, found[name])
        else:
            assert found[name] == pytest.approx(value, abs=1e-12, rel=0), name


# --- hand-made images ------------------------------------------------------------------------


def truth(boxes, crowd=None, areas=None) -> ImageGroundTruth:
    boxes = np.array(boxes, np.float64).reshape(-1, 4)
    if areas is None:
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    crowd = np.zeros(len(boxes), np.int64) if crowd is None else np.array(crowd)
    return ImageGroundTruth(boxes, crowd, np.array(areas, np.float64))


def found(boxes, scores=None) -> ImageProposals:
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    scores = -np.arange(len(boxes)) if scores is None else scores  # given order, best first
    return ImageProposals(boxes, np.array(scores, np.float32))


def strip(x1: float, x2: float) -> list[float]:
    """A box 10 high spanning ``x1..x2``: IoU of two strips is that of their intervals."""
    return [x1, 0.0, x2, 10.0]


FAR = [500.0, 500, 510, 510]  # overlaps none of the boxes below


def many_proposals(rng: np.random.Generator, hits: dict[int, list[float]], n: int = 250):
    """``n`` proposals ranked by score, all far away but the boxes ``hits`` at their ranks."""
    boxes = np.tile(FAR, (n, 1)) + rng.uniform(0, 50, (n, 1))
    for rank, box in hits.items():
        boxes[rank] = box
    shuffled = rng.permutation(n)  # given in no order; scores rank them
    return found(boxes[shuffled], np.linspace(1, 0, n)[shuffled])


def hand_cases() -> dict[str, tuple[list, list]]:
    rng = np.random.default_rng(0)
    return {
        # a crowd box, copied by the best proposal, overlapping a box; an image of crowd only
        "crowd": (
            [
                truth([[0, 0, 40, 40], [10, 10, 40, 40], [60, 60, 90, 95]], crowd=[1, 0, 0]),
                truth([[0, 0, 50, 50]], crowd=[1]),
            ],
            [
                found([[0, 0, 40, 40], [5, 5, 40, 40], [0, 0, 40, 40], [62, 60, 90, 90]]),
                found([[0, 0, 50, 50], [0, 0, 25, 50]]),
            ],
        ),
        # equal IoU with two boxes; equal scores; a box given twice
        "ties": (
            [
                truth([strip(0, 10), strip(4, 14)]),
                truth([[0, 0, 20, 20], [0, 0, 20, 20], [30, 0, 50, 20]]),
            ],
            [
                found([strip(2, 12), strip(0, 10)]),
                found(
                    [[0, 0, 20, 22], [0, 0, 20, 20], [31, 0, 50, 20], [30, 0, 52, 20]], [1, 1, 1, 1]
                ),
            ],
        ),
        # boxes small, medium and large, on the ranges' bounds too; proposals of every size
        "areas": (
            [
                truth(
                    [
                        [0, 0, 10, 10],
                        [0, 0, 32, 32],
                        [40, 0, 80, 40],
                        [0, 40, 96, 136],
                        [100, 100, 300, 300],
                        [100, 0, 120, 10],
                    ],
                    areas=[100, 32**2, 1600, 96**2, 40000, 96**2 + 1],
                ),
            ],
            [
                found(
                    [
                        [0, 0, 12, 10],
                        [0, 0, 32, 30],
                        [40, 0, 80, 50],
                        [0, 40, 96, 120],
                        [110, 100, 300, 310],
                        [100, 0, 121, 10],
                        [0, 0, 300, 300],
                        [1, 1, 2, 2],
                    ],
                    [0.1, 0.9, 0.3, 0.4, 0.5, 0.6, 0.95, 0.2],
                ),
            ],
        ),
        # the first proposal overlaps the small box by 0.91, the medium one by 0.79: among
        # medium boxes it takes the medium one
        "counted_box_first": (
            [truth([[0, 0, 20, 20], [0, 0, 20, 28]], areas=[400, 1600])],
            [found([[0, 0, 20, 22], [0, 0, 20, 40]])],
        ),
        # an image without boxes, one without proposals, one with neither
        "empty": (
            [
                truth([]),
                truth([[0, 0, 30, 30], [50, 50, 70, 90]]),
                truth([]),
                truth([[0, 0, 9, 9]]),
            ],
            [found([[0, 0, 10, 10]]), found([]), found([]), found([[0, 0, 9, 8]])],
        ),
        # more than 100 proposals: hits before and after rank 100
        "more_than_100": (
            [
                truth([[0, 0, 50, 50], [100, 100, 150, 200], [0, 100, 40, 140]]),
                truth([[0, 0, 9, 9]]),
            ],
            [
                many_proposals(
                    rng,
                    {
                        3: [0, 0, 50, 48],
                        99: [100, 100, 150, 190],
                        100: [0, 100, 40, 140],
                        180: [0, 0, 50, 50],
                    },
                ),
                many_proposals(rng, {150: [0, 0, 9, 9]}),
            ],
        ),
    }


HAND_CASES = hand_cases()


@pytest.mark.parametrize("case", sorted(HAND_CASES))
def test_hand_made_cases_give_cocoevals_numbers(case: str) -> None:
    ground_truth, proposals = HAND_CASES[case]
    assert_same(proposal_recall(ground_truth, proposals), coco_reference(ground_truth, proposals))


def grid_case(rng: np.random.Generator) -> tuple[list, list]:
    """Boxes and proposals on a coarse grid: equal IoUs, equal scores, copies, bounds."""
    ground_truth, proposals = [], []
    for _ in range(rng.integers(1, 8)):
        g, n = rng.integers(0, 8), rng.integers(0, 40)
        corner, size = rng.integers(0, 6, (g, 2)), rng.integers(1, 5, (g, 2))
        boxes = np.concatenate([corner, corner + size], 1) * 10.0
        areas = rng.choice([100.0, 32**2, 32**2 + 1, 5000, 96**2, 20000], g)
        ground_truth.append(truth(boxes, (rng.random(g) < 0.2).astype(int), areas))
        corner, size = rng.integers(0, 6, (n, 2)), rng.integers(0, 5, (n, 2))
        proposals.append(found(np.concatenate([corner, corner + size], 1) * 10.0,
                               rng.integers(0, 3, n)))  # fmt: skip
    return ground_truth, proposals


def random_case(rng: np.random.Generator, images: int, per_image: int) -> tuple[list, list]:
    """Proposals around the boxes and anywhere, scores with ties, at float32 precision."""
    ground_truth, proposals = [], []
    for _ in range(images):
        g = rng.poisson(5)
        corner, size = rng.uniform(0, 400, (g, 2)), rng.uniform(4, 250, (g, 2))
        boxes = np.concatenate([corner, corner + size], 1)
        ground_truth.append(truth(boxes, (rng.random(g) < 0.1).astype(int)))
        near = boxes[rng.integers(0, g, per_image // 2)] if g else np.zeros((0, 4))
        near = near + rng.normal(0, 8, near.shape)
        corner, size = rng.uniform(0, 500, (per_image - len(near), 2)), rng.uniform(1, 300, (1, 2))
        anywhere = np.concatenate([corner, corner + size], 1)
        every = np.concatenate([near, anywhere])
        every = np.concatenate([every[:, :2], np.maximum(every[:, :2], every[:, 2:])], 1)
        proposals.append(found(every, np.round(rng.normal(size=len(every)), 1)))
    return ground_truth, proposals


@pytest.mark.parametrize("seed", range(6))
def test_random_grid_cases_give_cocoevals_numbers(seed: int) -> None:
    ground_truth, proposals = grid_case(np.random.default_rng(seed))
    max_dets = [(100, 1000), (1, 3), (2, 10, 20)][seed % 3]
    assert_same(
        proposal_recall(ground_truth, proposals, max_dets),
        coco_reference(ground_truth, proposals, max_dets=max_dets),
    )


def test_random_proposals_give_cocoevals_numbers() -> None:
    ground_truth, proposals = random_case(np.random.default_rng(7), images=12, per_image=300)
    assert_same(proposal_recall(ground_truth, proposals), coco_reference(ground_truth, proposals))


# --- recall stated by hand -----------------------------------------------------------------


def ar(ground_truth, proposals, max_dets=(100, 1000)) -> dict:
    return proposal_recall(ground_truth, proposals, max_dets)


def test_one_box_is_found_at_the_thresholds_its_proposal_reaches() -> None:
    # IoU 100 / 128 = 0.78: found at 0.5, 0.55, ..., 0.75 (6 of 10 thresholds)
    result = ar([truth([[0, 0, 10, 10]])], [found([[0, 0, 10, 12.8]])])
    assert_same(result, dict.fromkeys(metric_names(), NAN) | {
        "AR@100": 60.0, "ARs@100": 60.0, "AR@1000": 60.0, "ARs@1000": 60.0,
    })  # fmt: skip


def test_by_iou_gives_the_recall_at_each_threshold_that_ar_averages() -> None:
    # the box of IoU 0.78 again, and a second one found at IoU 1 (by its 101st proposal)
    misses = [[50, 50, 51, 51]] * 100
    result = proposal_recall(
        [truth([[0, 0, 10, 10], [20, 20, 30, 30]])],
        [found([[0, 0, 10, 12.8], *misses, [20, 20, 30, 30]], [2.0, *[1.0] * 100, 0.5])],
        by_iou=True,
    )
    thresholds = [f"{t:.2f}" for t in np.linspace(0.5, 0.95, 10)]
    assert [result[f"R@1000@{t}"] for t in thresholds] == [100.0] * 6 + [50.0] * 4
    assert [result[f"R@100@{t}"] for t in thresholds] == [50.0] * 6 + [0.0] * 4
    assert result["AR@1000"] == pytest.approx(np.mean([100.0] * 6 + [50.0] * 4))
    assert "R@1000@0.50" not in ar([truth([[0, 0, 10, 10]])], [found([[0, 0, 10, 10]])])


def test_a_tie_in_iou_goes_to_the_later_box() -> None:
    # the first proposal overlaps both boxes by 8/12; the second copies box (0, 10): given
    # second, the tie takes (4, 14) and the copy finds the other; given first, (0, 10) is taken
    # and the copy (6/14 with (4, 14)) finds nothing. Up to 0.65 (4 thresholds) 2 of 2, else 1.
    proposals = [found([strip(2, 12), strip(0, 10)])]
    assert ar([truth([strip(0, 10), strip(4, 14)])], proposals)["AR@100"] == pytest.approx(70)
    assert ar([truth([strip(4, 14), strip(0, 10)])], proposals)["AR@100"] == pytest.approx(50)


def test_crowd_boxes_count_nowhere_and_take_no_proposal() -> None:
    crowd_and_box = truth([[0, 0, 20, 20], [0, 0, 20, 20]], crowd=[1, 0])
    result = ar([crowd_and_box, truth([[0, 0, 20, 20]], crowd=[1])], [found([[0, 0, 20, 20]])] * 2)
    assert result["AR@100"] == 100.0  # one box counted, found by the crowd box's copy
    assert all(math.isnan(v) for v in ar([truth([[0, 0, 5, 5]], [1])], [found([])]).values())


def test_only_the_first_k_proposals_by_score_count() -> None:
    # the one proposal on the box is ranked 121st by score
    boxes = [FAR] * 150
    boxes[7] = [0, 0, 10, 10]
    scores = np.linspace(1, 0, 150)
    scores[[7, 120]] = scores[[120, 7]]
    result = ar([truth([[0, 0, 10, 10]])], [found(boxes, scores)])
    assert (result["AR@100"], result["AR@1000"]) == (0.0, 100.0)


def test_equal_scores_keep_the_given_order() -> None:
    miss, hit = [50, 50, 60, 60], [0, 0, 10, 10]
    result = ar([truth([hit])], [found([miss, hit], [1, 1])], max_dets=(1, 2))
    assert (result["AR@1"], result["AR@2"]) == (0.0, 100.0)
    assert ar([truth([hit])], [found([hit, miss], [1, 1])], max_dets=(1, 2))["AR@1"] == 100.0


def test_boxes_are_counted_in_their_area_range() -> None:
    # 10x10 (small) found, 50x50 (medium) missed, no large box
    result = ar([truth([[0, 0, 10, 10], [100, 100, 150, 150]])], [found([[0, 0, 10, 10]])])
    assert [result[k] for k in ("AR@100", "ARs@100", "ARm@100")] == [50.0, 100.0, 0.0]
    assert math.isnan(result["ARl@100"])


def test_recall_is_pooled_over_images_and_images_without_proposals_count() -> None:
    # 1 box found of 4 (one image without proposals at all)
    images = [truth([[0, 0, 10, 10], [20, 20, 30, 30]]), truth([[0, 0, 10, 10], [5, 5, 9, 9]])]
    assert ar(images, [found([[0, 0, 10, 10]]), found([])])["AR@1000"] == 25.0


def test_mismatched_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="2 images of ground truth but 1 of proposals"):
        ar([truth([]), truth([])], [found([])])
    with pytest.raises(ValueError, match="image 0 has 1 proposals but 2 scores"):
        ar([truth([])], [ImageProposals(np.zeros((1, 4)), np.zeros(2))])
    with pytest.raises(ValueError, match="image 0 has a proposal that is not a number"):
        ar([truth([])], [found([[0, 0, math.nan, 1]])])


# --- the evaluator over model outputs ------------------------------------------------------


def model_outputs(records: list[dict], seed: int = 0, per_image: int = 150) -> list[tuple]:
    """``(inputs, outputs)`` batches of two images as a proposal network gives them: boxes
    around the objects (some past the border) and anywhere, float32, logits with ties."""
    rng = np.random.default_rng(seed)
    pairs = []
    for record in records:
        boxes = np.array([a["bbox"] for a in record["annotations"]], np.float64).reshape(-1, 4)
        near = boxes[rng.integers(0, len(boxes), per_image // 2)] if len(boxes) else boxes
        near = near + rng.normal(0, 3, near.shape)
        corner = rng.uniform(0, [record["width"], record["height"]], (per_image - len(near), 2))
        anywhere = np.concatenate([corner, corner + rng.uniform(2, 40, corner.shape)], 1)
        every = np.concatenate([near, anywhere])
        every = np.concatenate([every[:, :2], np.maximum(every[:, :2], every[:, 2:])], 1)
        logits = np.round(rng.normal(size=len(every)), 1)
        image = {k: record[k] for k in ("image_id", "height", "width", "file_name")}
        instances = Instances(
            (record["height"], record["width"]),
            proposal_boxes=Boxes(torch.tensor(every, dtype=torch.float32)),
            objectness_logits=torch.tensor(logits, dtype=torch.float32),
        )
        pairs.append((image, {"proposals": instances}))
    return [
        ([i for i, _ in pairs[s : s + 2]], [o for _, o in pairs[s : s + 2]])
        for s in range(0, len(pairs), 2)
    ]


def run_evaluator(evaluator, batches) -> dict:
    evaluator.reset()
    for inputs, outputs in batches:
        evaluator.process(inputs, outputs)
    return evaluator.evaluate()


def output_detections(batches) -> list[dict]:
    detections = []
    for inputs, outputs in batches:
        for image, output in zip(inputs, outputs, strict=True):
            proposals = output["proposals"]
            detections += detections_of(
                image["image_id"],
                ImageProposals(
                    proposals.proposal_boxes.tensor.numpy(), proposals.objectness_logits.numpy()
                ),
            )
    return detections


def test_the_evaluator_scores_model_outputs_as_cocoeval_does(tiny_shapes) -> None:
    batches = model_outputs(DatasetCatalog.get(tiny_shapes.name))
    results = run_evaluator(ProposalRecallEvaluator(tiny_shapes.name), batches)
    expected = cocoeval_recall(convert_to_coco_dict(tiny_shapes.name), output_detections(batches))
    assert list(results) == ["box_proposals"]
    assert_same(results["box_proposals"], expected)
    assert 0 < results["box_proposals"]["AR@100"] < results["box_proposals"]["AR@1000"] < 100


@pytest.fixture
def coco_file_dataset(tiny_shapes, tmp_path):
    """tiny_shapes registered from a copy of its COCO file whose ``area`` fields are not the
    boxes' (segment areas are not), with one crowd box: ``(name, the file's dict)``."""
    data = json.loads((tiny_shapes.folder / "annotations.json").read_text())
    for index, annotation in enumerate(data["annotations"]):
        annotation["area"] = [500.0, 5000.0, 20000.0][index % 3]
    data["annotations"][1]["iscrowd"] = 1
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(data))
    name = "rpn_recall_file_areas"
    register_coco_instances(name, {}, path, tiny_shapes.folder)
    try:
        yield name, data
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_the_evaluator_takes_areas_from_the_datasets_coco_file(tiny_shapes, coco_file_dataset):
    name, data = coco_file_dataset
    batches = model_outputs(DatasetCatalog.get(name))
    results = run_evaluator(ProposalRecallEvaluator(name), batches)["box_proposals"]
    assert_same(results, cocoeval_recall(data, output_detections(batches)))
    by_boxes = run_evaluator(ProposalRecallEvaluator(tiny_shapes.name), batches)["box_proposals"]
    assert results["ARs@100"] != by_boxes["ARs@100"]


def test_the_main_process_scores_what_every_process_gathered(tiny_shapes, monkeypatch) -> None:
    batches = model_outputs(DatasetCatalog.get(tiny_shapes.name))
    whole = run_evaluator(ProposalRecallEvaluator(tiny_shapes.name), batches)
    sent = []  # what another process, given the second half, sends to the main one
    monkeypatch.setattr("detkit.utils.comm.gather", lambda data: sent.append(data) or [data])
    run_evaluator(ProposalRecallEvaluator(tiny_shapes.name), batches[2:])
    monkeypatch.setattr("detkit.utils.comm.gather", lambda data: [data, *sent])
    assert run_evaluator(ProposalRecallEvaluator(tiny_shapes.name), batches[:2]) == whole
    monkeypatch.setattr("detkit.utils.comm.is_main_process", lambda: False)
    assert run_evaluator(ProposalRecallEvaluator(tiny_shapes.name), batches[:2]) == {}


def test_the_evaluator_refuses_outputs_it_cannot_score(tiny_shapes) -> None:
    batches = model_outputs(DatasetCatalog.get(tiny_shapes.name))
    inputs, outputs = batches[0]
    evaluator = ProposalRecallEvaluator(tiny_shapes.name)
    with pytest.raises(KeyError, match="no 'proposals'"):
        evaluator.process(inputs, [{"instances": o["proposals"]} for o in outputs])
    evaluator.process(inputs, outputs)
    evaluator.process(inputs, outputs)
    with pytest.raises(ValueError, match="processed twice"):
        evaluator.evaluate()
    evaluator.reset()
    evaluator.process([{**inputs[0], "image_id": 999}], outputs[:1])
    with pytest.raises(ValueError, match=r"images not in 'tiny_shapes': \['999'\]"):
        evaluator.evaluate()


def test_proposal_recall_is_an_evaluator_test_evaluators_can_name(tiny_shapes, tmp_path):
    assert EVALUATOR_REGISTRY.get("proposal_recall") is ProposalRecallEvaluator
    cfg = get_default_config()
    cfg.TEST.EVALUATORS = ["proposal_recall"]
    batches = model_outputs(DatasetCatalog.get(tiny_shapes.name))
    results = run_evaluator(build_evaluator(cfg, tiny_shapes.name, tmp_path), batches)
    assert results == run_evaluator(ProposalRecallEvaluator(tiny_shapes.name), batches)


# --- proposal files and the command ----------------------------------------------------------


def test_a_proposal_file_is_scored_as_cocoeval_scores_its_clipped_boxes(tiny_shapes) -> None:
    with open(tiny_shapes.proposal_file, "rb") as file:
        data = pickle.load(file)
    records = {r["image_id"]: r for r in DatasetCatalog.get(tiny_shapes.name)}
    detections = []
    for image_id, boxes, logits in zip(
        data["ids"], data["boxes"], data["objectness_logits"], strict=True
    ):
        size = [records[image_id]["width"], records[image_id]["height"]] * 2
        clipped = np.clip(boxes.astype(np.float64), 0, size).astype(np.float32)
        detections += detections_of(image_id, ImageProposals(clipped, logits))
    result = proposal_file_recall(tiny_shapes.name, tiny_shapes.proposal_file)
    assert_same(result, cocoeval_recall(convert_to_coco_dict(tiny_shapes.name), detections))


def write_pickle(path: Path, ids: list, boxes: list, logits: list) -> Path:
    arrays = [np.array(b, np.float32).reshape(-1, 4) for b in boxes]
    scores = [np.array(s, np.float32) for s in logits]
    with open(path, "wb") as file:
        pickle.dump(
            {"ids": ids, "boxes": arrays, "objectness_logits": scores, "bbox_mode": 0}, file
        )
    return path


def record(image_id: int, boxes: list) -> dict:
    annotations = [{"bbox": b, "category_id": 0, "iscrowd": 0} for b in boxes]
    return {"image_id": image_id, "file_name": f"{image_id}.png", "height": 100, "width": 100,
            "annotations": annotations}  # fmt: skip


def test_a_proposal_past_the_border_is_scored_clipped(tmp_path) -> None:
    # clipped, (-20, 0, 20, 20) is the box itself (IoU 1); as given it would have IoU 0.5,
    # found at 1 threshold of 10
    inside = [[60, 60, 70, 70 + i] for i in range(9)]
    path = write_pickle(tmp_path / "p.pkl", [1], [[[-20, 0, 20, 20], *inside]], [[1] + [0] * 9])
    assert proposal_file_recall([record(1, [[0, 0, 20, 20]])], path)["AR@100"] == 100.0


def test_an_image_the_file_lacks_has_its_boxes_missed(tmp_path, caplog) -> None:
    path = write_pickle(tmp_path / "p.pkl", [1], [[[0, 0, 20, 20]]], [[0]])
    records = [record(1, [[0, 0, 20, 20]]), record(2, [[0, 0, 20, 20]])]
    assert proposal_file_recall(records, path)["AR@100"] == 50.0
    assert "1 images have no proposals" in caplog.text


def run_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(COMMAND), *args], cwd=REPO, capture_output=True, text=True,
        timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip


@pytest.fixture
def datasets_config(tiny_shapes, tmp_path) -> Path:
    """A config registering the tiny shapes set from its COCO file as ``rpn_cli_shapes``."""
    config = tmp_path / "datasets.yaml"
    config.write_text(
        f"_BASE_: {SHAPES_CONFIG}\nDATASETS:\n  REGISTER:\n"
        f"    - {{NAME: rpn_cli_shapes, FORMAT: coco, JSON_FILE: "
        f"{tiny_shapes.folder / 'annotations.json'}, IMAGE_ROOT: {tiny_shapes.folder}}}\n"
    )
    return config


def test_the_command_prints_the_table_of_a_proposal_file(tiny_shapes, datasets_config, tmp_path):
    out = tmp_path / "recall.json"
    result = run_command(
        "--config-file", str(datasets_config), "--dataset", "rpn_cli_shapes",
        "--proposals", str(tiny_shapes.proposal_file), "--json", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    header = next(line for line in result.stdout.splitlines() if "AR@100" in line)
    assert [c.strip() for c in header.strip("|").split("|")] == metric_names()
    written = json.loads(out.read_text())["box_proposals"]
    expected = proposal_file_recall(tiny_shapes.name, tiny_shapes.proposal_file)
    assert written == {k: None if math.isnan(v) else v for k, v in expected.items()}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--proposals", "missing.pkl"], "proposal file not found: missing.pkl"),
        (["--dataset", "no_such_set"], "dataset 'no_such_set' is not registered"),
    ],
)
def test_the_command_refuses_a_bad_file_or_dataset_in_one_line(
    tiny_shapes, datasets_config, args: list[str], message: str
) -> None:
    given = {
        "--config-file": str(datasets_config),
        "--dataset": "rpn_cli_shapes",
        "--proposals": str(tiny_shapes.proposal_file),
    }
    given.update(zip(args[::2], args[1::2], strict=True))
    result = run_command(*(word for pair in given.items() for word in pair))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("evaluate_proposals: ") and message in lines[0]
