"""Image-level transforms: the Fast R-CNN recipe's shortest-edge resize and horizontal flip, and
the registry through which a project adds its own.

A transform is called as ``transform(image, rng) -> (image, box_map)``: it returns the new
image (``[H, W, 3]`` uint8) and a function that maps ``[n, 4]`` XYXY boxes the same way, so
ground truth and proposals always move with the image. ``rng`` (a ``numpy.random.Generator``)
is the mapper's, reseeded by the training loader for every batch, so augmentation draws are
reproducible and do not depend on the number of workers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

from ..utils.registry import Registry

BoxMap = Callable[[np.ndarray], np.ndarray]

TRANSFORM_REGISTRY = Registry("TRANSFORM")
TRANSFORM_REGISTRY.__doc__ = """Image transforms, listed by ``INPUT.TRANSFORMS_TRAIN`` and
``INPUT.TRANSFORMS_TEST`` and applied in that order: a class with ``from_config(cfg, is_train)``
or a builder ``f(cfg, is_train)``, whose result is called as ``transform(image, rng) ->
(image, box_map)``."""


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


def resize_problems(
    short_edges: Sequence[int],
    max_size: int,
    names: tuple[str, str] = ("short_edges", "max_size"),
) -> list[str]:
    """Why :class:`ResizeShortestEdge` cannot resize to ``short_edges`` capped at
    ``max_size``, one message per problem naming each as ``names`` gives (the arguments;
    ``check_config`` gives the config keys); empty when it can."""
    sizes = [int(size) for size in short_edges]
    problems = []
    if not sizes or min(sizes) <= 0:
        problems.append(f"{names[0]} must list positive shortest-edge sizes, got {sizes}")
    if max_size <= 0:
        problems.append(f"{names[1]} must be positive, got {max_size}")
    return problems


@TRANSFORM_REGISTRY.register()
class ResizeShortestEdge:
    """Resizes the shorter edge to one of ``short_edges`` (drawn at random; several sizes are
    multi-scale training) with the longer edge capped at ``max_size``."""

    def __init__(self, short_edges: Sequence[int], max_size: int) -> None:
        problems = resize_problems(short_edges, max_size)
        if problems:
            raise ValueError("ResizeShortestEdge: " + "; ".join(problems))
        self.short_edges = [int(size) for size in short_edges]
        self.max_size = max_size

    @classmethod
    def from_config(cls, cfg, is_train: bool) -> ResizeShortestEdge:
        if is_train:
            return cls(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN)
        return cls([cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, BoxMap]:
        return resize_shortest_edge(image, choose_short_edge(self.short_edges, rng), self.max_size)


def _unchanged(boxes: np.ndarray) -> np.ndarray:
    return boxes


@TRANSFORM_REGISTRY.register()
class RandomFlip:
    """Mirrors the image left-right with ``probability`` (the paper's flips: 0.5)."""

    def __init__(self, probability: float = 0.5) -> None:
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"RandomFlip: probability must be in [0, 1], got {probability}")
        self.probability = probability

    @classmethod
    def from_config(cls, cfg, is_train: bool) -> RandomFlip:
        return cls(0.5 if is_train else 0.0)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, BoxMap]:
        if self.probability and rng.random() < self.probability:
            return horizontal_flip(image)
        return image, _unchanged


def build_transforms(cfg, is_train: bool) -> list:
    """The transforms of ``INPUT.TRANSFORMS_TRAIN`` (or ``_TEST``), in order."""
    names = cfg.INPUT.TRANSFORMS_TRAIN if is_train else cfg.INPUT.TRANSFORMS_TEST
    return [TRANSFORM_REGISTRY.build(name, cfg, is_train) for name in names]
