"""Exports a detector's inference, one image and its proposals in, detections out, with
torch.export, and checks that the exported program gives the eager model's detections.

    python tools/export_model.py --config-file CONFIG.yaml --output model.pt2 \\
        [--image-size H W] [--num-proposals 2000] MODEL.WEIGHTS=output/model_final.pth

The program takes a uint8 image ``[3, H, W]`` (channels in ``MODEL.INPUT_FORMAT`` order, already
at the model's input size: ``H x W`` is fixed at export, default INPUT.MIN_SIZE_TEST by
INPUT.MAX_SIZE_TEST) and float proposals ``[N, 4]`` (XYXY in its pixels; any N) and returns
``(boxes [D, 4], scores [D], classes [D])``. detkit's RoI ops are in it as custom ops (their fake
kernels let torch.export trace them): load it where detkit is installed, after
``import detkit.layers``, with ``torch.export.load(path).module()``. The exported program is run
on the example inputs and on a second proposal count against the eager model; any difference
ends with exit status 1 and nothing written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.export import Dim

from detkit.checkpoint import DetectionCheckpointer
from detkit.config import ConfigError, load_config
from detkit.engine import parse_overrides
from detkit.modeling import build_model
from detkit.utils.analysis import SingleImageDetector, random_boxes
from detkit.utils.errors import UserError


def export_detector(model: torch.nn.Module, height: int, width: int, num_proposals: int):
    """The exported program of ``model``'s inference at ``height x width`` with a dynamic
    number of proposals, and the example inputs it was traced with."""
    detector = SingleImageDetector(model.eval()).eval()
    generator = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator)
    boxes = random_boxes(num_proposals, height, width).to(model.device)
    image = image.to(model.device)
    proposals = Dim("proposals", min=1, max=1_000_000)
    with torch.no_grad():
        program = torch.export.export(
            detector, (image, boxes), dynamic_shapes=(None, {0: proposals}), strict=False
        )
    return program, (image, boxes)


def mismatch(program, model: torch.nn.Module, image: torch.Tensor, boxes: torch.Tensor) -> str:
    """How the exported program's detections differ from the eager model's ("" if not)."""
    detector = SingleImageDetector(model.eval()).eval()
    with torch.no_grad():
        expected = detector(image, boxes)
        got = program.module()(image, boxes)
    for name, a, b in zip(("boxes", "scores", "classes"), got, expected, strict=True):
        if a.shape != b.shape or not torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-4):
            return f"the {name} differ ({tuple(a.shape)} against {tuple(b.shape)})"
    return ""


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--output", required=True, metavar="FILE", help="the .pt2 file to write")
    parser.add_argument("--image-size", nargs=2, type=int, metavar=("H", "W"))
    parser.add_argument("--num-proposals", type=int, default=2000)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides (KEY VALUE)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = argument_parser().parse_args(argv)
    try:
        cfg = load_config(args.config_file, parse_overrides(args.opts))
        if not cfg.MODEL.WEIGHTS:
            raise ConfigError("MODEL.WEIGHTS is empty: give the trained checkpoint to export")
        model = build_model(cfg)
        DetectionCheckpointer(model, allow_partial=False).load(cfg.MODEL.WEIGHTS)
    except (ConfigError, UserError, FileNotFoundError) as error:
        print(f"export_model: {error}", file=sys.stderr)
        return 2
    height, width = args.image_size or (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    program, (image, boxes) = export_detector(model, height, width, args.num_proposals)
    other = random_boxes(max(args.num_proposals // 2, 1), height, width, seed=1).to(boxes)
    for proposals in (boxes, other):
        problem = mismatch(program, model, image, proposals)
        if problem:
            print(f"export_model: the exported program is wrong: {problem}", file=sys.stderr)
            return 1
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(output))
    print(f"wrote {output}: {height}x{width} images, any number of proposals")
    return 0


if __name__ == "__main__":
    sys.exit(main())
