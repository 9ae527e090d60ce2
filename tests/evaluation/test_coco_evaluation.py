"""COCOEvaluator against pycocotools' COCOeval run directly on the same files, by each
``TEST.COCO_EVAL_BACKEND`` (faster-coco-eval's cases are skipped where it is not installed)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import math
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detkit.config import ConfigError, check_config, get_default_config
from detkit.data import DatasetCatalog, MetadataCatalog, register_coco_instances
from detkit.evaluation import COCOEvaluator, build_evaluator, convert_to_coco_dict
from detkit.structures import Boxes, Instances

REPO = Path(__file__).resolve().parents[2]
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
FASTER_COCO_EVAL_MISSING = importlib.util.find_spec("faster_coco_eval") is None


@pytest.fixture(
    params=[
        "pycocotools",
        pytest.param(
            "faster_coco_eval",
            marks=pytest.mark.skipif(
                FASTER_COCO_EVAL_MISSING, reason="faster-coco-eval is not installed"
            ),
        ),
    ]
)
def backend(request) -> str:
    """Each ``TEST.COCO_EVAL_BACKEND``: every case must give pycocotools' own figures."""
    return request.param


@pytest.fixture
def unique_name() -> Iterator[Callable[[], str]]:
    """Fresh dataset names, unregistered again after the test."""
    names = []

    def make() -> str:
        names.append(f"test_coco_eval_{uuid.uuid4().hex}")
        return names[-1]

    yield make
    for name in names:
        if name in DatasetCatalog:
            DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def output(boxes_xyxy, scores, classes, size=(480, 640)) -> dict:
    return {
        "instances": Instances(
            size,
            pred_boxes=Boxes(torch.tensor(boxes_xyxy, dtype=torch.float32).reshape(-1, 4)),
            scores=torch.tensor(scores, dtype=torch.float32),
            pred_classes=torch.tensor(classes, dtype=torch.int64),
        )
    }


def write_sparse_coco(path: Path, rng: np.random.Generator) -> dict:
    """Five images, categories 3 ("cat") and 7 ("dog"), boxes of all sizes, one crowd region."""
    images = [
        {"id": 10 * i, "file_name": f"{i}.jpg", "height": 480, "width": 640}
        for i in (1, 2, 3, 4, 5)
    ]
    annotations = []
    for image in images:
        for _ in range(rng.integers(1, 6)):
            w, h = np.exp(rng.uniform(np.log(8), np.log(300), size=2))  # small to large
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image["id"],
                    "category_id": int(rng.choice([3, 7])),
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    annotations[-1]["iscrowd"] = 1
    data = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
    }
    path.write_text(json.dumps(data))
    return data


def jittered_detections(data: dict, rng: np.random.Generator) -> list[dict]:
    """COCO-format results: most objects found with noisy boxes, some missed, plus clutter."""
    results = []
    for ann in data["annotations"]:
        if rng.uniform() < 0.2:
            continue
        x, y, w, h = ann["bbox"]
        noise = rng.normal(scale=0.1, size=4) * [w, h, w, h]
        category = ann["category_id"] if rng.uniform() < 0.85 else 10 - ann["category_id"]
        results.append(
            {
                "image_id": ann["image_id"],
                "category_id": category,
                "bbox": [x + noise[0], y + noise[1], w + noise[2], h + noise[3]],
                "score": float(rng.uniform(0.3, 1.0)),
            }
        )
    for image in data["images"]:
        for _ in range(3):
            w, h = rng.uniform(10, 200, size=2)
            results.append(
                {
                    "image_id": image["id"],
                    "category_id": int(rng.choice([3, 7])),
                    "bbox": [rng.uniform(0, 400), rng.uniform(0, 250), w, h],
                    "score": float(rng.uniform(0.0, 0.6)),
                }
            )
    return results


def reference_stats(gt_json: Path, results: list[dict], cat_ids=None) -> np.ndarray:
    """COCOeval's 12 summary numbers, straight from pycocotools."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_json))
        evaluation = COCOeval(gt, gt.loadRes([dict(r) for r in results]), "bbox")
        if cat_ids is not None:
            evaluation.params.catIds = cat_ids
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation.stats


def feed(evaluator: COCOEvaluator, data: dict, results: list[dict], contiguous: dict) -> None:
    """Hands COCO-format results to the evaluator as model outputs, one image per batch."""
    evaluator.reset()
    for image in data["images"]:
        mine = [r for r in results if r["image_id"] == image["id"]]
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in mine)]
        inputs = [{"image_id": image["id"], "height": 480, "width": 640, "file_name": "x"}]
        outputs = [
            output(boxes, [r["score"] for r in mine], [contiguous[r["category_id"]] for r in mine])
        ]
        evaluator.process(inputs, outputs)


def assert_percent_equal(ours: float, stat: float) -> None:
    if stat < 0:  # COCOeval's "nothing to measure"
        assert math.isnan(ours)
    else:
        assert ours == pytest.approx(100 * stat, abs=1e-6)


def test_matches_cocoeval_on_a_file_with_sparse_category_ids(
    tmp_path, unique_name, backend
) -> None:
    rng = np.random.default_rng(0)
    gt_json = tmp_path / "instances.json"
    data = write_sparse_coco(gt_json, rng)
    results = jittered_detections(data, rng)
    name = unique_name()
    register_coco_instances(name, {}, gt_json, tmp_path)

    evaluator = COCOEvaluator(name, output_dir=tmp_path / "inference", backend=backend)
    feed(evaluator, data, results, contiguous={3: 0, 7: 1})  # sorted ids, as the loader does
    ours = evaluator.evaluate()["bbox"]

    stats = reference_stats(gt_json, results)
    assert 0 < stats[0] < 1 and (stats[3:6] >= 0).all()  # a non-trivial case, all sizes
    for metric, stat in zip(METRICS, stats[:6], strict=True):
        assert_percent_equal(ours[metric], stat)
    assert_percent_equal(ours["AP-cat"], reference_stats(gt_json, results, cat_ids=[3])[0])
    assert_percent_equal(ours["AP-dog"], reference_stats(gt_json, results, cat_ids=[7])[0])

    written = json.loads((tmp_path / "inference" / "coco_instances_results.json").read_text())
    assert len(written) == len(results)
    assert {r["category_id"] for r in written} == {3, 7}
    assert not list((tmp_path / "inference").glob(".*"))  # no temporary file left behind

    # after the dataset was loaded (its metadata now holds the id mapping) nothing changes
    DatasetCatalog.get(name)
    again = COCOEvaluator(name, backend=backend)
    feed(again, data, results, contiguous={3: 0, 7: 1})
    assert again.evaluate()["bbox"] == pytest.approx(ours, nan_ok=True)


def test_perfect_detections_without_a_json_file(unique_name, backend) -> None:
    # objects of 40x40 (medium) and 120x100 (large) pixels, none small
    dicts = [
        {
            "file_name": "a.jpg",
            "image_id": 1,
            "height": 200,
            "width": 300,
            "annotations": [
                {"bbox": [10, 10, 50, 50], "category_id": 0},
                {"bbox": [100, 50, 220, 150], "category_id": 1},
            ],
        },
        {
            "file_name": "b.jpg",
            "image_id": 2,
            "height": 200,
            "width": 300,
            "annotations": [{"bbox": [5, 5, 45, 45], "category_id": 1}],
        },
    ]
    name = unique_name()
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(thing_classes=["circle", "square"])
    evaluator = COCOEvaluator(name, backend=backend)
    for record in dicts:
        boxes = [a["bbox"] for a in record["annotations"]]
        classes = [a["category_id"] for a in record["annotations"]]
        evaluator.process([record], [output(boxes, [1.0] * len(boxes), classes)])
    results = evaluator.evaluate()["bbox"]
    for metric in ("AP", "AP50", "AP75", "APm", "APl", "AP-circle", "AP-square"):
        assert results[metric] == pytest.approx(100.0), metric
    assert math.isnan(results["APs"])  # no small objects: nothing to measure, not 0


def test_convert_to_coco_dict_maps_ids_back_and_boxes_to_xywh(unique_name) -> None:
    dicts = [
        {
            "file_name": "a.jpg",
            "image_id": 42,
            "height": 20,
            "width": 30,
            "annotations": [
                {"bbox": [1.0, 2.0, 11.0, 7.0], "category_id": 1, "iscrowd": 1},
                {"bbox": [0.0, 0.0, 4.0, 4.0], "category_id": 0},
            ],
        }
    ]
    mapped, plain = unique_name(), unique_name()
    for name in (mapped, plain):
        DatasetCatalog.register(name, lambda: dicts)
        MetadataCatalog.get(name).set(thing_classes=["a", "b"])
    MetadataCatalog.get(mapped).set(thing_dataset_id_to_contiguous_id={5: 0, 9: 1})

    coco = convert_to_coco_dict(mapped)
    assert coco["images"] == [{"id": 42, "width": 30, "height": 20, "file_name": "a.jpg"}]
    assert coco["categories"] == [{"id": 5, "name": "a"}, {"id": 9, "name": "b"}]
    assert coco["annotations"] == [
        {"id": 1, "image_id": 42, "category_id": 9, "bbox": [1, 2, 10, 5], "area": 50,
         "iscrowd": 1},
        {"id": 2, "image_id": 42, "category_id": 5, "bbox": [0, 0, 4, 4], "area": 16,
         "iscrowd": 0},
    ]  # fmt: skip
    plain_coco = convert_to_coco_dict(plain)
    assert [c["id"] for c in plain_coco["categories"]] == [1, 2]
    assert [a["category_id"] for a in plain_coco["annotations"]] == [2, 1]


def test_no_predictions_give_zero_ap_and_a_warning(tmp_path, unique_name, caplog, backend) -> None:
    gt_json = tmp_path / "instances.json"
    write_sparse_coco(gt_json, np.random.default_rng(1))
    name = unique_name()
    register_coco_instances(name, {}, gt_json, tmp_path)
    evaluator = COCOEvaluator(name, output_dir=tmp_path, backend=backend)
    evaluator.process(
        [{"image_id": 10, "height": 480, "width": 640, "file_name": "1.jpg"}],
        [output([], [], [])],
    )
    with caplog.at_level(logging.WARNING, logger="detkit.evaluation"):
        results = evaluator.evaluate()["bbox"]
    assert results == dict.fromkeys([*METRICS, "AP-cat", "AP-dog"], 0.0)
    assert "no predictions" in caplog.text
    assert json.loads((tmp_path / "coco_instances_results.json").read_text()) == []


def test_no_predictions_leave_what_cannot_be_measured_nan(unique_name, backend) -> None:
    """Nothing detected: AP 0 where there are objects to find, NaN where there are none (the
    rule of every evaluation), not 0 everywhere."""
    dicts = [
        {
            "file_name": "a.jpg",
            "image_id": 1,
            "height": 200,
            "width": 300,
            "annotations": [
                {"bbox": [10, 10, 50, 50], "category_id": 0},  # medium
                {"bbox": [100, 50, 220, 150], "category_id": 1},  # large
            ],
        }
    ]
    name = unique_name()
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(thing_classes=["circle", "square", "triangle"])
    evaluator = COCOEvaluator(name, distributed=False, backend=backend)
    evaluator.process(dicts, [output([], [], [])])
    results = evaluator.evaluate()["bbox"]
    for metric in ("AP", "AP50", "AP75", "APm", "APl", "AP-circle", "AP-square"):
        assert results[metric] == 0.0, metric
    assert math.isnan(results["APs"])  # no small objects
    assert math.isnan(results["AP-triangle"])  # no triangle


def test_errors_name_the_problem(tmp_path, unique_name, backend) -> None:
    with pytest.raises(KeyError, match="not registered"):
        COCOEvaluator(unique_name())
    gt_json = tmp_path / "instances.json"
    write_sparse_coco(gt_json, np.random.default_rng(2))
    name = unique_name()
    register_coco_instances(name, {}, gt_json, tmp_path)
    evaluator = COCOEvaluator(name, backend=backend)
    inputs = [{"image_id": 10, "height": 480, "width": 640, "file_name": "1.jpg"}]
    with pytest.raises(KeyError, match="instances"):
        evaluator.process(inputs, [{"proposals": None}])
    with pytest.raises(ValueError, match="class 5"):
        evaluator.process(inputs, [output([[0, 0, 5, 5]], [0.5], [5])])
    evaluator.reset()
    evaluator.process([{**inputs[0], "image_id": 999}], [output([[0, 0, 5, 5]], [0.5], [0])])
    with pytest.raises(ValueError, match="999"):
        evaluator.evaluate()


@pytest.mark.parametrize("loaded", ["never", "after the evaluator", "before the evaluator"])
def test_perfect_detections_score_100_where_the_loader_drops_a_box(
    tmp_path, unique_name, backend, loaded
):
    """A box without area, which the loader drops, is no object left to find: the ground truth
    COCOeval queries by image and category leaves it out too, by the loader's own rule, whether
    or when the dataset is loaded."""
    boxes = {1: [10, 10, 20, 30], 2: [50, 20, 40, 40]}  # image id: XYWH

    def annotation(ann_id: int, image_id: int, box: list[float]) -> dict:
        area = box[2] * box[3]
        return {"id": ann_id, "image_id": image_id, "category_id": 3, "bbox": box, "area": area,
                "iscrowd": 0}  # fmt: skip

    annotations = [annotation(i, i, box) for i, box in boxes.items()]
    annotations.append(annotation(9, 1, [5, 5, 0, 10]))  # no area: the loader drops it
    gt_json = tmp_path / "instances.json"
    gt_json.write_text(
        json.dumps(
            {
                "images": [
                    {"id": i, "file_name": f"{i}.png", "height": 80, "width": 100} for i in boxes
                ],
                "annotations": annotations,
                "categories": [{"id": 3, "name": "square"}],
            }
        )
    )
    name = unique_name()
    register_coco_instances(name, {}, gt_json, tmp_path)
    if loaded == "before the evaluator":
        DatasetCatalog.get(name)
    evaluator = COCOEvaluator(name, distributed=False, backend=backend)
    if loaded == "after the evaluator":
        records = DatasetCatalog.get(name)  # records keep each annotation's id; 9 is dropped
        assert [[a["id"] for a in r["annotations"]] for r in records] == [[1], [2]]
    for image_id, (x, y, w, h) in boxes.items():
        image = {"image_id": image_id, "height": 80, "width": 100, "file_name": f"{image_id}.png"}
        evaluator.process([image], [output([[x, y, x + w, y + h]], [1.0], [0], size=(80, 100))])
    results = evaluator.evaluate()["bbox"]
    for metric in ("AP", "AP50", "AP75", "APs", "APm", "AP-square"):
        assert results[metric] == pytest.approx(100.0), metric


def test_a_file_without_iscrowd_and_area_is_scored_as_the_loader_reads_it(
    tmp_path, unique_name, backend
):
    """COCO files made by hand often leave out ``iscrowd`` and ``area``: the loader reads them
    as not crowd, and the evaluator scores them so (area: the box's), instead of ending the
    run's evaluation with COCOeval's KeyError."""
    data = write_sparse_coco(tmp_path / "full.json", np.random.default_rng(3))
    for annotation in data["annotations"]:
        annotation["iscrowd"] = 0
    gt_json = tmp_path / "instances.json"
    gt_json.write_text(
        json.dumps(
            {
                **data,
                "annotations": [
                    {k: v for k, v in a.items() if k not in ("iscrowd", "area")}
                    for a in data["annotations"]
                ],
            }
        )
    )
    (tmp_path / "full.json").write_text(json.dumps(data))
    results = jittered_detections(data, np.random.default_rng(4))
    name = unique_name()
    register_coco_instances(name, {}, gt_json, tmp_path)
    evaluator = COCOEvaluator(name, distributed=False, backend=backend)
    feed(evaluator, data, results, contiguous={3: 0, 7: 1})
    ours = evaluator.evaluate()["bbox"]
    stats = reference_stats(tmp_path / "full.json", results)
    for metric, stat in zip(METRICS, stats[:6], strict=True):
        assert_percent_equal(ours[metric], stat)


def test_string_image_ids_and_tied_scores_give_pycocotools_figures(tmp_path, unique_name, backend):
    """VOC-style string image ids (faster-coco-eval reads ids as integers) whose sorted order is
    not the file's, and scores tied across images (COCOeval breaks ties in image id order):
    the figures of pycocotools run on the file as it is."""
    rng = np.random.default_rng(5)
    data = write_sparse_coco(tmp_path / "numbered.json", rng)
    named = {image["id"]: f"{2010 - i}_{image['id']:06d}" for i, image in enumerate(data["images"])}
    for item in data["images"]:
        item["id"] = named[item["id"]]
    for item in data["annotations"]:
        item["image_id"] = named[item["image_id"]]
    gt_json = tmp_path / "instances.json"
    gt_json.write_text(json.dumps(data))
    results = jittered_detections(data, rng)
    for result in results:
        result["score"] = round(result["score"], 1)  # ties, many of them across images
    name = unique_name()
    register_coco_instances(name, {}, gt_json, tmp_path)

    evaluator = COCOEvaluator(name, distributed=False, backend=backend)
    feed(evaluator, data, results, contiguous={3: 0, 7: 1})
    ours = evaluator.evaluate()["bbox"]

    stats = reference_stats(gt_json, results)
    assert 0 < stats[0] < 1
    for metric, stat in zip(METRICS, stats[:6], strict=True):
        assert_percent_equal(ours[metric], stat)
    assert_percent_equal(ours["AP-cat"], reference_stats(gt_json, results, cat_ids=[3])[0])
    assert_percent_equal(ours["AP-dog"], reference_stats(gt_json, results, cat_ids=[7])[0])


def test_a_backend_not_installed_is_refused_before_any_work(tmp_path, unique_name, monkeypatch):
    """``TEST.COCO_EVAL_BACKEND`` naming a backend whose package is missing, or no backend:
    one line naming the key (and the package to install), from the checks every tool runs
    before it starts and from building the evaluator, not at the end of a training run."""
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # the import fails: not installed
    cfg = get_default_config()
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 2
    cfg.TEST.EVALUATORS = ["coco"]
    cfg.TEST.COCO_EVAL_BACKEND = "faster_coco_eval"
    missing = re.escape(
        "TEST.COCO_EVAL_BACKEND=faster_coco_eval needs the package faster-coco-eval, which is "
        "not installed (pip install faster-coco-eval)"
    )
    with pytest.raises(ConfigError, match=missing):
        check_config(cfg)
    name = unique_name()
    DatasetCatalog.register(name, list)
    MetadataCatalog.get(name).set(thing_classes=["a", "b"])
    with pytest.raises(ConfigError, match=missing):
        build_evaluator(cfg, name, tmp_path)
    cfg.TEST.COCO_EVAL_BACKEND = "fast"
    unknown = "TEST.COCO_EVAL_BACKEND must be one of pycocotools, faster_coco_eval, got 'fast'"
    with pytest.raises(ConfigError, match=re.escape(unknown)):
        check_config(cfg)
    cfg.TEST.COCO_EVAL_BACKEND = "pycocotools"
    check_config(cfg)


def test_the_val_scale_benchmark_runs_small_and_the_backends_agree(tmp_path) -> None:
    """benchmarks/coco_eval_scale.py as docs/benchmarks.md runs it, on 30 images: every
    installed backend measured, every phase timed, the 12 COCO statistics the same."""
    figures = tmp_path / "figures.json"
    command = [sys.executable, "benchmarks/coco_eval_scale.py", "--images", "30"]
    done = subprocess.run(
        [*command, "--json", str(figures)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    measured = json.loads(figures.read_text())["backends"]
    installed = ["pycocotools"] + ([] if FASTER_COCO_EVAL_MISSING else ["faster_coco_eval"])
    assert [m["backend"] for m in measured] == installed
    for m in measured:
        assert m["seconds"]["total"] > 0 and min(m["seconds"].values()) >= 0
        assert m["peak_rss_mb"] > 0 and 0 < m["stats"][0] < 1
        np.testing.assert_allclose(m["stats"], measured[0]["stats"], rtol=0, atol=1e-6)
