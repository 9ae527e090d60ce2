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

from torch import Tensor, nn

from ..export import SingleImageDetector

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
