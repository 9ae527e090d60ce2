"""COCO evaluation at val2017's scale: the time and memory of detkit's ``COCOEvaluator`` on a
synthetic set of COCO val's shape, for each ``TEST.COCO_EVAL_BACKEND`` installed, and whether
their AP agrees. docs/benchmarks.md gives the figures.

    .venv/bin/python benchmarks/coco_eval_scale.py --images 5000 [--detections 100] [--json FILE]

The set (seeded, in a temporary folder): ``--images`` 640x480 images with sparse ids, about 7.3
ground-truth boxes each (val2017: 36,781 on 5,000 images) over COCO's 80 sparse category ids,
of every size (small, medium and large all measured) and 1% crowd, in a COCO JSON; and
``--detections`` detections per image: one near most objects (jittered box, mostly the right
class, higher scores), the rest random boxes of the image's classes or a few others (random
lower scores). Each backend runs in a forked process of its own, driven as
``inference_on_dataset`` drives it: the evaluator built as the ``coco`` entry of
``EVALUATOR_REGISTRY`` builds it (results written to its folder), ``reset``, ``process`` one
image at a time, ``evaluate``. Reported: seconds to build it (reading the ground truth), in
``process``, and in ``evaluate`` split into ``loadRes``, ``COCOeval.evaluate``, ``accumulate``,
``summarize`` and the rest (the copy handed to ``loadRes``, the results JSON, per-class AP);
the process's peak resident memory (VmHWM, reset once the set is built), what the evaluation
added to it, and what the evaluator held after ``process`` (the detections, as Python dicts).
Then the 12 COCO statistics and the largest difference between backends, of those and of the
per-class AP.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from detkit.data import DatasetCatalog, MetadataCatalog, register_coco_instances
from detkit.evaluation import COCOEvaluator
from detkit.evaluation.coco_evaluation import (
    COCO_EVAL_BACKENDS,
    coco_api,
    coco_eval_backend_problem,
)
from detkit.structures import Boxes, Instances

WIDTH, HEIGHT = 640, 480
BOXES_PER_IMAGE = 7.3  # COCO val2017: 36,781 annotations on 5,000 images
CROWD_FRACTION = 0.01
# COCO's 80 category ids: 1..90 without the 10 that were never used.
COCO_CATEGORY_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
DATASET = "coco_eval_scale"
STATS = (
    "AP", "AP50", "AP75", "APs", "APm", "APl",
    "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)  # fmt: skip
PHASES = ("build", "process", "loadRes", "evaluate", "accumulate", "summarize", "rest")


@dataclass(frozen=True)
class Detections:
    """Model outputs for every image, in dataset order: XYXY boxes, scores (float32) and
    contiguous classes, ``[images, detections, ...]``."""

    image_ids: list[int]
    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray


def random_boxes(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` XYWH boxes inside the image, sides log-uniform from 4 to 400 pixels (about 45%
    small, 25% medium, 30% large by COCO's area ranges), aspect ratios around 1."""
    side = np.exp(rng.uniform(np.log(4), np.log(400), count))
    ratio = np.exp(rng.normal(0, 0.5, count))
    w = np.minimum(side * np.sqrt(ratio), WIDTH - 1)
    h = np.minimum(side / np.sqrt(ratio), HEIGHT - 1)
    x, y = rng.uniform(0, WIDTH - w), rng.uniform(0, HEIGHT - h)
    return np.stack([x, y, w, h], axis=1).round(2)


def build_set(folder: Path, images: int, detections: int, seed: int) -> tuple[dict, Detections]:
    """The ground truth (written to ``folder/instances.json``) and the detections."""
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(np.arange(1, 600_000), images, replace=False)).tolist()
    contiguous = {dataset_id: index for index, dataset_id in enumerate(COCO_CATEGORY_IDS)}
    entries, annotations = [], []
    boxes = np.zeros((images, detections, 4), np.float32)
    scores = np.zeros((images, detections), np.float32)
    classes = np.zeros((images, detections), np.int64)
    for row, image_id in enumerate(ids):
        entries.append(
            {"id": image_id, "file_name": f"{image_id:012d}.jpg", "width": WIDTH, "height": HEIGHT}
        )
        truth = random_boxes(rng, rng.poisson(BOXES_PER_IMAGE))
        categories = rng.choice(COCO_CATEGORY_IDS, len(truth))
        for box, category in zip(truth.tolist(), categories.tolist(), strict=True):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category,
                    "bbox": box,
                    "area": round(box[2] * box[3], 2),
                    "iscrowd": int(rng.uniform() < CROWD_FRACTION),
                }
            )
        found = rng.uniform(size=len(truth)) < 0.8
        near, near_classes = truth[found][:detections], categories[found][:detections]
        near = near + rng.normal(0, 0.1, near.shape) * near[:, [2, 3, 2, 3]]
        near[:, 2:] = np.maximum(near[:, 2:], 1)
        guesses = np.concatenate([categories, rng.choice(COCO_CATEGORY_IDS, 8)])
        wrong = rng.uniform(size=len(near)) < 0.15
        near_classes = np.where(wrong, rng.choice(guesses, len(near)), near_classes)
        clutter = detections - len(near)
        xywh = np.concatenate([near, random_boxes(rng, clutter)])
        boxes[row] = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        scores[row] = np.concatenate(
            [rng.uniform(0.3, 1.0, len(near)), rng.uniform(0.0, 0.6, clutter)]
        )
        labels = np.concatenate([near_classes, rng.choice(guesses, clutter)])
        classes[row] = [contiguous[c] for c in labels.tolist()]
    ground_truth = {
        "images": entries,
        "annotations": annotations,
        "categories": [{"id": i, "name": f"class_{i}"} for i in COCO_CATEGORY_IDS],
    }
    (folder / "instances.json").write_text(json.dumps(ground_truth))
    return ground_truth, Detections(ids, boxes, scores, classes)


def status_mb(field: str) -> float:
    """``VmHWM`` (peak resident memory) or ``VmRSS`` of /proc/self/status, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


@contextlib.contextmanager
def timed_methods(seconds: dict, last: dict, methods: dict) -> Iterator[None]:
    """Adds the time spent in each of ``methods`` (label: (class, name)) to ``seconds[label]``
    and keeps the object each was last called on in ``last[label]``, while in the block."""
    saved = []
    for label, (owner, name) in methods.items():
        original = getattr(owner, name)

        def timed(self, *args, _original=original, _label=label, **kwargs):
            start = time.perf_counter()
            try:
                return _original(self, *args, **kwargs)
            finally:
                seconds[_label] = seconds.get(_label, 0.0) + time.perf_counter() - start
                last[_label] = self

        saved.append((owner, name, owner.__dict__.get(name)))
        setattr(owner, name, timed)
    try:
        yield
    finally:
        for owner, name, own in reversed(saved):
            if own is None:
                delattr(owner, name)
            else:
                setattr(owner, name, own)


@dataclass
class BackendResult:
    backend: str
    seconds: dict[str, float]  # PHASES and "total"
    peak_rss_mb: float
    added_rss_mb: float  # the peak over the resident memory before the evaluator was built
    held_rss_mb: float  # resident memory after ``process``, over the same
    stats: list[float]  # COCOeval's 12, -1 where nothing was measured
    results: dict[str, float]  # the evaluator's bbox results, percent


def run_backend(backend: str, detections: Detections, folder: Path) -> BackendResult:
    """One evaluation by ``backend``, as an evaluation run drives the evaluator."""
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here on
    before = status_mb("VmRSS")
    coco, cocoeval = coco_api(backend)
    seconds: dict[str, float] = {}
    last: dict = {}
    methods = {
        "loadRes": (coco, "loadRes"),
        "evaluate": (cocoeval, "evaluate"),
        "accumulate": (cocoeval, "accumulate"),
        "summarize": (cocoeval, "summarize"),
    }
    start = time.perf_counter()
    evaluator = COCOEvaluator(DATASET, folder / backend, backend=backend)
    seconds["build"] = time.perf_counter() - start
    evaluator.reset()
    seconds["process"] = 0.0
    for row, image_id in enumerate(detections.image_ids):
        inputs = [{"image_id": image_id, "height": HEIGHT, "width": WIDTH, "file_name": "-"}]
        instances = Instances(
            (HEIGHT, WIDTH),
            pred_boxes=Boxes(torch.from_numpy(detections.boxes[row])),
            scores=torch.from_numpy(detections.scores[row]),
            pred_classes=torch.from_numpy(detections.classes[row]),
        )
        tick = time.perf_counter()
        evaluator.process(inputs, [{"instances": instances}])
        seconds["process"] += time.perf_counter() - tick
    held = status_mb("VmRSS") - before
    tick = time.perf_counter()
    with timed_methods(seconds, last, methods):
        results = evaluator.evaluate()["bbox"]
    seconds["rest"] = time.perf_counter() - tick - sum(seconds[label] for label in methods)
    seconds["total"] = time.perf_counter() - start
    peak = status_mb("VmHWM")
    stats = [float(s) for s in last["summarize"].stats[: len(STATS)]]
    return BackendResult(backend, seconds, peak, peak - before, held, stats, results)


def largest_difference(a: dict | list, b: dict | list) -> float:
    """The largest absolute difference between two equally keyed sets of figures (NaN against
    NaN counts 0, NaN against a number infinity)."""
    if isinstance(a, dict):
        a, b = list(a.values()), list(b.values())
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        if math.isnan(x) or math.isnan(y):
            worst = max(worst, 0.0 if math.isnan(x) and math.isnan(y) else math.inf)
        else:
            worst = max(worst, abs(x - y))
    return worst


def describe(ground_truth: dict, detections: Detections) -> str:
    areas = np.array([a["area"] for a in ground_truth["annotations"]])
    crowd = sum(a["iscrowd"] for a in ground_truth["annotations"])
    return (
        f"{len(ground_truth['images'])} images, {len(areas)} ground-truth boxes "
        f"({(areas < 32**2).sum()} small, {((areas >= 32**2) & (areas < 96**2)).sum()} medium, "
        f"{(areas >= 96**2).sum()} large; {crowd} crowd), {detections.scores.size} detections"
    )


def print_table(results: list[BackendResult]) -> None:
    header = f"{'backend':17s}" + "".join(f"{p:>11s}" for p in (*PHASES, "total"))
    print(header + f"{'peak RSS':>11s}{'added':>9s}{'held':>9s}")
    for r in results:
        times = "".join(f"{r.seconds[p]:>10.2f}s" for p in (*PHASES, "total"))
        memory = f"{r.peak_rss_mb:>8.0f} MB{r.added_rss_mb:>6.0f} MB{r.held_rss_mb:>6.0f} MB"
        print(f"{r.backend:17s}{times}{memory}")
    print()
    print(f"{'COCO stats':17s}" + "".join(f"{name:>8s}" for name in STATS))
    for r in results:
        print(f"{r.backend:17s}" + "".join(f"{100 * s:>8.3f}" for s in r.stats))
    for other in results[1:]:
        first = results[0]
        per_class = {k: v for k, v in first.results.items() if k.startswith("AP-")}
        theirs = {k: other.results[k] for k in per_class}
        print(
            f"{other.backend} - {first.backend}: largest difference of the 12 stats "
            f"{largest_difference(first.stats, other.stats):.1e}, of the per-class AP "
            f"{largest_difference(per_class, theirs) / 100:.1e} (as fractions)"
        )


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Time and memory of COCOEvaluator at COCO val's scale, per backend."
    )
    parser.add_argument("--images", type=int, default=5000, help="images in the set")
    parser.add_argument("--detections", type=int, default=100, help="detections per image")
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=list(COCO_EVAL_BACKENDS),
        help="TEST.COCO_EVAL_BACKEND values to measure (default: every one installed)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = argument_parser().parse_args(argv)
    backends = args.backends or [
        b for b in COCO_EVAL_BACKENDS if coco_eval_backend_problem(b) is None
    ]
    results = []
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        ground_truth, detections = build_set(folder, args.images, args.detections, args.seed)
        print(describe(ground_truth, detections))
        register_coco_instances(DATASET, {}, folder / "instances.json", folder)
        del ground_truth
        for backend in backends:
            coco_api(backend)  # imported here, so that no child counts the import
        for backend in backends:
            # forked after the set is built: each backend starts from the same memory
            context = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(1, mp_context=context) as pool:
                results.append(pool.submit(run_backend, backend, detections, folder).result())
    DatasetCatalog.remove(DATASET)
    MetadataCatalog.remove(DATASET)
    print_table(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "images": args.images,
                    "detections_per_image": args.detections,
                    "backends": [asdict(r) for r in results],
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
