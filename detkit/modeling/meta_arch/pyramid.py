"""The test image pyramid (Fast R-CNN §2.4) as a wrapper of the detector, chosen when the model
is built for inference (:func:`detkit.modeling.build_inference_model`), as detectron2's
``GeneralizedRCNNWithTTA`` wraps its model for test-time augmentation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ...data.transforms import resize_shortest_edge
from ...structures import Instances


class PyramidInference(nn.Module):
    """``model`` run over an image pyramid: each image resized so that its shortest edge is each
    of ``min_sizes`` (the longest capped at ``max_size``, as
    :class:`~detkit.data.transforms.ResizeShortestEdge` resizes), the backbone run at every
    scale, each RoI pooled from the scale where its area is closest to 224² and decoded in the
    image's own pixels (``model.roi_heads.inference_pyramid``).

    It takes the inputs ``model`` takes at inference, ``"image"`` (``[3, H, W]`` in
    ``MODEL.INPUT_FORMAT`` order) and ``"proposals"`` (in its pixels), with the image at its own
    size: the pyramid is made from it, so the test-time mapper leaves it as read
    (:func:`detkit.data.loaders.evaluation_mapper`). It returns one ``{"instances":
    Instances}`` per image, in its pixels. It holds no weights of its own: ``model`` is the
    detector that training and checkpoints know, unchanged.
    """

    def __init__(self, model: nn.Module, min_sizes: Sequence[int], max_size: int) -> None:
        super().__init__()
        sizes = [int(size) for size in min_sizes]
        if not sizes or min(sizes) <= 0 or max_size <= 0:
            raise ValueError(f"PyramidInference: needs positive sizes, got {sizes} and {max_size}")
        self.model = model
        self.min_sizes = sizes
        self.max_size = max_size
        self.training = model.training  # wrapping changes no mode

    @classmethod
    def from_config(cls, cfg, model: nn.Module) -> PyramidInference:
        """``model`` over the pyramid of ``TEST.MIN_SIZES``, capped at ``INPUT.MAX_SIZE_TEST``."""
        return cls(model, cfg.TEST.MIN_SIZES, cfg.INPUT.MAX_SIZE_TEST)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def forward(self, batched_inputs: list[dict]) -> list[dict]:
        if self.training:
            raise ValueError(
                "PyramidInference runs inference only; train the model it wraps (.model)"
            )
        return [{"instances": self.detect(x)} for x in batched_inputs]

    def detect(self, inputs: dict) -> Instances:
        """The detections of one image (an input dict), in its pixels."""
        image = inputs["image"]
        height, width = image.shape[1:]
        given = (inputs.get("height", height), inputs.get("width", width))
        if given != (height, width):
            raise ValueError(
                "PyramidInference: the pyramid is made from the image at its own size, "
                f"{given[0]}x{given[1]}, but it comes resized to {height}x{width}; map it "
                "without the test-time resize (detkit.data.loaders.evaluation_mapper(cfg))"
            )
        pixels = np.ascontiguousarray(image.permute(1, 2, 0).cpu().numpy())
        features, factors = [], []
        for size in self.min_sizes:
            scaled, _ = resize_shortest_edge(pixels, size, self.max_size)
            batch = self.model.preprocess_images(
                [{"image": torch.from_numpy(np.ascontiguousarray(scaled.transpose(2, 0, 1)))}]
            )
            features.append(self.model.backbone(batch))
            factors.append((scaled.shape[1] / width, scaled.shape[0] / height))
        proposals = inputs["proposals"].to(self.device)
        return self.model.roi_heads.inference_pyramid(features, proposals, factors)
