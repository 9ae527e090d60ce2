"""draw_detections: box edges in the class colour, untouched pixels elsewhere, the threshold."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detkit.structures import Boxes, Instances
from detkit.utils.visualizer import class_color, draw_detections

GREY = 128
NAMES = ["circle", "square", "triangle"]


def detections(boxes, scores, classes, size=(200, 200)) -> Instances:
    return Instances(
        size,
        pred_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32)),
        scores=torch.tensor(scores),
        pred_classes=torch.tensor(classes),
    )


def grey(height: int = 200, width: int = 200) -> np.ndarray:
    return np.full((height, width, 3), GREY, np.uint8)


def test_box_edges_in_class_colour_and_rest_untouched() -> None:
    image = grey()
    drawn = draw_detections(image, detections([[40, 60, 140, 150]], [0.97], [2]), NAMES)
    color = np.array(class_color(2), np.uint8)
    for row, col in [(100, 40), (100, 140), (60, 90), (150, 90)]:  # left, right, top, bottom
        assert np.array_equal(drawn[row, col], color), (row, col)
    for row, col in [(100, 90), (70, 50), (140, 130), (100, 10), (100, 180), (190, 90), (10, 180)]:
        assert np.array_equal(drawn[row, col], [GREY] * 3), (row, col)
    assert (drawn[45:59, 41:100] == color).all(axis=2).any(), "no label background above the box"
    assert (image == GREY).all(), "the input image was modified"


def test_label_stays_inside_when_box_touches_top_edge() -> None:
    drawn = draw_detections(grey(), detections([[20, 0, 120, 80]], [0.9], [0]), NAMES)
    color = np.array(class_color(0), np.uint8)
    assert (drawn[2:10, 25:60] == color).all(axis=2).any()


def test_below_threshold_draws_nothing() -> None:
    image = grey()
    drawn = draw_detections(image, detections([[40, 60, 140, 150]], [0.3], [1]), NAMES, 0.5)
    assert drawn is not image and np.array_equal(drawn, image)


def test_classes_get_distinct_colours() -> None:
    assert len({class_color(index) for index in range(20)}) == 20


def test_unknown_class_is_named() -> None:
    with pytest.raises(ValueError, match="class index 5"):
        draw_detections(grey(), detections([[40, 60, 140, 150]], [0.9], [5]), NAMES)


def test_detections_of_another_image_size_are_refused() -> None:
    with pytest.raises(ValueError, match="100, 100"):
        draw_detections(grey(), detections([[4, 6, 14, 15]], [0.9], [0], (100, 100)), NAMES)
