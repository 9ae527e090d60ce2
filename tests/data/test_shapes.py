"""The synthetic shapes set: deterministic, well-formed, never reused half-written."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from detkit.data.datasets import shapes
from detkit.data.datasets.coco import load_coco_json


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def test_same_seed_same_files_other_seed_other_files(tmp_path: Path) -> None:
    a = shapes.ensure_shapes(tmp_path / "a", "val", num_images=6, seed=1)
    b = shapes.ensure_shapes(tmp_path / "b", "val", num_images=6, seed=1)
    c = shapes.ensure_shapes(tmp_path / "c", "val", num_images=6, seed=2)
    assert digest(a) == digest(b) != digest(c)


def test_annotations_are_well_formed(tmp_path: Path) -> None:
    folder = shapes.ensure_shapes(tmp_path, "train", num_images=20, seed=3)
    dicts = load_coco_json(folder / "annotations.json", folder)
    assert len(dicts) == 20
    for record in dicts:
        assert Path(record["file_name"]).is_file()
        assert 160 <= record["height"] <= 256 and 160 <= record["width"] <= 256
        assert 1 <= len(record["annotations"]) <= 6
        for ann in record["annotations"]:
            x1, y1, x2, y2 = ann["bbox"]
            assert 0 <= x1 < x2 <= record["width"] and 0 <= y1 < y2 <= record["height"]
            assert ann["category_id"] in (0, 1, 2)
    categories = json.loads((folder / "annotations.json").read_text())["categories"]
    assert [c["name"] for c in categories] == ["circle", "square", "triangle"]


def test_generated_split_is_reused(tmp_path: Path, monkeypatch) -> None:
    folder = shapes.ensure_shapes(tmp_path, "val", num_images=3)
    monkeypatch.setattr(shapes, "draw_image", lambda rng: pytest.fail("regenerated"))
    assert shapes.ensure_shapes(tmp_path, "val", num_images=3) == folder


def test_interrupted_generation_leaves_nothing_to_reuse(tmp_path: Path, monkeypatch) -> None:
    real_draw, calls = shapes.draw_image, []

    def interrupted(rng: np.random.Generator):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_draw(rng)

    monkeypatch.setattr(shapes, "draw_image", interrupted)
    with pytest.raises(KeyboardInterrupt):
        shapes.ensure_shapes(tmp_path, "val", num_images=5)
    assert not shapes.shapes_split_dir(tmp_path, "val").exists()
    monkeypatch.setattr(shapes, "draw_image", real_draw)
    folder = shapes.ensure_shapes(tmp_path, "val", num_images=5)
    assert len(load_coco_json(folder / "annotations.json", folder)) == 5


def test_every_annotated_shape_stays_mostly_visible(monkeypatch) -> None:
    drawn = []  # polygons filled into the image (3 channels), in drawing order
    real_fill = shapes.cv2.fillPoly

    def recording_fill(image, polygons, *args, **kwargs):
        if image.ndim == 3:
            drawn.append(polygons[0])
        return real_fill(image, polygons, *args, **kwargs)

    monkeypatch.setattr(shapes.cv2, "fillPoly", recording_fill)
    rng = np.random.default_rng(5)
    for _ in range(40):
        drawn.clear()
        image, boxes, _ = shapes.draw_image(rng)
        assert len(drawn) == len(boxes) >= 1
        masks = []
        for polygon in drawn:
            mask = np.zeros(image.shape[:2], np.uint8)
            real_fill(mask, [polygon], 1)
            masks.append(mask.astype(bool))
        for index, mask in enumerate(masks):
            covered = np.logical_or.reduce([np.zeros_like(mask), *masks[index + 1 :]])
            assert (mask & ~covered).sum() >= shapes.MIN_VISIBLE * mask.sum()


def test_split_of_an_older_generator_is_regenerated(tmp_path: Path) -> None:
    folder = shapes.ensure_shapes(tmp_path, "val", num_images=2, seed=1)
    annotations = folder / "annotations.json"
    data = json.loads(annotations.read_text())
    assert data["info"]["generator_version"] == shapes.GENERATOR_VERSION
    data["info"]["generator_version"] = shapes.GENERATOR_VERSION - 1
    annotations.write_text(json.dumps(data))
    (folder / "selective_search.pkl").write_bytes(b"stale proposals")
    shapes.ensure_shapes(tmp_path, "val", num_images=2, seed=1)
    assert json.loads(annotations.read_text())["info"]["generator_version"] == (
        shapes.GENERATOR_VERSION
    )
    assert not (folder / "selective_search.pkl").exists()


def test_a_split_finished_first_by_another_process_is_kept(tmp_path: Path, monkeypatch) -> None:
    real_replace = shapes.os.replace

    def racing_replace(source, target):
        shutil.copytree(source, target)  # another process renames its copy in just before
        return real_replace(source, target)  # so this one finds the folder taken

    monkeypatch.setattr(shapes.os, "replace", racing_replace)
    folder = shapes.ensure_shapes(tmp_path, "val", num_images=2, seed=1)
    assert len(load_coco_json(folder / "annotations.json", folder)) == 2
    assert [p.name for p in folder.parent.iterdir()] == ["val"]  # no partial folder left
