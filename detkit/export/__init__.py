"""Exported detectors: the traceable adapter (one image and its proposals as tensors in,
boxes, scores and classes out), its export with ``torch.export``, and a loader for exported
programs that refuses anything in the file that torch would unpickle, run or evaluate.

    program, _ = export_detector(model, height, width, num_proposals=2000)
    save(program, "model.pt2")
    boxes, scores, classes = load("model.pt2").module()(image, proposal_boxes)

``tools/export_model.py`` does the first two from a config and checks the result."""

from .adapter import NotTraceableError, SingleImageDetector, check_traceable, random_boxes
from .archive import ExportedProgramError, check_archive
from .loader import load
from .program import export_detector, mismatch, save

__all__ = [
    "ExportedProgramError",
    "NotTraceableError",
    "SingleImageDetector",
    "check_archive",
    "check_traceable",
    "export_detector",
    "load",
    "mismatch",
    "random_boxes",
    "save",
]
