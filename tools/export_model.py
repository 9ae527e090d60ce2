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
difference ends with exit status 1 and nothing written.
"""

from __future__ import annotations

import argparse
import os
import sys

from detkit.checkpoint import DetectionCheckpointer
from detkit.config import ConfigError, load_config
from detkit.engine import parse_overrides
from detkit.export import (
    ExportedProgramError,
    export_detector,
    load,
    mismatch,
    random_boxes,
    save,
)
from detkit.modeling import build_model
from detkit.utils.arguments import output_file, positive_int
from detkit.utils.errors import UserError
from detkit.utils.tool_help import tool_description


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=tool_description(__doc__))
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument(
        "--output", required=True, type=output_file, metavar="FILE", help="the .pt2 file to write"
    )
    parser.add_argument("--image-size", nargs=2, type=positive_int, metavar=("H", "W"))
    parser.add_argument("--num-proposals", type=positive_int, default=2000)
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
