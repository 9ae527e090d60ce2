"""The traceable form of a detector: one image and its proposals as plain tensors in, the
detections' boxes, scores and classes out; and the random proposals the measurements and the
export trace it with."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..modeling import PyramidInference
from ..structures import Boxes, Instances
from ..utils.errors import UserError


def random_boxes(count: int, height: int, width: int, seed: int = 0) -> Tensor:
    """``count`` boxes (``[count, 4]``, XYXY) at random inside a ``height x width`` image, at
    least 8 px a side: the proposals of the FLOP and speed measurements and of the export."""
    generator = torch.Generator().manual_seed(seed)
    x1 = torch.rand(count, generator=generator) * (width - 8)
    y1 = torch.rand(count, generator=generator) * (height - 8)
    w = 8 + torch.rand(count, generator=generator) * (width - 8 - x1)
    h = 8 + torch.rand(count, generator=generator) * (height - 8 - y1)
    return torch.stack([x1, y1, x1 + w, y1 + h], dim=1)


class NotTraceableError(UserError, ValueError):
    """A model whose inference is not one traceable forward over an image and its proposals."""


def check_traceable(model: nn.Module) -> None:
    """Raises :class:`NotTraceableError` for a model :class:`SingleImageDetector` cannot trace:
    the test image pyramid (:class:`~detkit.modeling.PyramidInference`), which resizes each
    image to its scales with OpenCV, outside any graph torch records."""
    if isinstance(model, PyramidInference):
        raise NotTraceableError(
            f"the test image pyramid (TEST.MIN_SIZES={model.min_sizes}) cannot be exported or "
            "traced: it resizes each image to its scales with OpenCV, outside the graph; export "
            "the single-scale model (TEST.MIN_SIZES=[]), whose detections differ"
        )


class SingleImageDetector(nn.Module):
    """``model`` on one image and its proposals as plain tensors, returning the detections'
    boxes, scores and classes: the form fvcore's tracing counters take
    (``FlopCountAnalysis(SingleImageDetector(model), (image, boxes))``, or
    :func:`detkit.utils.analysis.flop_count_analysis` with detkit's op handles) and what
    ``torch.export`` traces (:func:`detkit.export.export_detector`). A model that cannot be
    traced is refused (:func:`check_traceable`)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        check_traceable(model)
        self.model = model

    def forward(self, image: Tensor, proposal_boxes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        proposals = Instances(
            tuple(image.shape[1:]),
            proposal_boxes=Boxes(proposal_boxes),
            objectness_logits=proposal_boxes.new_zeros(proposal_boxes.shape[0]),
        )
        result = self.model([{"image": image, "proposals": proposals}])[0]["instances"]
        return result.pred_boxes.tensor, result.scores, result.pred_classes
