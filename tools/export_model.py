"""Exports a detector's inference, one image and its proposals in, detections out, with
torch.export, and checks that the written program, loaded back, gives the eager model's
detections.

    python tools/export_model.py --config-file CONFIG.yaml --output model.pt2 \\
        [--image-size H W] [--num-proposals 2000] MODEL.WEIGHTS=output/model_final.pth

The program takes a uint8 image ``[3, H, W]`` (channels in ``MODEL.INPUT_FORMAT`` order, already
at the model's input size: ``H x W`` is fixed at export, default INPUT.MIN_SIZE_TEST by
INPUT.MAX_SIZE_TEST) and float proposals ``[N, 4]`` (XYXY in its pixels; any N) and returns
``(boxes [D, 4], scores [D], classes [D])``, any number of detections, none included. Load it
with ``detkit.export.load(path).module()``, which refuses archives holding anything torch would
unpickle or run (the file this tool writes holds none). The program is written, loaded back that
way and run on the example inputs and on a second proposal count against the eager model; any
difference ends with exit status 1 and nothing written. The model is the one inference runs
(``DefaultPredictor``, ``--eval-only``); a config with a test image pyramid (``TEST.MIN_SIZES``),
which resizes outside any traceable graph, is refused in one line (exit status 2).
"""

from __future__ import annotations

import argparse
import os
import sys

from detkit.checkpoint import DetectionCheckpointer
from detkit.config import ConfigError
from detkit.engine.tool_setup import run_tool, setup_config, tool_argument_parser
from detkit.export import (
    ExportedProgramError,
    check_traceable,
    export_detector,
    load,
    mismatch,
    random_boxes,
    save,
)
from detkit.modeling import build_inference_model, build_model
from detkit.utils.arguments import output_file, positive_int


def argument_parser() -> argparse.ArgumentParser:
    parser = tool_argument_parser(__doc__, "the detector's config")
    parser.add_argument(
        "--output", required=True, type=output_file, metavar="FILE", help="the .pt2 file to write"
    )
    parser.add_argument("--image-size", nargs=2, type=positive_int, metavar=("H", "W"))
    parser.add_argument("--num-proposals", type=positive_int, default=2000)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_tool("export_model", argument_parser(), export, argv)


def export(args: argparse.Namespace) -> int:
    cfg = setup_config(args)
    if not cfg.MODEL.WEIGHTS:
        raise ConfigError("MODEL.WEIGHTS is empty: give the trained checkpoint to export")
    model = build_inference_model(cfg, build_model(cfg))
    check_traceable(model)  # a test pyramid is refused before the weights are read
    DetectionCheckpointer(model, allow_partial=False).load(cfg.MODEL.WEIGHTS)
    height, width = args.image_size or (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    program, (image, boxes) = export_detector(model, height, width, args.num_proposals)
    other = random_boxes(max(args.num_proposals // 2, 1), height, width, seed=1).to(boxes)
    output = args.output
    output.parent.mkdir(parents=True, exist_ok=True)
    written = output.with_name(f"{output.name}.partial")
    try:
        save(program, written)
        loaded = load(written).module()
        problems = (mismatch(loaded, model, image, proposals) for proposals in (boxes, other))
        problem = next(filter(None, problems), "")
        if problem:
            print(f"export_model: the exported program is wrong: {problem}", file=sys.stderr)
            return 1
        os.replace(written, output)
    except ExportedProgramError as error:  # a program detkit.export.load would refuse
        print(f"export_model: {error}", file=sys.stderr)
        return 1
    finally:
        written.unlink(missing_ok=True)
    print(f"wrote {output}: {height}x{width} images, any number of proposals")
    return 0


if __name__ == "__main__":
    sys.exit(main())
