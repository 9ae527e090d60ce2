"""The torchvision-built peer of tools/benchmark.py and the check that it does detkit's work.

* :mod:`.model`: :func:`build_peer`, the same Fast R-CNN assembled from torchvision's parts,
  holding copies of a detkit model's weights.
* :mod:`.comparison`: the benchmark's random inputs for both models, the calibration of the
  random head, and :func:`detection_mismatch`, which says whether two detection sets differ.

A package beside the tools (not a tool itself): ``tools/benchmark.py`` imports it, as Python
puts a script's folder first on ``sys.path``.
"""

from .comparison import (
    Sample,
    calibrate_head,
    detection_mismatch,
    detkit_inputs,
    distinct_proposals,
    make_sample,
    peer_inputs,
)
from .model import (
    AlignedMultiScaleRoIAlign,
    SingleMapPooler,
    TorchvisionFastRCNN,
    build_peer,
    copy_head_weights,
    peer_pooler,
)

__all__ = [
    "AlignedMultiScaleRoIAlign",
    "Sample",
    "SingleMapPooler",
    "TorchvisionFastRCNN",
    "build_peer",
    "calibrate_head",
    "copy_head_weights",
    "detection_mismatch",
    "detkit_inputs",
    "distinct_proposals",
    "make_sample",
    "peer_inputs",
    "peer_pooler",
]
