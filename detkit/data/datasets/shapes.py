"""``shapes``: a synthetic detection set generated offline, deterministically from a seed.

Circles, squares and triangles of varied size, colour and rotation, 1 to 6 per image, drawn over
cluttered textured backgrounds, later shapes partly hiding earlier ones. Each split is written
once as PNG images plus a COCO instances JSON under ``<root>/shapes/<split>/`` and reused after
that. Generation goes to a temporary folder renamed into place at the end, so an interrupted run
never leaves a half-written split that would be reused.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..catalog import DatasetCatalog, MetadataCatalog
from .coco import cached_coco_records

SHAPE_CLASSES = ("circle", "square", "triangle")
SPLITS = {"train": (600, 0), "val": (150, 1)}  # images, seed offset
DEFAULT_SEED = 2015
# Bumped whenever the same seed would draw different images; older splits are regenerated.
GENERATOR_VERSION = 2
MIN_VISIBLE = 0.5  # fraction of each shape that later shapes leave uncovered, at least
PLACEMENT_ATTEMPTS = 10


def shapes_split_dir(root: str | Path, split: str) -> Path:
    return Path(root) / "shapes" / split


def ensure_shapes(
    root: str | Path, split: str, num_images: int | None = None, seed: int = DEFAULT_SEED
) -> Path:
    """The folder of ``split``, generated first if it is not complete yet or was made by an
    older version of the generator (whose images differ)."""
    default_count, offset = SPLITS.get(split, (None, 0))
    num_images = num_images or default_count
    if not num_images:
        raise ValueError(f"shapes: split {split!r} has no default size; give num_images")
    target = shapes_split_dir(root, split)
    if (target / "annotations.json").is_file():
        info = json.loads((target / "annotations.json").read_text()).get("info", {})
        if info.get("generator_version") == GENERATOR_VERSION:
            return target
        shutil.rmtree(target)  # stale: its images and proposals would not match this version
    temporary = target.with_name(f".{split}.partial-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    (temporary / "images").mkdir(parents=True)
    rng = np.random.default_rng(seed + 1000 * offset)
    images, annotations = [], []
    for index in tqdm(range(num_images), desc=f"generating shapes_{split}", unit="image"):
        image, boxes, classes = draw_image(rng)
        file_name = f"images/{index:05d}.png"
        cv2.imwrite(str(temporary / file_name), image)
        images.append(
            {
                "id": index + 1,
                "file_name": file_name,
                "height": image.shape[0],
                "width": image.shape[1],
            }
        )
        for box, category in zip(boxes, classes, strict=True):
            x1, y1, x2, y2 = (float(v) for v in box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index + 1,
                    "category_id": int(category) + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(SHAPE_CLASSES)]
    (temporary / "annotations.json").write_text(
        json.dumps(
            {
                "info": {"generator_version": GENERATOR_VERSION, "seed": seed},
                "images": images,
                "annotations": annotations,
                "categories": categories,
            }
        )
    )
    try:
        os.replace(temporary, target)  # only a complete split ever appears under its name
    except OSError:
        if not (target / "annotations.json").is_file():
            raise
        shutil.rmtree(temporary)  # another process finished the same split first
    return target


def draw_image(rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray], list[int]]:
    """One image (BGR uint8) with its objects' boxes (XYXY) and classes.

    A shape may cover part of those drawn before it, but never more than ``1 - MIN_VISIBLE``
    of any of them: a shape placed where it would is drawn elsewhere (or, after a few tries,
    left out), so every annotated object can be seen.
    """
    height, width = (int(v) for v in rng.integers(160, 257, size=2))
    image = _background(rng, height, width)
    owner = np.full((height, width), -1, np.int32)  # index of the shape on top at each pixel
    areas: list[int] = []
    boxes, classes = [], []
    for _ in range(int(rng.integers(1, 7))):
        for _attempt in range(PLACEMENT_ATTEMPTS):
            category = int(rng.integers(len(SHAPE_CLASSES)))
            size = float(rng.uniform(18, min(height, width) * 0.45))
            centre = rng.uniform([size, size], [width - size, height - size])
            colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
            points = _outline(category, centre, size, float(rng.uniform(0, 2 * np.pi)))
            polygon = np.round(points).astype(np.int32)
            mask = cv2.fillPoly(np.zeros((height, width), np.uint8), [polygon], 1).astype(bool)
            if _keeps_others_visible(owner, areas, mask):
                break
        else:
            continue
        cv2.fillPoly(image, [polygon], colour, lineType=cv2.LINE_AA)
        owner[mask] = len(areas)
        areas.append(int(mask.sum()))
        boxes.append(
            np.concatenate([points.min(axis=0), points.max(axis=0)]).clip(
                0, [width, height, width, height]
            )
        )
        classes.append(category)
    return image, boxes, classes


def _keeps_others_visible(owner: np.ndarray, areas: list[int], mask: np.ndarray) -> bool:
    """Whether every shape drawn so far keeps ``MIN_VISIBLE`` of its area outside ``mask``."""
    visible = np.bincount(owner[~mask & (owner >= 0)], minlength=len(areas))
    return all(visible[k] >= MIN_VISIBLE * areas[k] for k in range(len(areas)))


def _outline(category: int, centre: np.ndarray, size: float, angle: float) -> np.ndarray:
    """Polygon points of a shape inscribed in a circle of diameter ``size``."""
    if category == 0:  # circle
        angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    elif category == 1:  # square
        angles = angle + np.array([0.25, 0.75, 1.25, 1.75]) * np.pi
    else:  # triangle
        angles = angle + np.array([0.5, 0.5 + 2 / 3, 0.5 + 4 / 3]) * np.pi
    radius = size / 2
    return centre + radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Blurred colour noise with random thin lines and dots: clutter that is not a shape."""
    noise = rng.integers(0, 256, size=(height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    image = cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
    image = (image.astype(np.float32) * 0.5 + 64).astype(np.uint8)
    for _ in range(int(rng.integers(4, 12))):
        p1 = tuple(int(v) for v in rng.integers(0, [width, height]))
        p2 = tuple(int(v) for v in rng.integers(0, [width, height]))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        cv2.line(image, p1, p2, colour, int(rng.integers(1, 3)), lineType=cv2.LINE_AA)
    return image


def register_shapes(root: str | Path) -> None:
    """Registers ``shapes_train`` and ``shapes_val`` under ``root``; generated on first use."""
    for split in SPLITS:
        name = f"shapes_{split}"

        def load(split=split, name=name) -> Sequence[dict]:
            folder = ensure_shapes(root, split)
            return cached_coco_records(folder / "annotations.json", folder, name)

        DatasetCatalog.register(name, load, checked=True)
        MetadataCatalog.get(name).set(evaluator_type="coco", thing_classes=list(SHAPE_CLASSES))
