"""FLOP and parameter counts of a detector (fvcore's counters), with handles for detkit's RoI
ops so they are counted rather than skipped.

fvcore counts a fused multiply-add as one flop. Conventions for detkit's ops:

* ``detkit::roi_align_forward``: 4 multiply-adds per bilinear sample (one per neighbouring
  cell), ``sampling_ratio²`` samples per output bin; an adaptive grid (``sampling_ratio <= 0``)
  depends on each RoI's size, which a trace does not see, and is counted as 2 x 2 samples.
* ``detkit::roi_pool_forward``: max pooling does no multiply-add: 0, as fvcore counts
  ``max_pool2d``.
"""

from __future__ import annotations

import warnings
from collections import Counter
from typing import Any

import torch
from torch import Tensor, nn

from ..structures import Boxes, Instances

ADAPTIVE_SAMPLES_PER_AXIS = 2


def _shape(value: Any) -> list[int]:
    return value.type().sizes()


def roi_align_flops(inputs: list[Any], outputs: list[Any]) -> Counter:
    """fvcore handle: 4 x samples per bin x every output element."""
    sampling_ratio = inputs[5].toIValue()
    per_axis = sampling_ratio if sampling_ratio > 0 else ADAPTIVE_SAMPLES_PER_AXIS
    elements = 1
    for size in _shape(outputs[0]):
        elements *= size
    return Counter({"roi_align": 4 * per_axis * per_axis * elements})


def roi_pool_flops(inputs: list[Any], outputs: list[Any]) -> Counter:
    """fvcore handle: RoI max pooling has no multiply-adds."""
    return Counter({"roi_pool": 0})


def random_boxes(count: int, height: int, width: int, seed: int = 0) -> Tensor:
    """``count`` boxes (``[count, 4]``, XYXY) at random inside a ``height x width`` image, at
    least 8 px a side: the proposals of the FLOP and speed measurements."""
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
    :func:`flop_count_analysis` with detkit's op handles) and what ``torch.export`` traces
    (``tools/export_model.py``)."""

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


def flop_count_analysis(model: nn.Module, image: Tensor, proposal_boxes: Tensor):
    """fvcore's ``FlopCountAnalysis`` of ``model`` (in eval mode) on one image ``[3, H, W]``
    and its proposals ``[N, 4]``, with detkit's op handles; elementwise ops stay uncounted
    and unreported, as fvcore does for its own."""
    with warnings.catch_warnings():  # importing fvcore.nn scripts functions, deprecated
        warnings.simplefilter("ignore", FutureWarning)
        from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(SingleImageDetector(model.eval()), (image, proposal_boxes))
    analysis.set_op_handle(
        "detkit::roi_align_forward", roi_align_flops, "detkit::roi_pool_forward", roi_pool_flops
    )
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    return analysis
