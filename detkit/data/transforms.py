"""Image-level transforms of the Fast R-CNN recipe: shortest-edge resize and horizontal flip.

Each returns the transformed image and a function that maps ``[n, 4]`` XYXY boxes the same way,
so ground truth and proposals always move with the image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

BoxMap = Callable[[np.ndarray], np.ndarray]


def resize_scale(height: int, width: int, short_edge: int, max_size: int) -> float:
    """The factor that brings the shorter edge to ``short_edge`` without the longer one
    exceeding ``max_size`` (the paper's 600 / 1000)."""
    scale = short_edge / min(height, width)
    if max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return scale


def resize_shortest_edge(
    image: np.ndarray, short_edge: int, max_size: int
) -> tuple[np.ndarray, BoxMap]:
    height, width = image.shape[:2]
    scale = resize_scale(height, width, short_edge, max_size)
    new_height, new_width = round(height * scale), round(width * scale)
    resized = cv2.resize(image, (new_width, new_height), interpolation=cv2.INTER_LINEAR)
    factors = np.array(
        [new_width / width, new_height / height, new_width / width, new_height / height], np.float32
    )
    return resized, lambda boxes: boxes * factors


def horizontal_flip(image: np.ndarray) -> tuple[np.ndarray, BoxMap]:
    """Mirror image; a box's x1' = W - x2 and x2' = W - x1 (continuous coordinates)."""
    width = image.shape[1]

    def flip_boxes(boxes: np.ndarray) -> np.ndarray:
        flipped = boxes.copy()
        flipped[:, 0], flipped[:, 2] = width - boxes[:, 2], width - boxes[:, 0]
        return flipped

    return np.ascontiguousarray(image[:, ::-1]), flip_boxes


def choose_short_edge(sizes: Sequence[int], rng: np.random.Generator) -> int:
    """One of ``sizes`` at random: one size is single-scale, several multi-scale (paper §2.4)."""
    return int(sizes[rng.integers(len(sizes))])
