"""DatasetMapper and transforms: boxes and proposals follow resize and flip (hand-computed)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from detkit.data.mapper import BadImageError, DatasetMapper, model_image, read_record_image
from detkit.data.transforms import RandomFlip, ResizeShortestEdge, resize_scale


def write_image(path: Path, height: int, width: int) -> str:
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2] = (255, 0, 0)  # left half blue (BGR)
    cv2.imwrite(str(path), image)
    return str(path)


def record(file_name: str) -> dict:
    return {
        "file_name": file_name,
        "height": 100,
        "width": 200,
        "image_id": 1,
        "annotations": [
            {"bbox": [10.0, 20.0, 50.0, 60.0], "category_id": 2},
            {"bbox": [0.0, 0.0, 200.0, 100.0], "category_id": 0, "iscrowd": 1},
            {"bbox": [300.0, 0.0, 400.0, 10.0], "category_id": 1},  # outside: no area left
        ],
        "proposal_boxes": np.array([[0, 0, 100, 50], [150, 80, 200, 100]], np.float32),
        "proposal_objectness_logits": np.array([0.5, 0.25], np.float32),
    }


def test_resize_scale_caps_the_long_edge() -> None:
    assert resize_scale(100, 200, 600, 1000) == 5.0  # 500 x 1000
    assert resize_scale(100, 300, 600, 1000) == pytest.approx(1000 / 300)  # cap wins
    assert resize_scale(375, 500, 600, 1000) == 1.6


def test_resize_without_flip(tmp_path: Path) -> None:
    mapper = DatasetMapper(True, [ResizeShortestEdge([200], 1000)])
    out = mapper(record(write_image(tmp_path / "a.png", 100, 200)))
    assert tuple(out["image"].shape) == (3, 200, 400)
    assert out["instances"].gt_boxes.tensor.tolist() == [
        [20, 40, 100, 120]
    ]  # crowd and empty dropped
    assert out["instances"].gt_classes.tolist() == [2]
    assert out["proposals"].proposal_boxes.tensor.tolist() == [
        [0, 0, 200, 100],
        [300, 160, 400, 200],
    ]
    assert out["proposals"].objectness_logits.tolist() == [0.5, 0.25]
    assert (out["height"], out["width"]) == (100, 200)


def test_resize_and_flip(tmp_path: Path) -> None:
    mapper = DatasetMapper(True, [ResizeShortestEdge([200], 1000), RandomFlip(1.0)])
    out = mapper(record(write_image(tmp_path / "a.png", 100, 200)))
    # x1' = W - x2 on the 400-wide resized image
    assert out["instances"].gt_boxes.tensor.tolist() == [[300, 40, 380, 120]]
    assert out["proposals"].proposal_boxes.tensor.tolist() == [
        [200, 0, 400, 100],
        [0, 160, 100, 200],
    ]
    image = out["image"]
    assert image[0, 0, -1] == 255 and image[0, 0, 0] == 0  # the blue half moved right


def test_the_mapper_draws_its_augmentations_from_the_generator_it_is_given(tmp_path: Path) -> None:
    mapper = DatasetMapper(True, [ResizeShortestEdge([60, 120, 240], 1000), RandomFlip()], seed=0)
    item = record(write_image(tmp_path / "a.png", 100, 200))
    shapes = set()
    for seed in range(8):
        image, rng = read_record_image(item), np.random.default_rng(seed)
        for transform in mapper.transforms:  # the same draws, by hand
            image, _ = transform(image, rng)
        mapped = mapper(item, np.random.default_rng(seed))
        np.testing.assert_array_equal(mapped["image"].numpy(), model_image(image, "BGR").numpy())
        shapes.add((tuple(mapped["image"].shape), int(mapped["image"][0, 0, 0])))
    assert len(shapes) > 3  # several sizes, flipped and not


def test_test_mapper_keeps_no_instances_and_rgb(tmp_path: Path) -> None:
    mapper = DatasetMapper(False, [ResizeShortestEdge([50], 1000)], input_format="RGB")
    out = mapper(record(write_image(tmp_path / "a.png", 100, 200)))
    assert "instances" not in out and tuple(out["image"].shape) == (3, 50, 100)
    assert out["image"][2, 0, 0] == 255  # blue is the last channel in RGB


def test_unreadable_and_mismatched_images(tmp_path: Path) -> None:
    mapper = DatasetMapper(True, [ResizeShortestEdge([200], 1000), RandomFlip()])
    with pytest.raises(FileNotFoundError, match=r"missing\.png: no such file"):
        mapper(record(str(tmp_path / "missing.png")))
    (tmp_path / "junk.png").write_text("not an image")
    with pytest.raises(BadImageError, match="not a readable image"):
        mapper(record(str(tmp_path / "junk.png")))
    with pytest.raises(ValueError, match="image is 60x30 but the dataset says 200x100"):
        mapper(record(write_image(tmp_path / "small.png", 30, 60)))


def test_mapper_refuses_images_over_its_pixel_limit(tmp_path: Path) -> None:
    path = write_image(tmp_path / "a.png", 100, 200)
    image = DatasetMapper(False, [], max_image_pixels=20000)(record(path))["image"]
    assert tuple(image.shape) == (3, 100, 200)
    with pytest.raises(BadImageError, match=r"a\.png: it is 200x100 \(20000 pixels\), more"):
        DatasetMapper(False, [], max_image_pixels=19999)(record(path))
