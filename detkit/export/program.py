"""Exporting a detector's inference with ``torch.export`` and writing it as an archive that
:func:`detkit.export.load` accepts."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torchvision  # noqa: F401  registers torchvision::nms, whose fake kernel is replaced
from torch import Tensor, nn
from torch.export import Dim, ExportedProgram

from .adapter import SingleImageDetector, random_boxes
from .archive import check_archive

MAX_PROPOSALS = 1_000_000


def export_detector(
    model: nn.Module, height: int, width: int, num_proposals: int
) -> tuple[ExportedProgram, tuple[Tensor, Tensor]]:
    """The exported program of ``model``'s inference (:class:`SingleImageDetector`) on a
    uint8 image ``[3, height, width]`` and any number of proposals, and the example inputs
    it was traced with (a random image and ``num_proposals`` random boxes)."""
    detector = SingleImageDetector(model.eval()).eval()
    generator = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator)
    image = image.to(model.device)
    boxes = random_boxes(num_proposals, height, width).to(model.device)
    proposals = Dim("proposals", min=1, max=MAX_PROPOSALS)
    with torch.no_grad(), _nms_may_keep_any_number():
        program = torch.export.export(
            detector, (image, boxes), dynamic_shapes=(None, {0: proposals}), strict=False
        )
    return program, (image, boxes)


def mismatch(
    program: Callable[[Tensor, Tensor], tuple[Tensor, ...]],
    model: nn.Module,
    image: Tensor,
    boxes: Tensor,
) -> str:
    """How the detections of ``program`` (an exported program's ``module()``) differ from the
    eager ``model``'s on ``image`` and ``boxes`` ("" if they do not)."""
    with torch.no_grad():
        expected = SingleImageDetector(model.eval()).eval()(image, boxes)
        got = program(image, boxes)
    for name, a, b in zip(("boxes", "scores", "classes"), got, expected, strict=True):
        if a.shape != b.shape or not torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-4):
            return f"the {name} differ ({tuple(a.shape)} against {tuple(b.shape)})"
    return ""


def save(program: ExportedProgram, path: str | Path) -> None:
    """Writes ``program`` to ``path`` as a ``.pt2`` archive without pickles: torch pickles
    the example inputs, so they are left out; the bytes pass the loader's own check
    (:func:`detkit.export.archive.check_archive`) before they are written."""
    example_inputs = program.example_inputs
    buffer = io.BytesIO()
    program.example_inputs = None
    try:
        torch.export.save(program, buffer)
    finally:
        program.example_inputs = example_inputs
    check_archive(buffer.getvalue(), str(path))
    Path(path).write_bytes(buffer.getvalue())


def _nms_fake(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """``torchvision::nms`` on fake tensors: any number of kept indices, none included."""
    kept = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty(kept, dtype=torch.long)


@contextlib.contextmanager
def _nms_may_keep_any_number() -> Iterator[None]:
    """While tracing, replaces torchvision's fake NMS, which says at least 2 boxes are kept
    (the ``min=2`` default of ``create_unbacked_symint``): an exported program asserts that
    at run time and fails on every image with fewer detections (a grey image)."""
    library = torch.library.Library("torchvision", "FRAGMENT")
    try:
        torch.library.register_fake("torchvision::nms", _nms_fake, lib=library)
        yield
    finally:
        library._destroy()  # torchvision's own fake kernel is the current one again
