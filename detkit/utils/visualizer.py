"""Drawing detections, ground truth and proposals on an image with OpenCV.

Boxes are drawn first and their labels after, each label at the first of a few places near its
box (above it, inside its top, below it, then further out) that no label placed before covers,
so that labels of overlapping boxes stay readable.
"""

from __future__ import annotations

import argparse
import colorsys
from collections.abc import Sequence

import cv2
import numpy as np

from ..structures import Instances

FONT = cv2.FONT_HERSHEY_SIMPLEX
GOLDEN_RATIO_CONJUGATE = 0.6180339887
PROPOSAL_GREY = (200, 200, 200)
TITLE_BACKGROUND = (40, 40, 40)
GAP = 8  # pixels between side-by-side panels
STACKED_SHIFTS = 3  # how many label heights a label may move further out from its box


def class_color(index: int) -> tuple[int, int, int]:
    """The BGR colour of class ``index``: hues a golden-ratio step apart, so neighbouring
    classes differ strongly and every class keeps its colour across images and runs."""
    hue = (index * GOLDEN_RATIO_CONJUGATE) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return round(blue * 255), round(green * 255), round(red * 255)


def draw_detections(
    image_bgr: np.ndarray,
    instances: Instances,
    class_names: Sequence[str],
    confidence_threshold: float = 0.5,
    max_detections: int | None = None,
) -> np.ndarray:
    """A copy of ``image_bgr`` (uint8 ``[H, W, 3]``) with every detection whose score is above
    ``confidence_threshold`` drawn (only the ``max_detections`` best when given): its box in the
    class colour and a "name 0.97" label on a filled background.

    ``instances`` holds ``pred_boxes`` (XYXY pixels of this image), ``scores`` and
    ``pred_classes`` (indices into ``class_names``). Lines and text scale with the image size so
    that small images stay readable. Better detections are drawn on top and choose their label's
    place first.
    """
    _check_image("draw_detections", image_bgr)
    height, width = image_bgr.shape[:2]
    if tuple(instances.image_size) != (height, width):
        raise ValueError(
            f"draw_detections: the detections belong to an image of (height, width) "
            f"{instances.image_size}, not to this {(height, width)} image"
        )
    boxes = instances.pred_boxes.tensor.detach().cpu().numpy()
    scores = instances.scores.detach().cpu().numpy()
    classes = instances.pred_classes.detach().cpu().numpy()
    _check_classes("draw_detections", classes, class_names)
    if max_detections is not None and max_detections < 0:
        raise ValueError(f"draw_detections: max_detections must be >= 0, got {max_detections}")
    shown = np.nonzero(scores > confidence_threshold)[0]
    best_first = shown[np.argsort(-scores[shown], kind="stable")][:max_detections]
    texts = [f"{class_names[classes[i]]} {scores[i]:.2f}" for i in best_first]
    return _draw_labelled_boxes(image_bgr, boxes[best_first], classes[best_first], texts)


def draw_ground_truth(
    image_bgr: np.ndarray, boxes: np.ndarray, classes: Sequence[int], class_names: Sequence[str]
) -> np.ndarray:
    """A copy of ``image_bgr`` with ground-truth ``boxes`` (``[N, 4]`` XYXY pixels) drawn in
    the colour of their ``classes`` (indices into ``class_names``), labelled with the class name
    only, in the order given."""
    _check_image("draw_ground_truth", image_bgr)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    classes = np.asarray(classes, np.int64).reshape(-1)
    if len(classes) != len(boxes):
        raise ValueError(f"draw_ground_truth: {len(boxes)} boxes but {len(classes)} classes")
    _check_classes("draw_ground_truth", classes, class_names)
    texts = [class_names[c] for c in classes]
    return _draw_labelled_boxes(image_bgr, boxes, classes, texts)


def draw_proposals(
    image_bgr: np.ndarray, boxes: np.ndarray, max_proposals: int | None = None
) -> np.ndarray:
    """A copy of ``image_bgr`` with proposal ``boxes`` (``[N, 4]`` XYXY pixels, best first as
    proposal files keep them) drawn as thin grey lines; only the first ``max_proposals`` when
    given. Draw them before ground truth or detections, which then stay on top."""
    _check_image("draw_proposals", image_bgr)
    canvas = image_bgr.copy()
    height, width = canvas.shape[:2]
    for box in np.asarray(boxes, np.float64).reshape(-1, 4)[:max_proposals]:
        x1, y1, x2, y2 = _pixel_box(box, height, width)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), PROPOSAL_GREY, 1, cv2.LINE_8)
    return canvas


def side_by_side(panels: Sequence[tuple[str, np.ndarray]]) -> np.ndarray:
    """The ``(title, image)`` panels next to each other, left to right, each under a title bar,
    with a gap between them; panels of different heights are aligned at the top."""
    if not panels:
        raise ValueError("side_by_side: no panels")
    for _, image in panels:
        _check_image("side_by_side", image)
    style = _Style(*panels[0][1].shape[:2])
    bar = _label_size("Ag", style)[1]
    height = bar + max(image.shape[0] for _, image in panels)
    width = sum(image.shape[1] for _, image in panels) + GAP * (len(panels) - 1)
    canvas = np.full((height, width, 3), 255, np.uint8)
    left = 0
    for title, image in panels:
        canvas[:bar, left : left + image.shape[1]] = TITLE_BACKGROUND
        canvas[bar : bar + image.shape[0], left : left + image.shape[1]] = image
        _put_text(canvas, title, (left, 0), TITLE_BACKGROUND, style)
        left += image.shape[1] + GAP
    return canvas


def enlarge(image_bgr: np.ndarray, min_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``image_bgr`` scaled up so its shorter side is ``min_size`` at least (kept as it is when
    it is already that large, or ``min_size`` is 0), and the ``[4]`` factors that move XYXY
    boxes with it, so that labels stay readable on small images."""
    height, width = image_bgr.shape[:2]
    scale = min_size / min(height, width)
    if scale <= 1:
        return image_bgr, np.ones(4)
    size = (round(width * scale), round(height * scale))
    image = cv2.resize(image_bgr, size, interpolation=cv2.INTER_LINEAR)
    factors = np.array([size[0] / width, size[1] / height] * 2)
    return image, factors


def place_labels(
    boxes: Sequence[tuple[int, int, int, int]],
    label_sizes: Sequence[tuple[int, int]],
    image_size: tuple[int, int],
) -> list[tuple[int, int]]:
    """The top-left corner of each box's label, placed in the order given (first come, first
    served), inside the image of ``(height, width)`` ``image_size``.

    ``boxes`` are integer XYXY corners (inclusive) and ``label_sizes`` ``(width, height)``.
    A label goes to the first of its candidate places (:func:`_candidates`) that overlaps no
    label placed before; when every place overlaps one, to the place that overlaps least.
    """
    taken = np.zeros((0, 4), np.int64)  # left, top, right, bottom (exclusive)
    corners = []
    for box, (label_width, label_height) in zip(boxes, label_sizes, strict=True):
        places = _candidates(box, label_width, label_height, image_size)
        rects = np.concatenate([places, places + np.array([label_width, label_height])], axis=1)
        overlap = _overlap_areas(rects, taken).sum(axis=1)
        best = int(np.argmin(overlap))  # the first of those with the least overlap
        corners.append((int(places[best, 0]), int(places[best, 1])))
        taken = np.concatenate([taken, rects[best : best + 1]])
    return corners


def _candidates(
    box: tuple[int, int, int, int], label_width: int, label_height: int, image_size: tuple[int, int]
) -> np.ndarray:
    """``[C, 2]`` top-left corners, in order of preference: above the box, inside its top,
    below it, the same aligned with its right edge, then stacked further above, further into
    the box and further below; each moved inside the image."""
    x1, y1, x2, y2 = box
    rows = [y1 - label_height, y1, y2 + 1]
    columns = [x1, x2 + 1 - label_width]
    places = [(x, y) for x in columns for y in rows]
    for shift in range(1, STACKED_SHIFTS + 1):
        for x in columns:
            places += [
                (x, y1 - (shift + 1) * label_height),
                (x, y1 + shift * label_height),
                (x, y2 + 1 + shift * label_height),
            ]
    places = np.array(places, np.int64)
    height, width = image_size
    places[:, 0] = places[:, 0].clip(0, max(width - label_width, 0))
    places[:, 1] = places[:, 1].clip(0, max(height - label_height, 0))
    return places


def _overlap_areas(rects: np.ndarray, others: np.ndarray) -> np.ndarray:
    """``[len(rects), len(others)]`` intersection areas of left/top/right/bottom rectangles."""
    low = np.maximum(rects[:, None, :2], others[None, :, :2])
    high = np.minimum(rects[:, None, 2:], others[None, :, 2:])
    return (high - low).clip(0).prod(axis=2)


def _draw_labelled_boxes(
    image_bgr: np.ndarray, boxes: np.ndarray, classes: np.ndarray, texts: Sequence[str]
) -> np.ndarray:
    """A copy with ``boxes`` drawn in their class colours (the first on top) and then their
    ``texts`` as labels, placed by :func:`place_labels` in the order given."""
    canvas = image_bgr.copy()
    height, width = canvas.shape[:2]
    style = _Style(height, width)
    corners = [_pixel_box(box, height, width) for box in boxes]
    colors = [class_color(int(c)) for c in classes]
    for (x1, y1, x2, y2), color in reversed(list(zip(corners, colors, strict=True))):
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, style.line, cv2.LINE_8)
    sizes = [_label_size(text, style) for text in texts]
    places = place_labels(corners, sizes, (height, width))
    for text, place, color in reversed(list(zip(texts, places, colors, strict=True))):
        _put_text(canvas, text, place, color, style)
    return canvas


class _Style:
    """Line width, font scale and padding for an image of this size: ~9 px text at 200 px."""

    def __init__(self, height: int, width: int) -> None:
        short = min(height, width)
        self.font_scale = min(max(short / 800, 0.4), 1.5)
        self.text_thickness = 1 if self.font_scale < 1 else 2
        self.line = max(1, round(short / 300))
        self.pad = max(1, round(self.font_scale * 3))


def _check_image(owner: str, image_bgr: np.ndarray) -> None:
    if image_bgr.dtype != np.uint8 or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(
            f"{owner}: expected a BGR uint8 [H, W, 3] image, got {image_bgr.dtype} "
            f"{list(image_bgr.shape)}"
        )


def _check_classes(owner: str, classes: np.ndarray, class_names: Sequence[str]) -> None:
    unknown = sorted({int(c) for c in classes if not 0 <= c < len(class_names)})
    if unknown:
        raise ValueError(
            f"{owner}: class index {unknown[0]} has no name; {len(class_names)} class names "
            "were given"
        )


def _pixel_box(box: np.ndarray, height: int, width: int) -> tuple[int, int, int, int]:
    """Integer corners inside the image, so a box along the border stays visible."""
    x1, y1, x2, y2 = (round(float(v)) for v in box)
    return (
        min(max(x1, 0), width - 1),
        min(max(y1, 0), height - 1),
        min(max(x2, 0), width - 1),
        min(max(y2, 0), height - 1),
    )


def _label_size(text: str, style: _Style) -> tuple[int, int]:
    """``(width, height)`` of ``text``'s label, its padding included."""
    (text_width, text_height), baseline = cv2.getTextSize(
        text, FONT, style.font_scale, style.text_thickness
    )
    return text_width + 2 * style.pad, text_height + baseline + 2 * style.pad


def _put_text(
    canvas: np.ndarray,
    text: str,
    corner: tuple[int, int],
    color: tuple[int, int, int],
    style: _Style,
) -> None:
    """``text`` on a filled ``color`` label whose top-left corner is ``corner``, in black or
    white, whichever reads better on that colour."""
    left, top = corner
    label_width, label_height = _label_size(text, style)
    cv2.rectangle(
        canvas, (left, top), (left + label_width - 1, top + label_height - 1), color, cv2.FILLED
    )
    blue, green, red = color
    ink = (0, 0, 0) if 0.299 * red + 0.587 * green + 0.114 * blue > 150 else (255, 255, 255)
    (_, text_height), _ = cv2.getTextSize(text, FONT, style.font_scale, style.text_thickness)
    origin = (left + style.pad, top + style.pad + text_height)
    cv2.putText(
        canvas, text, origin, FONT, style.font_scale, ink, style.text_thickness, cv2.LINE_AA
    )


def add_min_size_argument(parser: argparse.ArgumentParser) -> None:
    """The drawing tools' ``--min-size``: the shorter side below which :func:`enlarge` scales
    a picture up before drawing."""
    parser.add_argument(
        "--min-size",
        type=int,
        default=480,
        help="enlarge pictures whose shorter side is smaller, so labels stay readable (0: never)",
    )
