"""DatasetMapper: one dataset dict → the model's input dict (image, proposals, instances)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import cv2
import numpy as np
import torch

from ..structures import Boxes, Instances
from .transforms import build_transforms


class DatasetMapper:
    """Reads the image (OpenCV, BGR), applies the ``transforms`` in order (by default the
    shortest-edge resize, and in training a random horizontal flip) and moves ground-truth
    boxes and proposals with it. Boxes left without area are dropped.

    ``transforms`` are called as ``transform(image, rng) -> (image, box_map)``
    (:mod:`detkit.data.transforms`); ``rng`` is this mapper's ``numpy`` generator, reseeded by
    the training loader for every batch.

    Output: ``{"image": uint8 [3, H, W] in MODEL.INPUT_FORMAT order, "proposals":
    Instances(proposal_boxes, objectness_logits), "instances": Instances(gt_boxes, gt_classes)
    (training), "height", "width", "image_id", "file_name"}``.
    """

    def __init__(
        self,
        is_train: bool,
        transforms: Sequence[Callable],
        input_format: str = "BGR",
        seed: int | None = None,
    ) -> None:
        check_input_format("DatasetMapper", input_format)
        self.is_train = is_train
        self.transforms = list(transforms)
        self.input_format = input_format
        self.rng = np.random.default_rng(seed)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> DatasetMapper:
        """The transforms of ``INPUT.TRANSFORMS_TRAIN`` or ``INPUT.TRANSFORMS_TEST``."""
        return cls(is_train, build_transforms(cfg, is_train), input_format=cfg.MODEL.INPUT_FORMAT)

    def __call__(self, record: dict) -> dict:
        image = read_record_image(record)
        maps = []
        for transform in self.transforms:
            image, box_map = transform(image, self.rng)
            maps.append(box_map)
        size = image.shape[:2]
        output = {
            "image": model_image(image, self.input_format),
            "height": record["height"],
            "width": record["width"],
            "image_id": record["image_id"],
            "file_name": record["file_name"],
        }
        if "proposal_boxes" in record:
            boxes, keep = _apply(maps, np.asarray(record["proposal_boxes"], np.float32), size)
            logits = np.asarray(record["proposal_objectness_logits"], np.float32)[keep]
            output["proposals"] = Instances(
                size,
                proposal_boxes=Boxes(torch.from_numpy(boxes)),
                objectness_logits=torch.from_numpy(logits),
            )
        if self.is_train:
            annotations = [a for a in record["annotations"] if not a.get("iscrowd", 0)]
            boxes = np.array([a["bbox"] for a in annotations], np.float32).reshape(-1, 4)
            classes = np.array([a["category_id"] for a in annotations], np.int64)
            boxes, keep = _apply(maps, boxes, size)
            output["instances"] = Instances(
                size,
                gt_boxes=Boxes(torch.from_numpy(boxes)),
                gt_classes=torch.from_numpy(classes[keep]),
            )
        return output


def _apply(maps, boxes: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Boxes through every map, clipped to the image; returns those with area and their indices."""
    for box_map in maps:
        boxes = box_map(boxes)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, size[1])
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, size[0])
    keep = np.nonzero((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))[0]
    return boxes[keep], keep


def check_input_format(owner: str, input_format: str) -> None:
    """Refuses a channel order other than ``BGR`` and ``RGB``, naming ``owner``."""
    if input_format not in ("BGR", "RGB"):
        raise ValueError(f"{owner}: input_format must be BGR or RGB, got {input_format!r}")


def model_image(image_bgr: np.ndarray, input_format: str) -> torch.Tensor:
    """A BGR ``[H, W, 3]`` uint8 image as the model's ``[3, H, W]`` input in ``input_format``."""
    image = image_bgr[:, :, ::-1] if input_format == "RGB" else image_bgr
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def read_record_image(record: dict) -> np.ndarray:
    """The BGR image of a dataset dict, checked against the size the dict gives."""
    image = read_image(record["file_name"])
    if image.shape[:2] != (record["height"], record["width"]):
        raise ValueError(
            f"{record['file_name']}: image is {image.shape[1]}x{image.shape[0]} but the "
            f"dataset says {record['width']}x{record['height']}"
        )
    return image


def read_image(path: str) -> np.ndarray:
    """The image at ``path`` as BGR uint8 ``[H, W, 3]``; a clear error when it cannot be read."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        reason = "no such file" if not os.path.exists(path) else "not a readable image"
        raise FileNotFoundError(f"cannot read image {path}: {reason}")
    return image
