"""The visualizer: box edges in the class colour, untouched pixels elsewhere, the threshold, the
detection cap, ground truth and proposals, and labels placed so that they do not hide each
other and stay inside the image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detkit.structures import Boxes, Instances
from detkit.utils.visualizer import (
    GAP,
    PROPOSAL_GREY,
    class_color,
    draw_detections,
    draw_ground_truth,
    draw_proposals,
    enlarge,
    place_labels,
    side_by_side,
)

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


def overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    """Whether two (left, top, width, height) rectangles share a pixel."""
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def test_labels_of_boxes_with_the_same_corner_do_not_overlap() -> None:
    boxes = [(50, 80, 150, 180), (50, 80, 120, 140), (50, 80, 170, 100)]
    sizes = [(60, 14)] * 3
    corners = place_labels(boxes, sizes, (200, 200))
    rects = [(x, y, w, h) for (x, y), (w, h) in zip(corners, sizes, strict=True)]
    assert corners[0] == (50, 66), "the first label goes above its box"
    assert not any(overlaps(a, b) for i, a in enumerate(rects) for b in rects[i + 1 :]), rects


def test_a_label_at_the_image_border_stays_inside() -> None:
    for box in [(0, 0, 20, 20), (185, 190, 199, 199), (190, 0, 199, 10), (0, 195, 5, 199)]:
        ((x, y),) = place_labels([box], [(60, 14)], (200, 200))
        assert 0 <= x <= 200 - 60 and 0 <= y <= 200 - 14, (box, x, y)


def test_a_box_at_the_top_edge_gets_its_label_inside_its_top() -> None:
    assert place_labels([(30, 0, 120, 90)], [(60, 14)], (200, 200)) == [(30, 0)]


def test_without_a_free_place_a_label_takes_the_least_covered_one() -> None:
    image = (30, 30)  # room for one 30 x 10 label per row: three rows in all
    corners = place_labels([(0, 0, 29, 29)] * 4, [(30, 10)] * 4, image)
    assert sorted(corners[:3]) == [(0, 0), (0, 10), (0, 20)]
    assert corners[3] in corners[:3]


def test_labels_of_overlapping_detections_are_both_visible() -> None:
    instances = detections([[40, 60, 140, 150], [40, 60, 100, 120]], [0.9, 0.8], [0, 1])
    drawn = draw_detections(grey(), instances, NAMES)
    for index in (0, 1):
        color = np.array(class_color(index), np.uint8)
        assert (drawn == color).all(axis=2).sum() > 150, f"the label of class {index} is hidden"


def test_max_detections_draws_only_the_best() -> None:
    instances = detections([[10, 20, 60, 70], [100, 110, 190, 190]], [0.6, 0.9], [0, 1])
    drawn = draw_detections(grey(), instances, NAMES, 0.5, max_detections=1)
    assert np.array_equal(drawn[150, 100], class_color(1))
    assert np.array_equal(drawn[45, 10], [GREY] * 3), "the worse detection was drawn"


def test_ground_truth_edges_in_class_colour_with_the_name_only() -> None:
    drawn = draw_ground_truth(grey(), np.array([[40, 60, 140, 150]]), [1], NAMES)
    color = np.array(class_color(1), np.uint8)
    for row, col in [(100, 40), (100, 140), (60, 90), (150, 90)]:
        assert np.array_equal(drawn[row, col], color), (row, col)
    with_score = draw_detections(grey(), detections([[40, 60, 140, 150]], [0.97], [1]), NAMES)
    label = (drawn[40:60] == color).all(axis=2).sum()
    assert 0 < label < (with_score[40:60] == color).all(axis=2).sum(), "a score was written"


def test_ground_truth_of_an_unknown_class_is_named() -> None:
    with pytest.raises(ValueError, match="class index 3"):
        draw_ground_truth(grey(), np.array([[4, 6, 14, 15]]), [3], NAMES)


def test_proposals_are_thin_grey_boxes_and_only_the_first_n() -> None:
    boxes = np.array([[20, 20, 80, 80], [120, 120, 180, 180]], np.float32)
    drawn = draw_proposals(grey(), boxes, max_proposals=1)
    assert np.array_equal(drawn[50, 20], PROPOSAL_GREY)
    assert np.array_equal(drawn[50, 21], [GREY] * 3), "the line is more than a pixel wide"
    assert np.array_equal(drawn[150, 120], [GREY] * 3), "the second proposal was drawn"


def test_side_by_side_puts_titled_panels_left_to_right() -> None:
    left, right = grey(100, 120), np.zeros((100, 120, 3), np.uint8)
    joined = side_by_side([("a", left), ("b", right)])
    bar = joined.shape[0] - 100
    assert joined.shape == (100 + bar, 2 * 120 + GAP, 3) and bar > 5
    assert (joined[bar:, :120] == GREY).all() and (joined[bar:, 120 + GAP :] == 0).all()


def test_enlarge_scales_small_images_and_gives_the_box_factors() -> None:
    image, factors = enlarge(grey(100, 150), 300)
    assert image.shape == (300, 450, 3) and list(factors) == [3.0, 3.0, 3.0, 3.0]
    same, ones = enlarge(grey(100, 150), 0)
    assert same.shape == (100, 150, 3) and list(ones) == [1, 1, 1, 1]
