"""The traceable form of a detector: one image and its proposals as plain tensors in, the
detections' boxes, scores and classes out; and the random proposals the measurements and the
export trace it with."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..structures import Boxes, Instances


def random_boxes(count: int, height: int, width: int, seed: int = 0) -> Tensor:
    """``count`` boxes (``[count, 4]``, XYXY) at random inside a ``height x width`` image, at
    least 8 px a side: the proposals of the FLOP and speed measurements and of the export."""
    generator = torch.Generator().manual_seed(seed)
    x1 = torch.rand(count, generator=generator) * (width - 8)
    y1 = torch.rand(count, generator=generator) * (height - 8)
    w = 8 + torch.rand(count, generator=generator) * (width - 8 - x1)
    h = 8 + torch.rand(count, generator=generator) * (height - 8 - y1)
    return torch.stack([x1, y1, x1 + w, y1 + h], dim=1)


class SingleImageDetector(nn.Module):
    """``model`` on one image and its proposals as plain tensors, returning the detections'
    boxes, scores and classes: the form fvcore's tracing counters take
    (``FlopCountAnalysis(SingleImageDetector(model), (image, boxes))``, or
    :func:`detkit.utils.analysis.flop_count_analysis` with detkit's op handles) and what
    ``torch.export`` traces (:func:`detkit.export.export_detector`)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor, proposal_boxes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        proposals = Instances(
            tuple(image.shape[1:]),
            proposal_boxes=Boxes(proposal_boxes),
            objectness_logits=proposal_boxes.new_zeros(proposal_boxes.shape[0]),
        )
        result = self.model([{"image": image, "proposals": proposals}])[0]["instances"]
        return result.pred_boxes.tensor, result.scores, result.pred_classes
