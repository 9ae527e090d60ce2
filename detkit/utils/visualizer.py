"""Drawing detections on an image with OpenCV: a box per detection and a "name score" label."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import cv2
import numpy as np

from ..structures import Instances

FONT = cv2.FONT_HERSHEY_SIMPLEX
GOLDEN_RATIO_CONJUGATE = 0.6180339887


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
) -> np.ndarray:
    """A copy of ``image_bgr`` (uint8 ``[H, W, 3]``) with every detection whose score is above
    ``confidence_threshold`` drawn: its box in the class colour and a "name 0.97" label on a
    filled background above it (inside the image when the box touches the top edge).

    ``instances`` holds ``pred_boxes`` (XYXY pixels of this image), ``scores`` and
    ``pred_classes`` (indices into ``class_names``). Lines and text scale with the image size so
    that small images stay readable. The best detections are drawn last, on top.
    """
    if image_bgr.dtype != np.uint8 or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(
            f"draw_detections: expected a BGR uint8 [H, W, 3] image, got {image_bgr.dtype} "
            f"{list(image_bgr.shape)}"
        )
    height, width = image_bgr.shape[:2]
    if tuple(instances.image_size) != (height, width):
        raise ValueError(
            f"draw_detections: the detections belong to an image of (height, width) "
            f"{instances.image_size}, not to this {(height, width)} image"
        )
    boxes = instances.pred_boxes.tensor.detach().cpu().numpy()
    scores = instances.scores.detach().cpu().numpy()
    classes = instances.pred_classes.detach().cpu().numpy()
    unknown = sorted({int(c) for c in classes if not 0 <= c < len(class_names)})
    if unknown:
        raise ValueError(
            f"draw_detections: class index {unknown[0]} has no name; "
            f"{len(class_names)} class names were given"
        )
    canvas = image_bgr.copy()
    style = _Style(height, width)
    shown = np.nonzero(scores > confidence_threshold)[0]
    for i in shown[np.argsort(scores[shown], kind="stable")]:
        color = class_color(int(classes[i]))
        x1, y1, x2, y2 = _pixel_box(boxes[i], height, width)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, style.line, cv2.LINE_8)
        _draw_label(canvas, f"{class_names[classes[i]]} {scores[i]:.2f}", x1, y1, color, style)
    return canvas


class _Style:
    """Line width, font scale and padding for an image of this size: ~9 px text at 200 px."""

    def __init__(self, height: int, width: int) -> None:
        short = min(height, width)
        self.font_scale = min(max(short / 800, 0.4), 1.5)
        self.text_thickness = 1 if self.font_scale < 1 else 2
        self.line = max(1, round(short / 300))
        self.pad = max(1, round(self.font_scale * 3))


def _pixel_box(box: np.ndarray, height: int, width: int) -> tuple[int, int, int, int]:
    """Integer corners inside the image, so a box along the border stays visible."""
    x1, y1, x2, y2 = (round(float(v)) for v in box)
    return (
        min(max(x1, 0), width - 1),
        min(max(y1, 0), height - 1),
        min(max(x2, 0), width - 1),
        min(max(y2, 0), height - 1),
    )


def _draw_label(
    canvas: np.ndarray, text: str, x1: int, y1: int, color: tuple[int, int, int], style: _Style
) -> None:
    """``text`` on a ``color`` background just above ``(x1, y1)``, moved inside the image."""
    (text_width, text_height), baseline = cv2.getTextSize(
        text, FONT, style.font_scale, style.text_thickness
    )
    label_width = text_width + 2 * style.pad
    label_height = text_height + baseline + 2 * style.pad
    height, width = canvas.shape[:2]
    top = y1 - label_height if y1 >= label_height else y1
    top = max(min(top, height - label_height), 0)
    left = max(min(x1, width - label_width), 0)
    cv2.rectangle(
        canvas, (left, top), (left + label_width - 1, top + label_height - 1), color, cv2.FILLED
    )
    blue, green, red = color
    ink = (0, 0, 0) if 0.299 * red + 0.587 * green + 0.114 * blue > 150 else (255, 255, 255)
    origin = (left + style.pad, top + style.pad + text_height)
    cv2.putText(
        canvas, text, origin, FONT, style.font_scale, ink, style.text_thickness, cv2.LINE_AA
    )
