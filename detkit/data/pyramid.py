"""The test image pyramid (Fast R-CNN §2.4): one image resized to several scales, its
proposals kept in the original image's pixels; the model pools each RoI from one scale."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..structures import Boxes, Instances
from .mapper import MAX_IMAGE_PIXELS, check_input_format, model_image, read_record_image
from .proposal_store import record_proposals
from .transforms import resize_shortest_edge


class PyramidMapper:
    """Test-time mapper for several scales: ``{"pyramid": [uint8 [3, H_s, W_s] per scale],
    "pyramid_factors": [(x factor, y factor) per scale], "proposals": Instances at the original
    size (boxes in its pixels), "height", "width", "image_id", "file_name"}``; ``"image"`` is
    the first scale's image. ``min_sizes`` are shortest-edge sizes, each capped by ``max_size``
    on the longest edge, as :class:`~detkit.data.transforms.ResizeShortestEdge`. Images over
    ``max_image_pixels`` are refused (:func:`~detkit.data.mapper.read_image`)."""

    def __init__(
        self,
        min_sizes: Sequence[int],
        max_size: int,
        input_format: str = "BGR",
        max_image_pixels: int = MAX_IMAGE_PIXELS,
    ) -> None:
        if not min_sizes or min(min_sizes) <= 0 or max_size <= 0:
            raise ValueError(
                f"PyramidMapper: needs positive sizes, got {list(min_sizes)} and {max_size}"
            )
        check_input_format("PyramidMapper", input_format)
        self.min_sizes = [int(size) for size in min_sizes]
        self.max_size = max_size
        self.input_format = input_format
        self.max_image_pixels = max_image_pixels

    @classmethod
    def from_config(cls, cfg) -> PyramidMapper:
        return cls(
            cfg.TEST.MIN_SIZES,
            cfg.INPUT.MAX_SIZE_TEST,
            cfg.MODEL.INPUT_FORMAT,
            cfg.INPUT.MAX_IMAGE_PIXELS,
        )

    def __call__(self, record: dict) -> dict:
        original = read_record_image(record, self.max_image_pixels)
        height, width = original.shape[:2]
        pyramid, factors = [], []
        for size in self.min_sizes:
            image, _ = resize_shortest_edge(original, size, self.max_size)
            pyramid.append(model_image(image, self.input_format))
            factors.append((image.shape[1] / width, image.shape[0] / height))
        output = {
            "image": pyramid[0],
            "pyramid": pyramid,
            "pyramid_factors": factors,
            "height": height,
            "width": width,
            "image_id": record["image_id"],
            "file_name": record["file_name"],
        }
        proposals = record_proposals(record)
        if proposals is not None:
            output["proposals"] = Instances(
                (height, width),
                proposal_boxes=Boxes(torch.from_numpy(proposals[0].copy())),
                objectness_logits=torch.from_numpy(proposals[1].copy()),
            )
        return output
